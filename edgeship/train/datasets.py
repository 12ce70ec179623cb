"""Datasets: Fashion-MNIST (found on disk or downloaded by Keras) and user image folders.

Every dataset is returned as raw uint8 pixels in NHWC layout with integer labels; the
model's input scaling is recorded in `model.json`, not baked into the arrays.
"""

from __future__ import annotations

import collections
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from edge_runtime.errors import ImageError
from edge_runtime.image.preprocess import load_image, preprocess_image
from edgeship.train.errors import DatasetError
from edgeship.train.idx import read_idx

FASHION_MNIST = "fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# sha256 of the decompressed official files (zalandoresearch/fashion-mnist's; docs/train.md).
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DATA_DIR_ENV = "EDGESHIP_DATA_DIR"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian/Ubuntu dataset-fashion-mnist
FIX_HINT = (
    "Install it with `sudo apt-get install dataset-fashion-mnist`, or pass --data-dir DIR "
    f"(or set {DATA_DIR_ENV}) pointing at a folder with the four IDX files"
)
# Image folders: held-out share and the split's own seed (independent of --seed, so the
# test set of a folder never changes between training runs).
TEST_FRACTION = 0.2
SPLIT_SEED = 20240229
MAX_FOLDER_IMAGE_SIDE = 96
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset: uint8 NHWC images, int64 labels, class names."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str
    sha256: str
    color_mode: str = field(default="grayscale")

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != np.uint8 or x.ndim != 4:
                raise DatasetError(
                    f"{split} images must be uint8 NHWC. Received: dtype={x.dtype}, shape={x.shape}"
                )
            if y.ndim != 1 or len(y) != len(x):
                raise DatasetError(
                    f"{split} labels must be 1-D with one label per image. "
                    f"Received: images={len(x)}, labels shape={y.shape}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DatasetError(
                "train and test images differ in shape. "
                f"Received: {self.x_train.shape[1:]} and {self.x_test.shape[1:]}"
            )
        if self.color_mode not in ("grayscale", "rgb"):
            raise DatasetError(f"color_mode must be grayscale or rgb. Received: {self.color_mode}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Height, width and channels of one image."""
        height, width, channels = (int(d) for d in self.x_train.shape[1:])  # NHWC (post_init)
        return height, width, channels

    @property
    def background(self) -> str:
        """'dark' where objects are light on a dark background (Fashion-MNIST), else 'unknown'."""
        return "dark" if self.name == FASHION_MNIST else "unknown"


def keras_cache_dir() -> Path:
    """Where Keras's own download keeps Fashion-MNIST (honours KERAS_HOME)."""
    return Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "datasets" / FASHION_MNIST


def keras_download() -> None:
    """Let Keras download Fashion-MNIST into its cache (needs the internet)."""
    import keras

    keras.datasets.fashion_mnist.load_data()


def _idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _found_idx_file(directory: Path, stem: str) -> Path:
    """`_idx_file` in a folder `find_fashion_mnist` returned (so it holds every file)."""
    path = _idx_file(directory, stem)
    if path is None:  # only if the file went away since the search
        raise DatasetError(f"Fashion-MNIST file {stem} is gone. Received: path={directory}")
    return path


def _missing_files(directory: Path) -> list[str]:
    return [stem for stem in FASHION_MNIST_SHA256 if _idx_file(directory, stem) is None]


def find_fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    system_dir: Path = SYSTEM_DIR,
    keras_cache: Path | None = None,
    download: Callable[[], None] | None = keras_download,
) -> Path:
    """Return the folder holding Fashion-MNIST, searched in the order docs/train.md gives.

    An explicit `data_dir` (or `$EDGESHIP_DATA_DIR`) must hold the files; otherwise the
    Debian path, then Keras's cache, then Keras's download (when `download` is given).
    """
    explicit = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    if explicit is not None:
        directory = Path(explicit).expanduser()
        if not directory.is_dir():
            raise DatasetError(
                f"Data directory does not exist. {FIX_HINT}. Received: path={directory}"
            )
        missing = _missing_files(directory)
        if missing:
            raise DatasetError(
                f"Data directory lacks Fashion-MNIST file(s) {', '.join(missing)} (.gz or raw). "
                f"{FIX_HINT}. Received: path={directory}"
            )
        return directory

    keras_cache = keras_cache if keras_cache is not None else keras_cache_dir()
    for directory in (system_dir, keras_cache):
        if directory.is_dir() and not _missing_files(directory):
            return directory
    looked = [f"--data-dir/${DATA_DIR_ENV} (not set)", str(system_dir), str(keras_cache)]
    if download is not None:
        try:
            download()
        except Exception as err:  # any network or Keras failure ends the search
            looked.append(f"Keras download ({type(err).__name__}: {err})")
        else:
            if keras_cache.is_dir() and not _missing_files(keras_cache):
                return keras_cache
            looked.append("Keras download (finished, but the files are not in its cache)")
    raise DatasetError(f"Fashion-MNIST not found. Looked in: {'; '.join(looked)}. {FIX_HINT}.")


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, **find_options) -> Dataset:
    """Load Fashion-MNIST, checking the official checksums."""
    directory = find_fashion_mnist(data_dir, **find_options)
    arrays = {
        stem: read_idx(_found_idx_file(directory, stem), expected_sha256=sha)
        for stem, sha in FASHION_MNIST_SHA256.items()
    }
    x_train, y_train = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    x_test, y_test = arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(
                f"{split} images and labels do not match: images {x.shape}, labels {y.shape}. "
                f"Received: path={directory}"
            )
    digest = hashlib.sha256("".join(FASHION_MNIST_SHA256.values()).encode()).hexdigest()
    return Dataset(
        name=FASHION_MNIST,
        x_train=x_train[..., None],
        y_train=y_train.astype(np.int64),
        x_test=x_test[..., None],
        y_test=y_test.astype(np.int64),
        class_names=FASHION_MNIST_CLASSES,
        source=str(directory),
        sha256=digest,
        color_mode="grayscale",
    )


