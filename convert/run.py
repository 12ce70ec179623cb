"""Convert a Keras model into each quantization mode, check each against Keras, write files."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convert.calibration import (
    CALIBRATION_SEED,
    DEFAULT_CALIBRATION_SAMPLES,
    CalibrationData,
    balanced_indices,
    load_calibration_data,
    seeded_subset,
)
from convert.errors import ConvertError, ModeFailedError
from convert.fallback import DEFAULT_MAX_FLOAT_LAYERS, RANKING_SAMPLES, Budget
from convert.layers import LayerReport
from convert.loading import (
    ModelSignature,
    check_model_file,
    load_keras_model,
    model_signature,
)
from convert.modes import CALIBRATED_MODES, FALLBACKS, MODES, parse_modes
from edge_runtime.errors import EdgeshipError
from edge_runtime.files import atomic_path, atomic_write_text, check_output_dir
from train.quiet import captured_stderr
from train.training import read_run_metadata

DEFAULT_VERIFY_SAMPLES = 1000
VERIFY_SEED = 7
# Foreign model without any data: the float modes are checked on seeded random pixels.
RANDOM_VERIFY_SAMPLES = 200
METADATA_SCHEMA_VERSION = 1

# progress(mode, stage, result): stage is "convert", "verify", "done" or "failed".
ProgressCallback = Callable[[str, str, "ModeResult | None"], None]


def tflite_name(mode: str) -> str:
    """The file name of a mode's model inside a run directory."""
    return f"model_{mode}.tflite"


@dataclass(frozen=True)
class ModeResult:
    """The outcome of one mode: the file and its check, or why it failed and what to try."""

    mode: str
    path: Path | None = None
    size_bytes: int | None = None
    size_vs_float32: float | None = None
    agreement: float | None = None
    max_abs_diff: float | None = None
    accuracy: float | None = None
    convert_seconds: float | None = None
    verify_seconds: float | None = None
    error: str | None = None
    hint: str | None = None
    # The layers `--fallback` kept in float (empty: the plain model), and how it got there.
    float_layers: tuple[str, ...] = ()
    fallback: dict[str, Any] | None = None
    # True when the model converted and ran but missed the budget (what --fallback can fix).
    missed_budget: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode. Received: mode={self.mode}")
        if (self.path is None) == (self.error is None):
            raise ValueError("A ModeResult has either a path (success) or an error (failure).")
        if self.agreement is not None and not 0.0 <= self.agreement <= 1.0:
            raise ValueError(f"agreement must be in [0, 1]. Received: {self.agreement}")

    @property
    def ok(self) -> bool:
        """True if the mode's file was written."""
        return self.error is None

    @property
    def label(self) -> str:
        """The mode as the table shows it: 'int8', or 'int8, 1 layer float'."""
        n = len(self.float_layers)
        if not n:
            return self.mode
        return f"{self.mode}, {n} layer{'s' if n > 1 else ''} float"


