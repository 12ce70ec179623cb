"""Convert one mode and check it against Keras through edge_runtime before writing its file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeshipError
from edge_runtime.files import atomic_path
from edgeship.convert.fallback import Budget, Check, check
from edgeship.convert.inputs import CheckInputs
from edgeship.convert.metadata import io_blocks, mode_metadata
from edgeship.convert.modes import CALIBRATED_MODES, FALLBACKS
from edgeship.convert.results import ModeResult, ProgressCallback
from edgeship.train.quiet import captured_stderr


class _Rejected(Exception):
    """A converted mode that runs but fails its check; carries the reason and hint."""

    def __init__(self, reason: str, hint: str, missed_budget: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.hint, self.missed_budget = reason, hint, missed_budget


def keras_probabilities(model, x: np.ndarray) -> np.ndarray:
    """Keras's outputs on model input `x` as float64 probabilities, decided as
    `EdgeClassifier.predict_proba` decides them (`edge_runtime.scores.as_probabilities`), so
    a model that outputs logits is compared probability to probability."""
    from edge_runtime.scores import as_probabilities

    scores = model.predict(x, batch_size=256, verbose=0)
    return np.asarray(as_probabilities(scores), dtype=np.float64)


def accuracy(probs: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy of `probs` against `labels` (None without labels)."""
    return None if labels is None else float(np.mean(probs.argmax(1) == labels))


def _run_in_edge_runtime(
    tmp: Path, path: Path, mode: str, inputs: CheckInputs
) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """The file at `tmp` loaded by `EdgeClassifier`: its probabilities and I/O blocks."""
    from edge_runtime.classifier import EdgeClassifier

    try:
        with captured_stderr():  # the interpreter's "Created XNNPACK delegate" line
            classifier = EdgeClassifier.load(tmp)
            probs = classifier.predict_proba(inputs.verify_x)
        return np.asarray(probs, dtype=np.float64), *io_blocks(classifier)
    except (EdgeshipError, RuntimeError, ValueError) as err:
        reason = str(err).replace(str(tmp), str(path))  # name the file it would be
        raise _Rejected(
            f"the converted model does not run in edge_runtime ({reason})", FALLBACKS[mode]
        ) from None


def _missed_budget(found: Check, budget: Budget, calibrated: bool) -> _Rejected:
    """Why a mode misses `budget`, and what to try."""
    if budget.min_agreement is not None and found.agreement < budget.min_agreement:
        what = (
            f"top-1 agreement with Keras {found.agreement:.2%} is below --min-agreement "
            f"{budget.min_agreement:.2%}"
        )
    else:
        what = (
            f"accuracy {found.accuracy:.2%} is {found.accuracy_drop:.2%} below Keras's, more "
            f"than --max-accuracy-drop {budget.max_accuracy_drop:.2%}"
        )
    hint = (
        "Try more or more representative calibration data (--calibration-samples, "
        "--calibration-data) or a gentler mode (int16x8, dynamic, float16)."
        if calibrated
        else "Try a gentler mode (float16 or float32)."
    )
    return _Rejected(what, hint, missed_budget=True)


def convert_and_check(
    export_dir: str | None,
    mode: str,
    path: Path,
    base_meta: dict[str, Any],
    inputs: CheckInputs,
    keras_probs: np.ndarray,
    int8_io: bool,
    budget: Budget,
    float32_size: int | None,
    progress: ProgressCallback | None,
    model_bytes: bytes | None = None,
    fallback: dict[str, Any] | None = None,
    seconds: float = 0.0,
    engine: str | None = None,
) -> ModeResult:
    """Convert `mode` (unless `model_bytes` is given), check it against Keras and write it to
    `path` with its metadata; a mode that fails or misses the budget writes nothing."""
    from edge_runtime.metadata.standard_write import embed_all_metadata
    from edgeship.convert.converter import ModeConversionError, to_tflite

    calibrated = mode in CALIBRATED_MODES
    mode_int8_io = bool(int8_io and mode == "int8")
    start = time.perf_counter()
    if model_bytes is None:
        # Only a Keras source converts here; the others hand over `model_bytes`.
        assert export_dir is not None, "no SavedModel to convert and no model_bytes"
        calib = inputs.calibration_input() if calibrated else None
        try:
            model_bytes = to_tflite(export_dir, mode, calib, int8_io=mode_int8_io)
        except ModeConversionError as err:
            return ModeResult(
                mode, error=f"the TFLite converter failed: {err}", hint=FALLBACKS[mode]
            )
    convert_seconds = time.perf_counter() - start + seconds  # + the caller's conversion

    meta = mode_metadata(base_meta, mode, inputs, mode_int8_io, fallback, engine)
    if progress:
        progress(mode, "verify", None)
    start = time.perf_counter()
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(embed_all_metadata(model_bytes, meta))
            probs, io_in, io_out = _run_in_edge_runtime(tmp, path, mode, inputs)
            if probs.shape != keras_probs.shape:
                raise _Rejected(
                    f"edge_runtime returned shape {probs.shape}, Keras {keras_probs.shape}",
                    FALLBACKS[mode],
                )
            found = check(probs, keras_probs, inputs.verify_y)
            max_abs_diff = float(np.max(np.abs(probs - keras_probs)))
            meta["quantization"]["input"] = io_in
            meta["quantization"]["output"] = io_out
            meta["quantization"]["check"] = {
                "samples": int(len(inputs.verify_x)),
                "source": inputs.verify_source,
                "agreement": round(found.agreement, 6),
                "max_abs_diff": round(max_abs_diff, 6),
                "accuracy": round(found.accuracy, 6) if found.accuracy is not None else None,
            }
            final = embed_all_metadata(model_bytes, meta)
            # A fallback model was chosen on these same samples: it is not judged again.
            if fallback is None and not budget.met(found):
                raise _missed_budget(found, budget, calibrated)
            tmp.write_bytes(final)
    except _Rejected as err:
        return ModeResult(mode, error=err.reason, hint=err.hint, missed_budget=err.missed_budget)
    return ModeResult(
        mode,
        path=path,
        size_bytes=len(final),
        size_vs_float32=len(final) / float32_size if float32_size else None,
        agreement=found.agreement,
        max_abs_diff=max_abs_diff,
        accuracy=found.accuracy,
        convert_seconds=convert_seconds,
        verify_seconds=time.perf_counter() - start,
        float_layers=tuple(fallback["float_layers"]) if fallback else (),
        fallback=fallback,
    )
