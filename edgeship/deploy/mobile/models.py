"""`edgeship deploy mobile`: phone-ready `.tflite` models that need no edgeship code.

Each model takes H x W x 3 RGB pixels (uint8 0-255 for int8, float32 0-255 otherwise) and
carries edgeship's preprocessing in its graph (`edgeship.deploy.mobile.graph`): Pillow's
grayscale for a grayscale model, the light-background inversion of `--invert auto` for a
dark-background model, the pixel scaling. It is converted from the run's Keras model in the
source model's quantization mode (int8 stays full int8), and carries edgeship's block (class
names, the input description) and the standard TFLite Model Metadata with the labels file
packed in, so MediaPipe Tasks, Android Studio and `EdgeClassifier` all name the classes. Only
resizing is left to the app.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.files import (
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
    make_output_dir,
    sha256_bytes,
)
from edge_runtime.metadata.block import read_metadata
from edge_runtime.metadata.standard_write import embed_all_metadata
from edgeship.deploy.errors import MobileError

__all__ = ["MOBILE_MODES", "MobileError", "write_mobile_models"]

# Modes a phone runs: int16x8 has no MediaPipe/GPU delegate support, so it is left out.
MOBILE_MODES = ("float32", "dynamic", "float16", "int8")
DEFAULT_MODES = ("int8",)


def _parse_phone_modes(modes: Sequence[str] | str) -> tuple[str, ...]:
    """`"int8,float32"` -> the phone modes in the given order: a subset of `MOBILE_MODES`."""
    items = modes.split(",") if isinstance(modes, str) else list(modes)
    wanted = [m.strip() for m in items if m and m.strip()]
    unknown = [m for m in wanted if m not in MOBILE_MODES]
    if not wanted or unknown:
        raise MobileError(
            f"Unknown or missing mode for a phone model: choose from {','.join(MOBILE_MODES)}. "
            f"Received: models={','.join(items) if items else '(none)'}"
        )
    return tuple(dict.fromkeys(wanted))


def _run_metadata(run: Path) -> tuple[dict[str, Any], Path | str]:
    """The run's metadata (model.json, or a converted model's block) and its Keras model (a
    Path) or PyTorch model (`FILE.pt2` or `FILE.py:FUNCTION`, a str)."""
    from edgeship.train.training import read_run_metadata

    if not run.is_dir():
        raise MobileError(
            f"The run folder does not exist. Pass a folder written by edgeship train/convert. "
            f"Received: path={run}"
        )
    meta = None
    try:
        meta = read_run_metadata(run)
    except Exception as err:  # TrainError: an unreadable model.json
        raise MobileError(str(err)) from None
    if meta is None:
        for path in sorted(run.glob("model_*.tflite")):
            try:
                meta = read_metadata(path, sidecar=False)
            except Exception:  # a corrupt .tflite: try the next one
                meta = None
            if meta is not None:
                break
    keras_path = run / "model.keras"
    source = (meta or {}).get("source_model") or {}
    if meta is not None and not keras_path.is_file() and source.get("path"):  # (source: meta's)
        keras_path = Path(source["path"])
        if source.get("framework") == "torch" and keras_path.is_file():
            func = source.get("function")
            return meta, f"{keras_path}:{func}" if func else str(keras_path)
    if meta is None or not keras_path.is_file():
        raise MobileError(
            "The run has no Keras model to export (model.keras, or the source model recorded "
            "in its .tflite files). Train or convert into it first: edgeship train --out RUN. "
            f"Received: path={run}"
        )
    return meta, keras_path


def _dataset(meta: dict[str, Any]):
    """The run's dataset (a `edgeship.train.datasets.Dataset`), or None when it cannot be found."""
    from edgeship.train.datasets import FASHION_MNIST, load_dataset

    dataset = meta.get("dataset") or {}
    name, source = dataset.get("name"), dataset.get("source")
    try:
        if name == FASHION_MNIST:
            data_dir = source if source and Path(source).is_dir() else None
            return load_dataset(FASHION_MNIST, data_dir=data_dir)
        if source and Path(source).is_dir():
            return load_dataset(source)
    except Exception:  # DatasetError: the data moved away; the caller says what that costs
        return None
    return None


