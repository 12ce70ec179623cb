"""Calibration data: a class-balanced sample of the training set, or the user's own data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeship.convert.errors import ConvertError
from edgeship.convert.loading import ModelSignature

# 500 images (50 per Fashion-MNIST class). Full-integer calibration only needs each
# activation's range; on edgeship's mlp and cnn the int8 agreement with Keras is flat from
# a few hundred images on (README "Convert to TensorFlow Lite" has the figures), while the
# calibrator's cost grows linearly. 500 covers every class evenly with room to spare and
# keeps calibration at a second or two on a laptop CPU.
DEFAULT_CALIBRATION_SAMPLES = 500
# Fixed so that two conversions of the same model calibrate on the same images.
CALIBRATION_SEED = 20240301
MAX_IMAGE_PIXELS = 50_000_000


@dataclass(frozen=True, eq=False)
class CalibrationData:
    """Samples in the model's input layout: uint8 raw pixels or float model input."""

    x: np.ndarray
    source: str
    class_names: tuple[str, ...] | None = None
    # Class indices (into class_names) when the samples came from one folder per class.
    y: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or len(self.x) == 0:
            raise ConvertError(
                "Calibration data must be a non-empty (N, H, W, C) array. "
                f"Received: shape={self.x.shape}"
            )
        if self.y is not None and len(self.y) != len(self.x):
            raise ConvertError(
                f"Calibration labels and samples differ in number. Received: {len(self.y)} "
                f"labels, {len(self.x)} samples"
            )

    @property
    def is_pixels(self) -> bool:
        """True when the samples are raw uint8 pixels (scale/offset still to apply)."""
        return self.x.dtype == np.uint8


def balanced_indices(labels: np.ndarray, n: int, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """`n` indices into `labels`, spread as evenly as possible over the classes, seeded."""
    labels = np.asarray(labels)
    n = min(int(n), len(labels))
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    picked: list[int] = []
    depth = 0
    while len(picked) < n:
        for pool in pools:
            if depth < len(pool) and len(picked) < n:
                picked.append(int(pool[depth]))
        depth += 1
    return np.sort(np.asarray(picked, dtype=np.int64))


def seeded_subset(count: int, n: int, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """Up to `n` indices out of `count`, chosen with a fixed seed, in ascending order."""
    if n >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=n, replace=False))


def _image_paths(root: Path) -> list[Path]:
    from PIL import Image

    extensions = Image.registered_extensions()
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
    )


def _load_image(path: Path, signature: ModelSignature, resize: str = "stretch") -> np.ndarray:
    """One calibration photo, prepared exactly as the runtime prepares it (EXIF orientation,
    alpha, 16-bit and CMYK modes, the resize rule): `edge_runtime.image.preprocess`."""
    from edge_runtime.errors import ImageError
    from edge_runtime.image.preprocess import load_and_preprocess

    try:
        return load_and_preprocess(
            path, signature.input_shape, invert="no", max_pixels=MAX_IMAGE_PIXELS, resize=resize
        )
    except ImageError as err:
        raise ConvertError(f"Cannot use a calibration image: {err} Fix or remove it.") from None


def _from_folder(
    root: Path,
    signature: ModelSignature,
    limit: int,
    seed: int,
    resize: str = "stretch",
    class_names: tuple[str, ...] | None = None,
) -> CalibrationData:
    paths = _image_paths(root)
    if not paths:
        raise ConvertError(
            f"The calibration folder holds no images (searched recursively). Received: path={root}"
        )
    chosen = [paths[i] for i in seeded_subset(len(paths), limit, seed)]
    x = np.stack([_load_image(p, signature, resize) for p in chosen])
    subdirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    # The model's own names (--class-names/--labels) give each folder its output index; else
    # the alphabetical folder list is a guess, used when its length fits.
    names = class_names or (tuple(subdirs) if len(subdirs) == signature.num_classes else None)
    y = None
    if names is not None:
        tops = [p.relative_to(root).parts[0] for p in chosen]
        if all(top in names for top in tops):  # every image sits in a class folder
            y = np.asarray([names.index(top) for top in tops], dtype=np.int64)
    return CalibrationData(x=x, source=str(root.resolve()), class_names=names, y=y)


def _from_npy(path: Path, signature: ModelSignature, limit: int, seed: int) -> CalibrationData:
    try:
        x = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as err:
        raise ConvertError(
            f"Cannot read the .npy calibration array ({err}). Received: path={path}"
        ) from None
    expected = tuple(signature.input_shape)
    if x.ndim == 3 and expected[2] == 1:
        x = x[..., None]
    if x.ndim != 4 or tuple(x.shape[1:]) != expected or len(x) == 0:
        raise ConvertError(
            "The calibration array does not fit the model: expected "
            f"(N, {', '.join(map(str, expected))}) in the model's input layout. "
            f"Received: shape={tuple(x.shape)}, path={path}"
        )
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ConvertError(
            f"The calibration array must be numeric. Received: dtype={x.dtype}, path={path}"
        )
    x = x[seeded_subset(len(x), limit, seed)]
    # uint8: raw pixels, scaled like photos (--input-scale); anything else: model input as is
    x = np.asarray(x, dtype=np.uint8 if x.dtype == np.uint8 else np.float32)
    if not np.isfinite(x).all():
        raise ConvertError(f"The calibration array holds NaN or infinity. Received: path={path}")
    return CalibrationData(x=x, source=str(path.resolve()))


def load_calibration_data(
    spec: str | os.PathLike,
    signature: ModelSignature,
    limit: int,
    seed: int = CALIBRATION_SEED,
    *,
    resize: str = "stretch",
    class_names: tuple[str, ...] | None = None,
) -> CalibrationData:
    """Load up to `limit` samples from an image folder (resized, uint8) or a `.npy` (float32).

    An image folder gives raw pixels, prepared like the runtime prepares photos
    (`edge_runtime.image.preprocess`, the `resize` rule); its class subfolders give labels, by
    `class_names` (the model's output order) when given. A `.npy` must already be in the
    model's input layout: uint8 is raw pixels (scaled as photos are), any other dtype is
    already model input.
    """
    path = Path(spec).expanduser()
    if not path.exists():
        raise ConvertError(f"Calibration data not found. Received: calibration_data={path}")
    if path.is_dir():
        return _from_folder(path, signature, limit, seed, resize, class_names)
    if path.suffix.lower() == ".npy":
        return _from_npy(path, signature, limit, seed)
    raise ConvertError(
        "--calibration-data must be an image folder or a .npy array. "
        f"Received: calibration_data={path}"
    )