@dataclass(frozen=True)
class ConvertReport:
    """Every mode's result, plus the data the check and the calibration used."""

    model_path: Path
    out_dir: Path
    results: tuple[ModeResult, ...]
    verify_samples: int
    verify_source: str
    calibration_samples: int
    calibration_source: str | None
    keras_accuracy: float | None = None
    min_agreement: float | None = None
    notes: tuple[str, ...] = field(default=())
    max_accuracy_drop: float | None = None
    layer_reports: tuple[LayerReport, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.results:
            raise ValueError("A ConvertReport needs at least one mode result.")

    @property
    def failed(self) -> tuple[ModeResult, ...]:
        """The modes that wrote no file."""
        return tuple(r for r in self.results if not r.ok)

    def raise_for_failures(self) -> None:
        """Raise `ModeFailedError` (exit 1) naming each failed mode, why, and what to try."""
        if self.failed:
            raise ModeFailedError(
                "; ".join(
                    f"mode {r.mode} failed: {r.error.rstrip('.')}. {r.hint.rstrip('.')}"
                    for r in self.failed
                )
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "model": str(self.model_path),
            "out": str(self.out_dir),
            "keras_accuracy": self.keras_accuracy,
            "verify": {"samples": self.verify_samples, "source": self.verify_source},
            "calibration": {"samples": self.calibration_samples, "source": self.calibration_source},
            "min_agreement": self.min_agreement,
            "max_accuracy_drop": self.max_accuracy_drop,
            "layer_reports": {
                lr.mode: [str(p) for p in lr.files] for lr in self.layer_reports
            },
            "modes": [
                {
                    "mode": r.mode,
                    "path": str(r.path) if r.path else None,
                    "size_bytes": r.size_bytes,
                    "size_vs_float32": r.size_vs_float32,
                    "agreement": r.agreement,
                    "max_abs_diff": r.max_abs_diff,
                    "accuracy": r.accuracy,
                    "convert_seconds": r.convert_seconds,
                    "verify_seconds": r.verify_seconds,
                    "error": r.error,
                    "hint": r.hint,
                    "float_layers": list(r.float_layers),
                    "fallback": r.fallback,
                }
                for r in self.results
            ],
        }


@dataclass(frozen=True, eq=False)
class _Inputs:
    """Samples for calibration and for the check, plus how pixels become model input."""

    calibration: CalibrationData | None
    verify_x: np.ndarray
    verify_y: np.ndarray | None
    verify_source: str
    scale: float
    offset: float
    # Samples beside the check's, for checking a --fallback model on data its search did not use.
    holdout_x: np.ndarray | None = None
    holdout_y: np.ndarray | None = None

    def model_input(self, x: np.ndarray) -> np.ndarray:
        """Raw uint8 pixels -> model input (scale/offset); float arrays pass unchanged."""
        if x.dtype == np.uint8:
            return x.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
        return np.asarray(x, dtype=np.float32)


class _Rejected(Exception):
    """A converted mode that runs but fails its check; carries the reason and hint."""

    def __init__(self, reason: str, hint: str, missed_budget: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.hint, self.missed_budget = reason, hint, missed_budget


def as_probabilities(scores: np.ndarray) -> np.ndarray:
    """Keras outputs as probabilities: rows that already are distributions (a softmax head)
    as they are, else their softmax; one sigmoid unit (a binary model) as `[1 - p, p]`.

    So a model that outputs logits is compared probability to probability with
    `EdgeClassifier.predict_proba`, which decides the same from the .tflite graph itself (its
    last op, `edge_runtime.graph`).
    """
    from edge_runtime.scores import as_probabilities as _as_probabilities

    return np.asarray(_as_probabilities(scores), dtype=np.float64)


def _check_options(
    calibration_samples: int, verify_samples: int, min_agreement: float | None
) -> None:
    if calibration_samples < 1:
        raise ConvertError(
            "--calibration-samples must be at least 1. "
            f"Received: calibration_samples={calibration_samples}"
        )
    if verify_samples < 1:
        raise ConvertError(
            f"--verify-samples must be at least 1. Received: verify_samples={verify_samples}"
        )
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise ConvertError(
            "--min-agreement is a fraction between 0 and 1 (e.g. 0.99). "
            f"Received: min_agreement={min_agreement}"
        )


def _pixel_scaling(
    input_scale: float | None, input_offset: float | None, meta: dict[str, Any] | None
) -> tuple[float, float]:
    """`--input-scale`/`--input-offset` checked: (scale, offset) of raw pixels, (1, 0) if left
    out. An edgeship run's own scaling comes from its model.json and may not be overridden."""
    import math

    given = {"input_scale": input_scale, "input_offset": input_offset}
    for name, value in given.items():
        if value is not None and not math.isfinite(value):
            raise ConvertError(f"--{name.replace('_', '-')} must be a finite number. "
                               f"Received: {name}={value}")
    if input_scale == 0:
        raise ConvertError("--input-scale must not be 0. Received: input_scale=0")
    if meta is not None and (input_scale is not None or input_offset is not None):
        raise ConvertError(
            "This model was trained by edgeship: its pixel scaling comes from model.json. "
            f"Leave out --input-scale/--input-offset. Received: input_scale={input_scale}, "
            f"input_offset={input_offset}"
        )
    return (1.0 if input_scale is None else float(input_scale),
            0.0 if input_offset is None else float(input_offset))


def _foreign_metadata(
    signature: ModelSignature,
    class_names: tuple[str, ...] | None,
    resize: str,
    pixel_scaling: tuple[float, float] = (1.0, 0.0),
) -> dict[str, Any]:
    """Metadata for a model edgeship did not train: raw pixels in, class indices as names."""
    names = list(class_names) if class_names else [str(i) for i in range(signature.num_classes)]
    return {
        "schema_version": METADATA_SCHEMA_VERSION,
        "model": "custom",
        "class_names": names,
        "input": {
            "shape": list(signature.input_shape),
            "dtype": "float32",
            "scale": pixel_scaling[0],
            "offset": pixel_scaling[1],
            "color_mode": signature.color_mode,
            "background": "unknown",
            "resize": resize,
        },
    }


def _class_names(
    class_names: str | list[str] | tuple[str, ...] | None,
    labels: str | os.PathLike | None,
    num_classes: int,
) -> tuple[str, ...] | None:
    """`--class-names a,b,c` or `--labels FILE` checked against the model's outputs (or None)."""
    from edge_runtime.labels import resolve_labels

    if class_names is not None and labels is not None:
        raise ConvertError(
            "Pass the class names once: --class-names or --labels, not both. "
            f"Received: class_names={class_names!r}, labels={labels}"
        )
    if isinstance(class_names, str):
        class_names = [n.strip() for n in class_names.split(",")]
    given = class_names if class_names is not None else labels
    if given is None:
        return None
    try:
        return resolve_labels(given, num_classes)
    except EdgeshipError as err:
        raise ConvertError(str(err)) from None


def _file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_own_dataset(meta: dict[str, Any]):
    """The dataset an edgeship model was trained on, as recorded in its model.json."""
    from train.datasets import FASHION_MNIST, load_dataset

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


def _prepare_inputs(
    model_path: Path,
    signature: ModelSignature,
    meta: dict[str, Any] | None,
    modes: tuple[str, ...],
    calibration_samples: int,
    calibration_data: str | os.PathLike | None,
    verify_samples: int,
    resize: str = "stretch",
    class_names: tuple[str, ...] | None = None,
    pixel_scaling: tuple[float, float] = (1.0, 0.0),
) -> _Inputs:
    needs_calibration = any(m in CALIBRATED_MODES for m in modes)
    calibration: CalibrationData | None = None
    if calibration_data is not None:
        calibration = load_calibration_data(
            calibration_data, signature, calibration_samples, resize=resize,
            class_names=class_names,
        )

    if meta is not None:
        scale = float(meta["input"].get("scale", 1.0))
        offset = float(meta["input"].get("offset", 0.0))
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
        return _Inputs(
            calibration=calibration,
            verify_x=data.x_test[idx],
            verify_y=data.y_test[idx],
            verify_source=f"{data.name} test set",
            scale=scale,
            offset=offset,
            holdout_x=data.x_test[held],
            holdout_y=data.y_test[held],
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
        return _Inputs(
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
    return _Inputs(None, x, None, "random pixels (no data given)", *pixel_scaling)


def _io_block(classifier) -> tuple[dict[str, Any], dict[str, Any]]:
    """Input and output dtype/scale/zero point of a loaded `EdgeClassifier`."""

    def block(spec) -> dict[str, Any]:
        return {
            "dtype": spec.dtype.name,
            "scale": float(spec.scale),
            "zero_point": int(spec.zero_point),
        }

    return block(classifier.input_spec), block(classifier.output_spec)


def _convert_one(
    export_dir: str,
    mode: str,
    path: Path,
    base_meta: dict[str, Any],
    inputs: _Inputs,
    keras_probs: np.ndarray,
    int8_io: bool,
    budget: Budget,
    float32_size: int | None,
    progress: ProgressCallback | None,
    model_bytes: bytes | None = None,
    fallback: dict[str, Any] | None = None,
    seconds: float = 0.0,
) -> ModeResult:
    from convert.converter import ModeConversionError, to_tflite
    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.metadata import embed_metadata

    calibrated = mode in CALIBRATED_MODES
    mode_int8_io = bool(int8_io and mode == "int8")
    start = time.perf_counter()
    try:
        if model_bytes is None:
            calib = inputs.model_input(inputs.calibration.x) if calibrated else None
            model_bytes = to_tflite(export_dir, mode, calib, int8_io=mode_int8_io)
    except ModeConversionError as err:
        return ModeResult(mode, error=f"the TFLite converter failed: {err}", hint=FALLBACKS[mode])
    convert_seconds = time.perf_counter() - start + seconds  # + the caller's conversion

    meta = copy.deepcopy(base_meta)
    meta["quantization"] = {
        "mode": mode,
        "calibration_samples": len(inputs.calibration.x) if calibrated else 0,
        "calibration_source": inputs.calibration.source if calibrated else None,
        "int8_io": mode_int8_io,
    }
    if fallback is not None:
        meta["quantization"]["float_layers"] = list(fallback["float_layers"])
        meta["quantization"]["fallback"] = fallback
    if progress:
        progress(mode, "verify", None)
    start = time.perf_counter()
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(embed_metadata(model_bytes, meta))
            try:
                with captured_stderr():  # the interpreter's "Created XNNPACK delegate" line
                    classifier = EdgeClassifier.load(tmp)
                    probs = classifier.predict_proba(inputs.verify_x)
                probs = np.asarray(probs, dtype=np.float64)
                io_in, io_out = _io_block(classifier)
            except (EdgeshipError, RuntimeError, ValueError) as err:
                reason = str(err).replace(str(tmp), str(path))  # name the file it would be
                raise _Rejected(
                    f"the converted model does not run in edge_runtime ({reason})", FALLBACKS[mode]
                ) from None
            if probs.shape != keras_probs.shape:
                raise _Rejected(
                    f"edge_runtime returned shape {probs.shape}, Keras {keras_probs.shape}",
                    FALLBACKS[mode],
                )
            agreement = float(np.mean(probs.argmax(1) == keras_probs.argmax(1)))
            max_abs_diff = float(np.max(np.abs(probs - keras_probs)))
            accuracy = (
                float(np.mean(probs.argmax(1) == inputs.verify_y))
                if inputs.verify_y is not None
                else None
            )
            meta["quantization"]["input"] = io_in
            meta["quantization"]["output"] = io_out
            meta["quantization"]["check"] = {
                "samples": int(len(inputs.verify_x)),
                "source": inputs.verify_source,
                "agreement": round(agreement, 6),
                "max_abs_diff": round(max_abs_diff, 6),
                "accuracy": round(accuracy, 6) if accuracy is not None else None,
            }
            final = embed_metadata(model_bytes, meta)
            keras_accuracy = (
                float(np.mean(keras_probs.argmax(1) == inputs.verify_y))
                if inputs.verify_y is not None
                else None
            )
            drop = None if accuracy is None else keras_accuracy - accuracy
            missed = (budget.min_agreement is not None and agreement < budget.min_agreement) or (
                budget.max_accuracy_drop is not None
                and drop is not None
                and drop > budget.max_accuracy_drop + 1e-12
            )
            if missed and fallback is None:  # a fallback model was chosen on these same samples
                what = (
                    f"top-1 agreement with Keras {agreement:.2%} is below --min-agreement "
                    f"{budget.min_agreement:.2%}"
                    if budget.min_agreement is not None and agreement < budget.min_agreement
                    else f"accuracy {accuracy:.2%} is {drop:.2%} below Keras's, more than "
                    f"--max-accuracy-drop {budget.max_accuracy_drop:.2%}"
                )
                raise _Rejected(
                    what,
                    "Try more or more representative calibration data (--calibration-samples, "
                    "--calibration-data) or a gentler mode (int16x8, dynamic, float16)."
                    if calibrated
                    else "Try a gentler mode (float16 or float32).",
                    missed_budget=True,
                )
            tmp.write_bytes(final)
    except _Rejected as err:
        return ModeResult(mode, error=err.reason, hint=err.hint, missed_budget=err.missed_budget)
    verify_seconds = time.perf_counter() - start
    return ModeResult(
        mode,
        path=path,
        size_bytes=len(final),
        size_vs_float32=len(final) / float32_size if float32_size else None,
        agreement=agreement,
        max_abs_diff=max_abs_diff,
        accuracy=accuracy,
        convert_seconds=convert_seconds,
        verify_seconds=verify_seconds,
        float_layers=tuple(fallback["float_layers"]) if fallback else (),
        fallback=fallback,
    )


def _check_fallback_options(
    fallback: bool,
    budget: Budget,
    modes: tuple[str, ...],
    int8_io: bool,
    max_float_layers: int,
) -> None:
    if not fallback:
        return
    if not budget.given:
        raise ConvertError(
            "--fallback keeps layers in float until a budget holds; give one: "
            "--min-agreement X (e.g. 0.98) or --max-accuracy-drop X (e.g. 0.01). "
            "Received: no budget"
        )
    if not {"int8", "int16x8"} & set(modes):
        raise ConvertError(
            "--fallback works on the int8 and int16x8 modes; add one to --quantize. "
            f"Received: quantize={','.join(modes)}"
        )
    if int8_io and "int8" in modes:
        raise ConvertError(
            "--fallback keeps float input and output (layers in float need them); drop "
            "--int8-io. Received: --int8-io with --fallback"
        )
    if max_float_layers < 1:
        raise ConvertError(
            f"--fallback-max-layers must be at least 1. Received: {max_float_layers}"
        )


def _predictor(meta: dict[str, Any]):
    """(model bytes, pixels) -> probabilities, through `edge_runtime.EdgeClassifier`."""
    from edge_runtime.backends import load_backend
    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.graph import output_head

    backend = load_backend()

    def predict(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
        with captured_stderr():
            interpreter = backend.make_interpreter(model_bytes)
            interpreter.allocate_tensors()
            out = int(interpreter.get_output_details()[0]["index"])
            classifier = EdgeClassifier(  # the head as `EdgeClassifier.load` finds it: a
                interpreter,  # softmax's output is not softmaxed again
                backend,
                metadata=meta,
                size_bytes=len(model_bytes),
                output_head=output_head(model_bytes, out),
            )
            return np.asarray(classifier.predict_proba(x), dtype=np.float64)

    return predict


@dataclass(frozen=True, eq=False)
class _Study:
    """What the layer report and the fallback share for one mode."""

    mode: str
    layer_names: tuple[str, ...]
    predict: Any
    stats: tuple[Any, ...] = ()
    quantizer: Any = None
    ranking: tuple[Any, ...] | None = None
    ranking_agreement: float | None = None
    ranking_error: float | None = None
    ranking_samples: int = 0
    keras_probs: Any = None  # model input -> Keras probabilities
    stats_samples: int = 0
    # Why the layers could not be kept in float one at a time (no ranking, no fallback).
    problem: str | None = None


def _study(
    export_dir: str,
    mode: str,
    plain: bytes,
    float32_bytes: bytes | None,
    layer_names: list[str],
    base_meta: dict[str, Any],
    inputs: _Inputs,
    keras_probs: np.ndarray,
    ranked: bool,
    with_stats: bool,
    keras_fn: Any = None,
) -> _Study:
    from convert.fallback import candidates, check, rank
    from convert.layers import STATS_SAMPLES, layer_stats
    from convert.partial16 import PartialInt16x8
    from convert.selective import SelectiveQuantizer

    predict = _predictor(base_meta)
    stats: tuple[Any, ...] = ()
    if with_stats and float32_bytes is not None:
        stats = tuple(
            layer_stats(plain, float32_bytes, layer_names, inputs.model_input(inputs.verify_x))
        )
    quantizer = ranking = ranking_agreement = ranking_error = problem = None
    n = 0
    if ranked:
        calib = inputs.model_input(inputs.calibration.x)
        n = min(len(inputs.verify_x), RANKING_SAMPLES)
        x, ref = inputs.verify_x[:n], keras_probs[:n]
        try:
            if mode == "int16x8":
                quantizer = PartialInt16x8.convert(export_dir, calib, plain)
            else:
                quantizer = SelectiveQuantizer(export_dir, calib)
            ranking = tuple(
                rank(quantizer, candidates(quantizer.graph, layer_names), predict, x, ref)
            )
        except (EdgeshipError, RuntimeError, ValueError) as err:
            # A model whose layers cannot be re-quantized or run one by one: the report goes
            # without the ranking columns, and --fallback fails this mode saying why.
            quantizer = ranking = None
            problem = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        base = check(predict(plain, x), ref, None)
        ranking_agreement, ranking_error = base.agreement, base.output_error
    return _Study(
        mode=mode,
        layer_names=tuple(layer_names),
        predict=predict,
        stats=stats,
        quantizer=quantizer,
        ranking=ranking,
        ranking_agreement=ranking_agreement,
        ranking_error=ranking_error,
        ranking_samples=n,
        keras_probs=keras_fn,
        stats_samples=min(len(inputs.verify_x), STATS_SAMPLES) if stats else 0,
        problem=problem,
    )


def _fallback_one(
    started: float,
    study: _Study,
    export_dir: str,
    path: Path,
    base_meta: dict[str, Any],
    inputs: _Inputs,
    keras_probs: np.ndarray,
    budget: Budget,
    max_float_layers: int,
    float32_size: int | None,
    progress: ProgressCallback | None,
) -> ModeResult:
    from convert.fallback import check, search

    n = len(inputs.verify_x)
    result = search(
        study.quantizer,
        study.layer_names,
        study.predict,
        inputs.verify_x,
        keras_probs,
        inputs.verify_y,
        budget,
        max_float_layers,
        ranking=study.ranking,
    )
    reached = f"agreement {result.after.agreement:.2%}"
    if result.after.accuracy_drop is not None:
        reached += f", accuracy drop {result.after.accuracy_drop:.2%}"
    kept = ", ".join(result.float_layers) or "none"
    if not result.met:
        return ModeResult(
            study.mode,
            error=f"--fallback reached {reached} on {n} search samples with "
            f"{len(result.float_layers)} layer(s) in float ({kept}), short of "
            f"{budget.describe()}; it stopped because {result.stopped}",
            hint="Allow more float layers (--fallback-max-layers), loosen the budget, "
            + ("or try int16x8 or float16." if study.mode == "int8" else "or try float16."),
        )
    held = None
    if inputs.holdout_x is not None:
        held = check(
            study.predict(result.model_bytes, inputs.holdout_x),
            study.keras_probs(inputs.model_input(inputs.holdout_x)),
            inputs.holdout_y,
        )
    info = {
        "float_layers": list(result.float_layers),
        "float_ops": list(result.float_nodes),
        "budget": {
            "min_agreement": budget.min_agreement,
            "max_accuracy_drop": budget.max_accuracy_drop,
        },
        "max_float_layers": max_float_layers,
        "plain": result.before.to_dict(),
        "search": result.after.to_dict(),
        "held_out": held.to_dict() if held is not None else None,
        "held_out_meets_budget": budget.met(held) if held is not None else None,
        "steps": [
            {"layer": s.layer, "agreement": round(s.check.agreement, 6), "kept": s.kept}
            for s in result.steps
        ],
    }
    return _convert_one(
        export_dir,
        study.mode,
        path,
        base_meta,
        inputs,
        keras_probs,
        False,
        budget,
        float32_size,
        progress,
        model_bytes=result.model_bytes,
        fallback=info,
        seconds=time.perf_counter() - started,  # the plain conversion, the study, the search
    )


def _write_layer_report(study: _Study, out: Path, kept: tuple[str, ...]) -> LayerReport:
    """Write `out/quantization/<mode>_layers.{csv,md,png}`; return the report."""
    from convert.layers import plot_layers, worst_first

    by_layer = {r.candidate.layer: r.check for r in study.ranking or ()}
    rows = [
        dataclasses.replace(
            row,
            agreement_if_float=by_layer[row.layer].agreement if row.layer in by_layer else None,
            output_error_if_float=(
                by_layer[row.layer].output_error if row.layer in by_layer else None
            ),
            error_removed=(
                1.0 - by_layer[row.layer].output_error / study.ranking_error
                if row.layer in by_layer and study.ranking_error
                else None
            ),
            kept_float=row.layer in kept,
        )
        for row in study.stats
    ]
    report = LayerReport(
        mode=study.mode,
        rows=tuple(worst_first(rows)),
        samples=study.stats_samples,
        agreement=study.ranking_agreement,
        ranking_samples=study.ranking_samples,
    )
    folder = out / "quantization"
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / f"{study.mode}_layers"
    files = (base.with_suffix(".csv"), base.with_suffix(".md"), base.with_suffix(".png"))
    atomic_write_text(files[0], report.to_csv())
    atomic_write_text(files[1], report.to_markdown())
    with atomic_path(files[2]) as tmp:
        plot_layers(report, tmp)
    return dataclasses.replace(report, files=files)


def convert_model(
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    modes: str | list[str] | tuple[str, ...] | None = None,
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    calibration_data: str | os.PathLike | None = None,
    int8_io: bool = False,
    min_agreement: float | None = None,
    verify_samples: int = DEFAULT_VERIFY_SAMPLES,
    progress: ProgressCallback | None = None,
    max_accuracy_drop: float | None = None,
    layer_report: bool = False,
    fallback: bool = False,
    fallback_max_layers: int = DEFAULT_MAX_FLOAT_LAYERS,
    class_names: str | list[str] | tuple[str, ...] | None = None,
    labels: str | os.PathLike | None = None,
    resize: str | None = None,
    input_scale: float | None = None,
    input_offset: float | None = None,
) -> ConvertReport:
    """Convert a `.keras`/`.h5` model to `out_dir/model_<mode>.tflite` for each mode.

    Each file carries the `edgeship` metadata and the result of its check against Keras
    (through `edge_runtime.EdgeClassifier`). A mode that fails writes nothing (and removes a
    stale file of that mode); the others go on. Check `report.failed` or call
    `report.raise_for_failures()`. Bad input raises `ConvertError` before anything is written.

    `layer_report` writes `out_dir/quantization/<mode>_layers.{csv,md,png}` for int8 and
    int16x8 (`convert.layers`). `fallback` keeps int8's or int16x8's costliest layers in float
    until the budget (`min_agreement`, `max_accuracy_drop`) holds (`convert.fallback`).

    `class_names` (a list, or "a,b,c") or `labels` (a labels file) name the outputs in the
    model's own index order; they go into the metadata. `resize` ("stretch" or "crop") is how
    photos are fitted to the input, recorded so calibration, bench and the runtime agree. A
    model from outside the run (not `out/model.keras`) has its path and sha256 recorded
    (`source_model`): bench measures it as the desktop reference.

    `input_scale`/`input_offset`: how a raw pixel p becomes the model's input, `p * S + O`, for
    a model edgeship did not train whose normalization is outside it (trained on `x / 255`:
    S = 1/255; on [-1, 1]: S = 1/127.5, O = -1). Photos are scaled so for calibration and the
    check, and the scaling is recorded for bench and the runtime. Left out: raw 0-255 pixels
    (a model with its own `Rescaling` layer).
    """
    mode_list = parse_modes(modes)
    _check_options(calibration_samples, verify_samples, min_agreement)
    budget = Budget(min_agreement=min_agreement, max_accuracy_drop=max_accuracy_drop)
    _check_fallback_options(fallback, budget, mode_list, int8_io, fallback_max_layers)
    if int8_io and "int8" not in mode_list:
        raise ConvertError(
            "--int8-io makes the int8 model's input and output int8; it needs the int8 mode. "
            f"Add int8 to --quantize. Received: quantize={','.join(mode_list)}"
        )
    if layer_report and not set(mode_list) & set(CALIBRATED_MODES):
        raise ConvertError(
            "--layer-report compares a quantized model's layers with float's; it needs the "
            f"int8 or int16x8 mode. Add one to --quantize. Received: quantize={','.join(mode_list)}"
        )

    from edge_runtime.preprocess import RESIZE_RULES

    if resize is not None and resize not in RESIZE_RULES:
        raise ConvertError(
            f"--resize must be one of {', '.join(RESIZE_RULES)}. Received: resize={resize!r}"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConvertError(f"--out must be a directory. Received: out={out}")
    model_path = check_model_file(model_path)
    if calibration_data is not None and not Path(calibration_data).expanduser().exists():
        raise ConvertError(
            "Calibration data not found: pass an image folder or a .npy array. "
            f"Received: calibration_data={calibration_data}"
        )
    model = load_keras_model(model_path)
    signature = model_signature(model)
    names = _class_names(class_names, labels, signature.num_classes)
    meta = read_run_metadata(model_path)
    if meta is not None and names is not None and list(names) != meta.get("class_names"):
        raise ConvertError(
            "This model was trained by edgeship: its class names come from its training data "
            "(model.json), and bench would take renamed files for another model's. Leave out "
            f"--class-names/--labels. Received: class_names={list(names)[:10]}, "
            f"model.json={list(meta.get('class_names') or [])[:10]}"
        )
    trained_rule = ((meta or {}).get("input") or {}).get("resize", "stretch")
    if meta is not None and resize not in (None, trained_rule):
        raise ConvertError(
            f"This model was trained by edgeship on images fitted by {trained_rule!r}; photos "
            f"must be prepared the same way. Leave out --resize. Received: resize={resize!r}"
        )
    resize = resize or trained_rule
    pixel_scaling = _pixel_scaling(input_scale, input_offset, meta)
    if meta is not None:
        meta_shape = tuple(int(d) for d in meta["input"].get("shape", ()))
        if meta_shape != signature.input_shape:
            raise ConvertError(
                f"model.json says the input is {meta_shape}, the model takes "
                f"{signature.input_shape}; they belong to different models. "
                f"Received: path={model_path}"
            )
    inputs = _prepare_inputs(
        model_path,
        signature,
        meta,
        mode_list,
        calibration_samples,
        calibration_data,
        verify_samples,
        resize,
        names,
        pixel_scaling,
    )
    if meta is not None:
        base_meta = copy.deepcopy(meta)
        base_meta.pop("quantization", None)
    else:
        folder_names = inputs.calibration.class_names if inputs.calibration else None
        base_meta = _foreign_metadata(signature, folder_names, resize, pixel_scaling)
    if max_accuracy_drop is not None and inputs.verify_y is None:
        raise ConvertError(
            "--max-accuracy-drop needs labelled data: an edgeship run (model.json), or "
            "--calibration-data DIR with one folder per class (as many as the model's "
            "classes). Use --min-agreement otherwise. Received: path="
            f"{model_path}"
        )
    if names is not None:
        base_meta["class_names"] = list(names)
    if model_path.resolve() != (out / "model.keras").resolve():
        # A Keras file outside the run: bench finds the desktop reference through this.
        base_meta["source_model"] = {
            "path": str(model_path.resolve()),
            "sha256": _file_sha256(model_path),
        }

    from convert.converter import ModeConversionError, saved_model, to_tflite

    keras_x = inputs.model_input(inputs.verify_x)
    keras_probs = as_probabilities(model.predict(keras_x, batch_size=256, verbose=0))
    keras_accuracy = (
        float(np.mean(keras_probs.argmax(1) == inputs.verify_y))
        if inputs.verify_y is not None
        else None
    )
    check_output_dir(out)  # a read-only or full --out fails before the conversions
    results: list[ModeResult] = []
    layer_reports: list[LayerReport] = []
    layer_names = [layer.name for layer in model.layers]

    def keras_fn(x: np.ndarray) -> np.ndarray:
        return as_probabilities(model.predict(x, batch_size=256, verbose=0))

    with saved_model(model, signature.input_shape) as export_dir:
        float32_bytes: bytes | None = None
        if "float32" not in mode_list or layer_report:
            with contextlib.suppress(ModeConversionError):
                float32_bytes = to_tflite(export_dir, "float32")
        float32_size = len(float32_bytes) if float32_bytes is not None else None
        for mode in mode_list:
            if progress:
                progress(mode, "convert", None)
            path = out / tflite_name(mode)
            deep = mode in CALIBRATED_MODES and (layer_report or fallback)
            plain: bytes | None = None
            started = time.perf_counter()
            if deep:
                with contextlib.suppress(ModeConversionError):  # _convert_one reports it
                    calib = inputs.model_input(inputs.calibration.x)
                    plain = to_tflite(export_dir, mode, calib, int8_io=int8_io and mode == "int8")
            result = _convert_one(
                export_dir,
                mode,
                path,
                base_meta,
                inputs,
                keras_probs,
                int8_io,
                budget,
                float32_size,
                progress,
                model_bytes=plain,
                seconds=time.perf_counter() - started,
            )
            if plain is not None and (result.ok or result.missed_budget):
                # (a model that does not run in edge_runtime has nothing to study)
                study = _study(
                    export_dir,
                    mode,
                    plain,
                    float32_bytes,
                    layer_names,
                    base_meta,
                    inputs,
                    keras_probs,
                    ranked=layer_report or result.missed_budget,
                    with_stats=layer_report,
                    keras_fn=keras_fn,
                )
                if fallback and result.missed_budget and study.quantizer is None:
                    result = ModeResult(
                        mode,
                        error=f"--fallback cannot keep layers of this {mode} model in float "
                        f"({study.problem})",
                        hint="Try float16 or dynamic, or loosen the budget.",
                    )
                elif fallback and result.missed_budget:
                    if progress:
                        progress(mode, "fallback", None)
                    result = _fallback_one(
                        started,
                        study,
                        export_dir,
                        path,
                        base_meta,
                        inputs,
                        keras_probs,
                        budget,
                        fallback_max_layers,
                        float32_size,
                        progress,
                    )
                if layer_report:
                    layer_reports.append(
                        _write_layer_report(study, out, result.float_layers if result.ok else ())
                    )
            if mode == "float32" and result.ok:
                float32_size = result.size_bytes
                result = dataclasses.replace(result, size_vs_float32=1.0)
            if not result.ok and path.exists():
                path.unlink()  # a stale file from an earlier model would pass for this one's
            results.append(result)
            if progress:
                progress(mode, "done" if result.ok else "failed", result)

    calib = inputs.calibration
    return ConvertReport(
        model_path=model_path,
        out_dir=out,
        results=tuple(results),
        verify_samples=int(len(inputs.verify_x)),
        verify_source=inputs.verify_source,
        calibration_samples=int(len(calib.x)) if calib is not None else 0,
        calibration_source=calib.source if calib is not None else None,
        keras_accuracy=keras_accuracy,
        min_agreement=min_agreement,
        max_accuracy_drop=max_accuracy_drop,
        layer_reports=tuple(layer_reports),
    )


def convert_run(run_dir: str | os.PathLike, **options: Any) -> ConvertReport:
    """Convert `run_dir/model.keras` into `run_dir/model_<mode>.tflite` (for `pipeline`)."""
    run = Path(run_dir)
    return convert_model(run / "model.keras", run, **options)