def as_rgb(images: np.ndarray, light: bool) -> np.ndarray:
    """uint8 (N, H, W[, C]) dataset images -> RGB as a photo shows them (`light`: inverted)."""
    if images.ndim == 3:
        images = images[..., None]
    rgb = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
    return (255 - rgb if light else rgb).astype(np.uint8)


def _calibration(meta: dict[str, Any], dark: bool, samples: int) -> np.ndarray:
    """RGB calibration pixels: the very images `convert` calibrated the source model with
    (same class-balanced draw), so the phone model's int8 ranges match the source's; plus
    their light-background versions for a dark-background model (the inversion branch)."""
    from edgeship.convert.calibration import CALIBRATION_SEED, balanced_indices

    data = _dataset(meta)
    if data is None:
        raise MobileError(
            "An int8 phone model needs calibration images, and the run's dataset cannot be "
            "found (model.json names none, or it moved). Export float32 instead "
            "(--models float32), restore the dataset, or, for an RGB model, ship convert's own "
            "model_int8.tflite (it carries the standard metadata MediaPipe reads). "
            f"Received: dataset={meta.get('dataset')}"
        )
    images = data.x_train[balanced_indices(data.y_train, samples, CALIBRATION_SEED)]
    rgb = [as_rgb(images, light=False)]
    if dark:
        rgb.append(as_rgb(images, light=True))
    return np.concatenate(rgb).astype(np.float32)


def _convert(keras_model, meta: dict[str, Any], mode: str, samples: int) -> bytes:
    """The phone graph of `keras_model`, converted to `mode`."""
    import tensorflow as tf

    from edgeship.convert.converter import ModeConversionError, _reason, make_converter, saved_model
    from edgeship.deploy.mobile.graph import phone_model
    from edgeship.train.quiet import captured_stderr

    block = meta["input"]
    height, width, channels = (int(d) for d in block["shape"])
    if channels not in (1, 3):
        raise MobileError(
            f"Phone models take RGB images: the model must take 1 or 3 channels. "
            f"Received: input shape={block['shape']}"
        )
    dark = block.get("background") == "dark"
    graph = phone_model(
        keras_model,
        height=height,
        width=width,
        channels=channels,
        invert_light_background=dark,
        scale=block.get("scale", 1.0),  # a float, or one per channel
        offset=block.get("offset", 0.0),
        exact_gray=mode != "int8",  # no integer FLOOR in a full-int8 graph
    )
    calibration = _calibration(meta, dark, samples) if mode == "int8" else None
    with saved_model(graph, (height, width, 3)) as export_dir:
        converter = make_converter(export_dir, mode, calibration)
        if mode == "int8":
            converter.inference_input_type = tf.uint8  # MediaPipe takes uint8 or float32
        log: list[str] = []
        try:
            with warnings.catch_warnings(), captured_stderr() as log:
                warnings.simplefilter("ignore")
                return bytes(converter.convert())
        except Exception as err:  # the converter raises anything
            raise ModeConversionError(_reason(err, log)) from None


def _source_calibration_samples(run: Path, mode: str) -> int:
    """How many images `convert` calibrated the run's `model_<mode>.tflite` with."""
    from edgeship.convert.calibration import DEFAULT_CALIBRATION_SAMPLES

    try:
        meta = read_metadata(run / f"model_{mode}.tflite", sidecar=False) or {}
    except Exception:  # no such file, or a corrupt one: convert's default
        meta = {}
    samples = (meta.get("quantization") or {}).get("calibration_samples")
    return int(samples) if isinstance(samples, int) and samples > 0 else DEFAULT_CALIBRATION_SAMPLES