def _image_files(class_dir: Path) -> list[Path]:
    extensions = Image.registered_extensions()
    return sorted(
        p
        for p in class_dir.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
    )


def _open_image(path: Path, size: tuple[int, int] | None = None) -> Image.Image:
    try:
        return load_image(path, size=size)  # size: a JPEG decodes to it, as on the device
    except ImageError as err:
        raise DatasetError(f"Cannot use an image of the dataset: {err}") from None


def _peek_image(path: Path) -> tuple[tuple[int, int], str]:
    """Size and mode of an image from its header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size, image.mode
    except Exception:  # noqa: BLE001 - let the full loader word the error
        _open_image(path)
        raise


def _fit_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    factor = min(1.0, max_side / max(width, height))
    return max(1, round(width * factor)), max(1, round(height * factor))


def load_image_folder(
    directory: str | os.PathLike, max_side: int = MAX_FOLDER_IMAGE_SIDE
) -> Dataset:
    """Load a folder with one subfolder of images per class, split with a fixed seed.

    Grayscale when every image is grayscale, else RGB. The image size is the most common
    one in the folder, scaled down to fit `max_side`; other images are resized to it.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise DatasetError(f"Dataset folder does not exist. Received: path={root}")
    classes = {
        d.name: files
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".") and (files := _image_files(d))
    }
    if len(classes) < 2:
        raise DatasetError(
            "An image-folder dataset needs at least two class subfolders holding images "
            f"(one subfolder per class). Received: path={root}, classes={sorted(classes)}"
        )
    # Pass 1: sizes and modes from the headers only (Image.open does not decode), so a
    # folder of large photos never sits decoded in memory all at once.
    paths, labels, sizes, modes = [], [], [], []
    digest = hashlib.sha256()
    for label, files in enumerate(classes.values()):
        for path in files:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
            size, mode = _peek_image(path)
            paths.append(path)
            labels.append(label)
            sizes.append(size)
            modes.append(mode)
    color_mode = "grayscale" if all(mode in _GRAY_MODES for mode in modes) else "rgb"
    common = collections.Counter(sizes).most_common(1)[0][0]
    size = _fit_size(common, max_side)
    # Pass 2: decode, preprocess and drop one image at a time. The device's own
    # preprocessing (edge_runtime), so training sees what inference will.
    shape = (size[1], size[0], 1 if color_mode == "grayscale" else 3)
    x = np.empty((len(paths), *shape), dtype=np.uint8)
    for i, path in enumerate(paths):
        with _open_image(path, size) as image:
            x[i] = preprocess_image(image, shape, invert="no")
    y = np.asarray(labels, dtype=np.int64)

    rng = np.random.default_rng(SPLIT_SEED)
    test_mask = np.zeros(len(y), dtype=bool)
    for label in range(len(classes)):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(members) * TEST_FRACTION)) if len(members) >= 2 else 0
        test_mask[members[: max(n_test, 1 if len(members) >= 2 else 0)]] = True
    return Dataset(
        name=root.name,
        x_train=x[~test_mask],
        y_train=y[~test_mask],
        x_test=x[test_mask],
        y_test=y[test_mask],
        class_names=tuple(classes),
        source=str(root.resolve()),
        sha256=digest.hexdigest(),
        color_mode=color_mode,
    )


def load_dataset(spec: str = FASHION_MNIST, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load `fashion-mnist` (from `data_dir` or the usual places) or an image folder path."""
    if spec == FASHION_MNIST:
        return load_fashion_mnist(data_dir)
    if data_dir is not None:
        raise DatasetError(
            f"--data-dir applies to fashion-mnist only; an image folder is its own source. "
            f"Received: dataset={spec}, data_dir={data_dir}"
        )
    return load_image_folder(spec)
