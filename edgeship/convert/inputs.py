"""The samples a conversion uses: calibration data, the check's samples and a held-out set."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.convert.calibration import (
    CALIBRATION_SEED,
    CalibrationData,
    balanced_indices,
    load_calibration_data,
    seeded_subset,
)
from edgeship.convert.errors import ConvertError
from edgeship.convert.loading import ModelSignature
from edgeship.convert.modes import CALIBRATED_MODES

DEFAULT_VERIFY_SAMPLES = 1000
VERIFY_SEED = 7
# Foreign model without any data: the float modes are checked on seeded random pixels.
RANDOM_VERIFY_SAMPLES = 200
# How a raw pixel p becomes model input, p * scale + offset: two floats, or (with
# --input-mean/--input-std) one list per channel each.
PixelScaling = tuple[float | list[float], float | list[float]]


@dataclass(frozen=True, eq=False)
class CheckInputs:
    """Samples for calibration and for the check, plus how pixels become model input."""

    calibration: CalibrationData | None
    verify_x: np.ndarray
    verify_y: np.ndarray | None
    verify_source: str
    scale: float | list[float]
    offset: float | list[float]
    # Samples beside the check's, for checking a --fallback model on data its search did not use.
    holdout_x: np.ndarray | None = None
    holdout_y: np.ndarray | None = None

    def model_input(self, x: np.ndarray) -> np.ndarray:
        """Raw uint8 pixels -> model input (scale/offset); float arrays pass unchanged."""
        if x.dtype == np.uint8:
            scale = np.asarray(self.scale, np.float32)  # a float, or one per channel
            return x.astype(np.float32) * scale + np.asarray(self.offset, np.float32)
        return np.asarray(x, dtype=np.float32)

    def calibration_input(self) -> np.ndarray:
        """The calibration samples as model input (for the converter)."""
        # Called for the calibrated modes only, which prepare_inputs never leaves without data.
        assert self.calibration is not None, "calibration_input without calibration data"
        return self.model_input(self.calibration.x)


def _load_own_dataset(meta: dict[str, Any]):
    """The dataset an edgeship model was trained on, as recorded in its model.json."""
    from edgeship.train.datasets import FASHION_MNIST, load_dataset

    dataset = meta.get("dataset") or {}
    name, source = dataset.get("name"), dataset.get("source")
    if name == FASHION_MNIST:
        data_dir = source if source and Path(source).is_dir() else None
        return load_dataset(FASHION_MNIST, data_dir=data_dir)
    if not source:
        raise ConvertError(
            "model.json names no dataset source; pass --calibration-data. "
            f"Received: dataset={dataset}"
        )
    return load_dataset(source)


def _own_inputs(
    model_path: Path,
    signature: ModelSignature,
    meta: dict[str, Any],
    calibration: CalibrationData | None,
    needs_calibration: bool,
    calibration_samples: int,
    verify_samples: int,
) -> CheckInputs:
    """An edgeship run's inputs: its training set calibrates, its test set checks."""
    data = _load_own_dataset(meta)
    if data.image_shape != signature.input_shape:
        raise ConvertError(
            f"The model's dataset images are {data.image_shape}, the model takes "
            f"{signature.input_shape}. Received: path={model_path}"
        )
    if calibration is None and needs_calibration:
        idx = balanced_indices(data.y_train, calibration_samples, CALIBRATION_SEED)
        calibration = CalibrationData(
            x=data.x_train[idx], source=f"{data.name} training set (class-balanced)"
        )
    idx = seeded_subset(len(data.x_test), verify_samples, VERIFY_SEED)
    rest = np.setdiff1d(np.arange(len(data.x_test)), idx)
    held = rest[seeded_subset(len(rest), len(idx), VERIFY_SEED + 1)]
    return CheckInputs(
        calibration=calibration,
        verify_x=data.x_test[idx],
        verify_y=data.y_test[idx],
        verify_source=f"{data.name} test set",
        scale=float(meta["input"].get("scale", 1.0)),
        offset=float(meta["input"].get("offset", 0.0)),
        holdout_x=data.x_test[held],
        holdout_y=data.y_test[held],
    )


def prepare_inputs(
    model_path: Path,
    signature: ModelSignature,
    meta: dict[str, Any] | None,
    modes: tuple[str, ...],
    calibration_samples: int,
    calibration_data: str | os.PathLike | None,
    verify_samples: int,
    resize: str = "stretch",
    class_names: tuple[str, ...] | None = None,
    pixel_scaling: PixelScaling = (1.0, 0.0),
) -> CheckInputs:
    """Calibration and check samples: from the run's dataset (model.json), from
    `calibration_data`, or (a foreign model in float modes only) seeded random pixels."""
    needs_calibration = any(m in CALIBRATED_MODES for m in modes)
    calibration: CalibrationData | None = None
    if calibration_data is not None:
        calibration = load_calibration_data(
            calibration_data,
            signature,
            calibration_samples,
            resize=resize,
            class_names=class_names,
        )
    if meta is not None:
        return _own_inputs(
            model_path,
            signature,
            meta,
            calibration,
            needs_calibration,
            calibration_samples,
            verify_samples,
        )
    if calibration is None and needs_calibration:
        wanted = ",".join(m for m in modes if m in CALIBRATED_MODES)
        raise ConvertError(
            f"Mode {wanted} needs calibration data, and this model has no edgeship model.json "
            "to find its training set. Pass --calibration-data DIR (image folder) or "
            "--calibration-data FILE.npy (an array in the model's input layout), or choose "
            f"float32,dynamic,float16. Received: path={model_path}"
        )
    if calibration is not None:
        x, rest = calibration.x[:verify_samples], calibration.x[verify_samples:]
        y = rest_y = None
        if calibration.y is not None:  # one folder per class: labels for accuracy
            y, rest_y = calibration.y[:verify_samples], calibration.y[verify_samples:]
        return CheckInputs(
            calibration,
            x,
            y,
            "calibration data",
            *pixel_scaling,
            holdout_x=rest if len(rest) else None,
            holdout_y=rest_y if len(rest) else None,
        )
    rng = np.random.default_rng(VERIFY_SEED)
    n = min(verify_samples, RANDOM_VERIFY_SAMPLES)
    x = rng.integers(0, 256, size=(n, *signature.input_shape), dtype=np.uint8)
    return CheckInputs(None, x, None, "random pixels (no data given)", *pixel_scaling)
