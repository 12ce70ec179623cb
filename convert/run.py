"""Convert a Keras model into each quantization mode, check each against Keras, write files."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from convert.calibration import DEFAULT_CALIBRATION_SAMPLES
from convert.errors import ConvertError
from convert.fallback import DEFAULT_MAX_FLOAT_LAYERS
from convert.inputs import DEFAULT_VERIFY_SAMPLES, VERIFY_SEED, prepare_inputs
from convert.layers import LayerReport
from convert.loading import check_model_file, load_keras_model, model_signature
from convert.metadata import METADATA_SCHEMA_VERSION, base_metadata
from convert.modes import CALIBRATED_MODES, parse_modes
from convert.options import (
    check_calibration_path,
    check_options,
    check_out,
    input_settings,
    resolve_class_names,
)
from convert.results import ConvertReport, ModeResult, ProgressCallback, tflite_name
from convert.study import study_mode
from convert.verify import accuracy, convert_and_check, keras_probabilities
from edge_runtime.files import check_output_dir
from train.training import read_run_metadata

__all__ = [
    "DEFAULT_VERIFY_SAMPLES",
    "METADATA_SCHEMA_VERSION",
    "VERIFY_SEED",
    "ConvertReport",
    "ModeResult",
    "ProgressCallback",
    "convert_model",
    "convert_run",
    "tflite_name",
]


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
    author: str | None = None,
    license: str | None = None,  # noqa: A002 - the metadata field's name
    compare_float32: bool = True,
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

    Every file also carries the standard TFLite Model Metadata (name, version, normalization,
    the labels file packed in), for MediaPipe Tasks and Android Studio; `author`/`license` go
    into it when given. `compare_float32=False` skips the float32 conversion made only to
    report each file's size against float32 (`size_vs_float32` is then None).
    """
    mode_list = parse_modes(modes)
    budget = check_options(
        mode_list,
        calibration_samples=calibration_samples,
        verify_samples=verify_samples,
        min_agreement=min_agreement,
        max_accuracy_drop=max_accuracy_drop,
        int8_io=int8_io,
        layer_report=layer_report,
        fallback=fallback,
        fallback_max_layers=fallback_max_layers,
        resize=resize,
    )
    out = Path(out_dir)
    check_out(out)
    model_path = check_model_file(model_path)
    check_calibration_path(calibration_data)
    model = load_keras_model(model_path)
    signature = model_signature(model)
    names = resolve_class_names(class_names, labels, signature.num_classes)
    meta = read_run_metadata(model_path)
    resize, pixel_scaling = input_settings(
        model_path, signature, meta, names, resize, input_scale, input_offset
    )
    inputs = prepare_inputs(
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
    if max_accuracy_drop is not None and inputs.verify_y is None:
        raise ConvertError(
            "--max-accuracy-drop needs labelled data: an edgeship run (model.json), or "
            "--calibration-data DIR with one folder per class (as many as the model's "
            "classes). Use --min-agreement otherwise. Received: path="
            f"{model_path}"
        )
    base_meta = base_metadata(
        meta, signature, inputs, names, resize, pixel_scaling, model_path, out
    )
    # The standard TFLite metadata's author and license (edge_runtime.standard_metadata_write).
    base_meta.update({k: v for k, v in (("author", author), ("license", license)) if v})

    from convert.converter import ModeConversionError, saved_model, to_tflite

    def keras_fn(x: np.ndarray) -> np.ndarray:
        return keras_probabilities(model, x)

    keras_probs = keras_fn(inputs.model_input(inputs.verify_x))
    check_output_dir(out)  # a read-only or full --out fails before the conversions
    results: list[ModeResult] = []
    layer_reports: list[LayerReport] = []
    layer_names = [layer.name for layer in model.layers]

    with saved_model(model, signature.input_shape) as export_dir:
        float32_bytes: bytes | None = None
        if ("float32" not in mode_list and (compare_float32 or fallback)) or layer_report:
            with contextlib.suppress(ModeConversionError):
                float32_bytes = to_tflite(export_dir, "float32")
        float32_size = len(float32_bytes) if float32_bytes is not None else None
        for mode in mode_list:
            if progress:
                progress(mode, "convert", None)
            path = out / tflite_name(mode)
            plain: bytes | None = None
            started = time.perf_counter()
            if mode in CALIBRATED_MODES and (layer_report or fallback):
                with contextlib.suppress(ModeConversionError):  # convert_and_check reports it
                    plain = to_tflite(
                        export_dir, mode, inputs.calibration_input(),
                        int8_io=int8_io and mode == "int8",
                    )
            result = convert_and_check(
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
            # (a model that does not run in edge_runtime has nothing to study)
            if plain is not None and (result.ok or result.missed_budget):
                result, report = study_mode(
                    result,
                    started,
                    export_dir,
                    path,
                    plain,
                    float32_bytes,
                    layer_names,
                    base_meta,
                    inputs,
                    keras_probs,
                    keras_fn,
                    budget,
                    layer_report=layer_report,
                    fallback=fallback,
                    max_float_layers=fallback_max_layers,
                    float32_size=float32_size,
                    progress=progress,
                )
                if report is not None:
                    layer_reports.append(report)
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
        keras_accuracy=accuracy(keras_probs, inputs.verify_y),
        min_agreement=min_agreement,
        max_accuracy_drop=max_accuracy_drop,
        layer_reports=tuple(layer_reports),
    )


def convert_run(run_dir: str | os.PathLike, **options: Any) -> ConvertReport:
    """Convert `run_dir/model.keras` into `run_dir/model_<mode>.tflite` (for `pipeline`)."""
    run = Path(run_dir)
    return convert_model(run / "model.keras", run, **options)