def _phone_metadata(meta: dict[str, Any], mode: str, data: bytes) -> dict[str, Any]:
    """edgeship's block for a phone model: RGB pixels in, preprocessing in the graph."""
    out = copy.deepcopy(meta)
    out.pop("quantization", None)
    block = out["input"]
    height, width, channels = (int(d) for d in block["shape"])
    steps = ["grayscale (Pillow's ITU-R 601-2 L)"] if channels == 1 else []
    if block.get("background") == "dark":
        steps.append("invert when the border mean > 127 (light background)")
    steps.append(f"pixel * {_num(block.get('scale', 1.0))} + {_num(block.get('offset', 0.0))}")
    block = {k: v for k, v in block.items() if k not in ("mean", "std")}
    out["input"] = {
        **block,
        "shape": [height, width, 3],
        "dtype": "uint8" if mode == "int8" else "float32",
        "scale": 1.0,
        "offset": 0.0,
        "color_mode": "rgb",
        # The inversion rule runs in the graph: edge_runtime must not invert again.
        "background": "any",
        "in_graph": steps,
        "source": {
            k: block.get(k)
            for k in ("shape", "scale", "offset", "mean", "std", "color_mode", "background")
            if k in block
        },
    }
    out["quantization"] = {"mode": mode, "int8_io": False, "mobile": True}
    out["mobile"] = {"format": "rgb-pixels", "sha256_before_metadata": sha256_bytes(data)}
    return out


def _num(value: float | list[float]) -> str:
    """A scale or offset as text: one number, or one per channel."""
    if isinstance(value, list):
        return "(" + ", ".join(f"{float(v):.6g}" for v in value) + ")"
    return f"{float(value):.6g}"


def write_mobile_models(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    modes: Sequence[str] | str = DEFAULT_MODES,
) -> list[Path]:
    """Write `out_dir/model_<mode>.tflite` (RGB pixels in, preprocessing inside) for each mode,
    and `out_dir/README.txt`; return the model paths. Nothing is written if any mode fails."""
    mode_list = _parse_phone_modes(modes)
    run = Path(run_dir)
    meta, keras_path = _run_metadata(run)
    if not isinstance(meta.get("input"), dict) or "shape" not in meta["input"]:
        raise MobileError(f"The run's metadata has no input shape. Received: path={run}")
    out = Path(out_dir)
    check_output_dir(out, keep=False)  # a read-only place fails now, leaving nothing
    if isinstance(keras_path, str):  # a PyTorch model (FILE.pt2 or FILE.py:FUNCTION)
        from edgeship.deploy.mobile.from_torch import torch_phone_bytes

        return _write(
            out, meta, {mode: torch_phone_bytes(keras_path, meta, mode) for mode in mode_list}
        )

    from edgeship.convert.converter import ModeConversionError
    from edgeship.convert.loading import load_keras_model

    try:
        keras_model = load_keras_model(keras_path)
    except Exception as err:  # ConvertError: a model file Keras cannot load
        raise MobileError(str(err)) from None
    files: dict[str, bytes] = {}
    for mode in mode_list:
        samples = _source_calibration_samples(run, mode)
        try:
            data = _convert(keras_model, meta, mode, samples)
        except ModeConversionError as err:
            raise MobileError(
                f"The phone model could not be converted to {mode} ({err}). Try another mode. "
                f"Received: path={keras_path}"
            ) from None
        files[mode] = data
    return _write(out, meta, files)


def _write(out: Path, meta: dict[str, Any], converted: dict[str, bytes]) -> list[Path]:
    """The phone models (their metadata embedded) and README.txt, written into `out`."""
    from edgeship.deploy.mobile.readme import readme_text

    files = {
        f"model_{mode}.tflite": embed_all_metadata(data, _phone_metadata(meta, mode, data))
        for mode, data in converted.items()
    }
    make_output_dir(out)
    paths = [atomic_write_bytes(out / name, data) for name, data in files.items()]
    atomic_write_text(out / "README.txt", readme_text(meta, list(files)))
    return paths
