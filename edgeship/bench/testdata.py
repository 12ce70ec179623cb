"""The bench's test set: the run's own, or the user's (`--test-data`) in the model's class order.

`--test-data` takes two forms:
- a folder with one subfolder per class, each subfolder named exactly like one of the model's
  class names (its metadata's, or `--labels`): label = that name's index in the MODEL, not the
  folder's place in an alphabetical listing. Photos are prepared by `edge_runtime.image.preprocess`
  with the model's resize rule, as on the device. A subfolder that names no class is an error.
- an `.npz` with `x` (N, H, W[, C]) uint8 pixels and `y` (N,) class indices in output order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeshipError
from edgeship.bench.errors import BenchError
from edgeship.bench.options import BenchOptions
from edgeship.train.datasets import Dataset


def spread_indices(y: np.ndarray, k: int) -> np.ndarray:
    """`k` test images to show or keep, deterministically, across the classes.

    A mixed test set (Fashion-MNIST's) gives its first `k`, as the tutorial shows them. A set
    ordered by class (one folder per class, read folder by folder) would give `k` images of
    the first classes only: there, one image of each class in turn (its first, its second...).
    """
    y = np.asarray(y)
    k = min(int(k), len(y))
    changes = int(np.count_nonzero(y[1:] != y[:-1])) if len(y) > 1 else 0
    if changes + 1 > len(np.unique(y)):  # some class comes back later: already mixed
        return np.arange(k)
    pools = [np.flatnonzero(y == c) for c in dict.fromkeys(y.tolist())]
    picked = [int(pool[depth]) for depth in range(len(y)) for pool in pools if depth < len(pool)]
    return np.asarray(picked[:k], dtype=np.int64)


def _image_files(folder: Path) -> list[Path]:
    from PIL import Image

    extensions = Image.registered_extensions()
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
    )


def test_photos(spec: str | os.PathLike | None) -> list[Path] | None:
    """The image files of a `--test-data` folder (class subfolders), spread across the classes
    as `spread_indices` does; None for an .npz (pixels, no files) or no --test-data."""
    if spec is None or not Path(spec).expanduser().is_dir():
        return None
    root = Path(spec).expanduser()
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(n, path) for n, d in enumerate(folders) for path in _image_files(d)]
    order = spread_indices(np.asarray([n for n, _ in files]), len(files))
    return [files[i][1] for i in order] or None


def _dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    source: Path,
    sha256: str,
    shape: tuple[int, ...],
) -> Dataset:
    return Dataset(
        name=name,
        x_train=np.empty((0, *x.shape[1:]), np.uint8),
        y_train=np.empty(0, np.int64),
        x_test=x,
        y_test=y,
        class_names=tuple(names),
        source=str(source.resolve()),
        sha256=sha256,
        color_mode="grayscale" if shape[-1] == 1 else "rgb",
    )


def _from_folder(root: Path, names: Sequence[str], shape: tuple[int, ...], resize: str) -> Dataset:
    from edge_runtime.image.preprocess import load_and_preprocess

    index = {name: i for i, name in enumerate(names)}
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    unknown = [d.name for d in folders if d.name not in index]
    if unknown:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise BenchError(
            f"Test-data folder {unknown[0]!r} names no class of the model (its classes: "
            f"{shown}). Rename the folder to a class name, or give the names with --labels. "
            f"Received: test_data={root}, folders={[d.name for d in folders][:10]}"
        )
    images, labels = [], []
    digest = hashlib.sha256()
    height, width, channels = shape  # a model's image input: (H, W, C)
    for folder in folders:
        for path in _image_files(folder):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
            try:
                images.append(
                    load_and_preprocess(path, (height, width, channels), invert="no", resize=resize)
                )
            except EdgeshipError as err:
                raise BenchError(f"Cannot use a test image: {err}") from None
            labels.append(index[folder.name])
    if not images:
        raise BenchError(
            "The test-data folder holds no images in class subfolders (one subfolder per "
            f"class, named like the model's classes). Received: test_data={root}"
        )
    x, y = np.stack(images), np.asarray(labels, np.int64)
    return _dataset(root.name, x, y, names, root, digest.hexdigest(), shape)


def _from_npz(path: Path, names: Sequence[str], shape: tuple[int, ...]) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "x" not in npz or "y" not in npz:
                raise BenchError(
                    "The .npz must hold arrays `x` (images) and `y` (class indices). "
                    f"Received: arrays={sorted(npz.files)}, test_data={path}"
                )
            x, y = npz["x"], npz["y"]
    except (OSError, ValueError, EOFError) as err:
        raise BenchError(
            f"Cannot read the .npz test data ({err}). Received: test_data={path}"
        ) from None
    if x.ndim == 3 and shape[-1] == 1:
        x = x[..., None]
    if x.dtype != np.uint8 or tuple(x.shape[1:]) != tuple(shape) or len(x) == 0:
        raise BenchError(
            f"The .npz `x` must be uint8 pixels of the model's input, (N, "
            f"{', '.join(map(str, shape))}). Received: dtype={x.dtype}, shape={tuple(x.shape)}, "
            f"test_data={path}"
        )
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise BenchError(
            "The .npz `y` must hold one integer class index per image. "
            f"Received: dtype={y.dtype}, shape={tuple(y.shape)}, images={len(x)}, test_data={path}"
        )
    if y.min() < 0 or y.max() >= len(names):
        raise BenchError(
            f"The .npz `y` holds class indices outside 0..{len(names) - 1}. "
            f"Received: min={int(y.min())}, max={int(y.max())}, test_data={path}"
        )
    digest = hashlib.sha256(x.tobytes() + y.astype(np.int64).tobytes()).hexdigest()
    return _dataset(path.stem, x, y.astype(np.int64), names, path, digest, shape)


def load_test_data(
    spec: str | os.PathLike,
    class_names: Sequence[str],
    image_shape: tuple[int, ...],
    resize: str = "stretch",
) -> Dataset:
    """The user's test images (a class-folder tree or an .npz) as a `Dataset` (test split only)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return _from_folder(path, list(class_names), tuple(image_shape), resize)
    if path.is_file() and path.suffix.lower() == ".npz":
        return _from_npz(path, list(class_names), tuple(image_shape))
    what = "not found" if not path.exists() else "neither a folder nor an .npz file"
    raise BenchError(
        f"--test-data is {what}: pass a folder of class subfolders or an .npz with x and y. "
        f"Received: test_data={path}"
    )


def bench_test_set(
    meta: dict[str, Any], options: BenchOptions
) -> tuple[Dataset, np.ndarray, np.ndarray, list[str]]:
    """The test set, images, labels and notes: `--test-data` in the model's class order, else
    the run's own."""
    if options.test_data is None:
        data, x, y, notes = load_test_set(meta, options.limit)
        if options.labels is not None:  # the run's own test set, named by --labels
            data = dataclasses.replace(data, class_names=tuple(meta["class_names"]))
        return data, x, y, notes
    block = meta.get("input") or {}
    data = load_test_data(
        options.test_data,
        meta["class_names"],
        tuple(block["shape"]),
        block.get("resize", "stretch"),
    )
    x, y = data.x_test, data.y_test
    if options.limit is not None:  # a folder read class by class: some of every class
        keep = np.sort(spread_indices(y, options.limit))
        x, y = x[keep], y[keep]
    return data, x, y, []


def load_test_set(
    meta: dict[str, Any], limit: int | None
) -> tuple[Dataset, np.ndarray, np.ndarray, list[str]]:
    """The test images (uint8 NHWC), labels and class names named by the run's metadata."""
    from edgeship.train.datasets import FASHION_MNIST, load_dataset

    info = meta.get("dataset") or {}
    name, source = info.get("name"), info.get("source")
    if not info and meta.get("model") == "custom":  # converted from the user's own Keras file
        calibrated = (meta.get("quantization") or {}).get("calibration_source")
        raise BenchError(
            "These models were converted from your own Keras model: there is no test set of "
            "their own to fall back to (Fashion-MNIST would fit none of them). Pass "
            "--test-data DIR (one folder per class) or FILE.npz"
            + (f", e.g. the photos they were calibrated on: {calibrated}" if calibrated else "")
            + f". Received: model={meta.get('model')}, dataset=none"
        )
    if name == FASHION_MNIST or (name is None and source is None):
        data_dir = source if source and Path(source).is_dir() else None
        data = load_dataset(FASHION_MNIST, data_dir)
    elif source and Path(source).is_dir():
        data = load_dataset(source)
    else:
        raise BenchError(
            "The run's test set is not available: its image folder is gone. Restore it or "
            f"retrain. Received: dataset={name}, source={source}"
        )
    x, y = data.x_test, data.y_test
    if limit is not None:
        x, y = x[:limit], y[:limit]
    notes = []
    if info.get("sha256") and data.sha256 and info["sha256"] != data.sha256:
        notes.append(
            f"dataset content differs from the one the model was trained with "
            f"(sha256 {data.sha256[:12]}... vs {info['sha256'][:12]}...)"
        )
    return data, x, y, notes
