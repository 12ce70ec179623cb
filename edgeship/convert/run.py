"""Convert a Keras model into each quantization mode, check each against Keras, write files."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from edge_runtime.files import check_output_dir
from edgeship.convert.calibration import DEFAULT_CALIBRATION_SAMPLES
from edgeship.convert.engine import (
    Recipe,
    check_engine,
    check_recipe,
    load_recipe,
    make_mode,
    pick_engine,
    write_recipe,
)
from edgeship.convert.errors import ConvertError
from edgeship.convert.fallback import DEFAULT_MAX_FLOAT_LAYERS, Budget
from edgeship.convert.inputs import DEFAULT_VERIFY_SAMPLES, VERIFY_SEED, prepare_inputs
from edgeship.convert.layers import LayerReport
from edgeship.convert.metadata import METADATA_SCHEMA_VERSION, base_metadata
from edgeship.convert.modes import CALIBRATED_MODES, parse_modes
from edgeship.convert.options import (
    check_calibration_path,
    check_options,
    check_out,
    input_settings,
    resolve_class_names,
)
from edgeship.convert.rescue import check_precision
from edgeship.convert.results import ConvertReport, ModeResult, ProgressCallback, tflite_name
from edgeship.convert.source import ModelSource, keras_source
from edgeship.convert.study import study_mode
from edgeship.convert.torch_source import split_torch_spec, torch_source
from edgeship.convert.verify import accuracy, convert_and_check
from edgeship.train.training import read_run_metadata

__all__ = [
    "DEFAULT_VERIFY_SAMPLES",
    "METADATA_SCHEMA_VERSION",
    "VERIFY_SEED",
    "ConvertReport",
    "ModeResult",
    "ProgressCallback",
    "convert_model",
    "convert_run",
    "convert_source",
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
    input_mean: str | list[float] | None = None,
    input_std: str | list[float] | None = None,
    author: str | None = None,
    license: str | None = None,  # noqa: A002 - the metadata field's name
    engine: str = "auto",
    recipe: str | os.PathLike | None = None,
    fallback_precision: str = "hybrid",
) -> ConvertReport:
    """Convert a `.keras`/`.h5` model, or a PyTorch `FILE.pt2` / `FILE.py:FUNCTION`, to
    `out_dir/model_<mode>.tflite` for each mode.

    The Keras front end (`edgeship.convert.source.keras_source`) or the PyTorch one
    (`edgeship.convert.torch_source.torch_source`, litert-torch) makes the float32 `.tflite`; every
    other step is `convert_source`'s (its docstring has the options). Bad input raises
    `ConvertError` before anything is written.
    """
    options: dict[str, Any] = dict(
        modes=modes,
        calibration_samples=calibration_samples,
        calibration_data=calibration_data,
        int8_io=int8_io,
        min_agreement=min_agreement,
        verify_samples=verify_samples,
        progress=progress,
        max_accuracy_drop=max_accuracy_drop,
        layer_report=layer_report,
        fallback=fallback,
        fallback_max_layers=fallback_max_layers,
        class_names=class_names,
        labels=labels,
        resize=resize,
        input_scale=input_scale,
        input_offset=input_offset,
        input_mean=input_mean,
        input_std=input_std,
        author=author,
        license=license,
        engine=engine,
        recipe=recipe,
        fallback_precision=fallback_precision,
    )
    _check_early(out_dir, **options)
    if split_torch_spec(model_path) is not None:  # FILE.pt2 or FILE.py:FUNCTION
        return convert_source(torch_source(model_path), out_dir, **options)
    with keras_source(model_path) as source:
        return convert_source(source, out_dir, **options)


def _check_early(
    out_dir: str | os.PathLike, **o: Any
) -> tuple[tuple[str, ...], Budget, Recipe | None]:
    """The checks that need no model: options, `--out`, `--calibration-data`, `--recipe`;
    the modes, the budget and the `--recipe` they read."""
    mode_list = parse_modes(o["modes"])
    budget = check_options(
        mode_list,
        calibration_samples=o["calibration_samples"],
        verify_samples=o["verify_samples"],
        min_agreement=o["min_agreement"],
        max_accuracy_drop=o["max_accuracy_drop"],
        int8_io=o["int8_io"],
        layer_report=o["layer_report"],
        fallback=o["fallback"],
        fallback_max_layers=o["fallback_max_layers"],
        resize=o["resize"],
    )
    check_engine(o["engine"])
    check_precision(o["fallback_precision"])
    user_recipe = load_recipe(o["recipe"]) if o["recipe"] is not None else None
    check_out(Path(out_dir))
    check_calibration_path(o["calibration_data"])
    return mode_list, budget, user_recipe


def convert_source(
    source: ModelSource,
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
    input_mean: str | list[float] | None = None,
    input_std: str | list[float] | None = None,
    author: str | None = None,
    license: str | None = None,  # noqa: A002 - the metadata field's name
    engine: str = "auto",
    recipe: str | os.PathLike | None = None,
    fallback_precision: str = "hybrid",
) -> ConvertReport:
    """Convert a framework front end's `ModelSource` to `out_dir/model_<mode>.tflite` per mode.

    float32 is the source's own flatbuffer; every other mode comes from it through
    ai-edge-quantizer (`edgeship.convert.engine`), or through TensorFlow's converter for a Keras
    source where `engine` says so (`auto` picks per mode, `edgeship.convert.engine.AUTO_ENGINE`).
    `recipe` (a JSON file, ai-edge-quantizer's format) replaces edgeship's recipe for the quantized
    modes.
    `fallback_precision`: how `--fallback` rescues a layer: "hybrid" (int8 weights, float
    compute; `edgeship.convert.rescue`) or "float" (the layer as in float32).

    Each file carries the `edgeship` metadata and the result of its check against the source's
    `reference` (through `edge_runtime.EdgeClassifier`). A mode that fails writes nothing (and
    removes a stale file of that mode); the others go on. Check `report.failed` or call
    `report.raise_for_failures()`. Bad input raises `ConvertError` before anything is written.

    `layer_report` writes `out_dir/quantization/<mode>_layers.{csv,md,png}` for int8 and
    int16x8 (`edgeship.convert.layers`). `fallback` keeps int8's or int16x8's costliest layers in
    float until the budget (`min_agreement`, `max_accuracy_drop`) holds
    (`edgeship.convert.fallback`).

    `class_names` (a list, or "a,b,c") or `labels` (a labels file) name the outputs in the
    model's own index order; they go into the metadata. `resize` ("stretch" or "crop") is how
    photos are fitted to the input, recorded so calibration, bench and the runtime agree. A
    model from outside the run (not `out/model.keras`) has its path and sha256 recorded
    (`source_model`): bench measures it as the desktop reference.

    `input_scale`/`input_offset`: how a raw pixel p becomes the model's input, `p * S + O`, for
    a model edgeship did not train whose normalization is outside it (trained on `x / 255`:
    S = 1/255; on [-1, 1]: S = 1/127.5, O = -1). Photos are scaled so for calibration and the
    check, and the scaling is recorded for bench and the runtime. Left out: raw 0-255 pixels
    (a model with its own `Rescaling` layer). `input_mean`/`input_std` ("R,G,B" or lists):
    per-channel normalization of pixels scaled to [0, 1], `(p / 255 - mean) / std` (PyTorch's
    and ImageNet's convention), recorded per channel.

    Every file also carries the standard TFLite Model Metadata (name, version, normalization,
    the labels file packed in), for MediaPipe Tasks and Android Studio; `author`/`license` go
    into it when given.
    """
    mode_list, budget, user_recipe = _check_early(
        out_dir,
        modes=modes,
        calibration_samples=calibration_samples,
        calibration_data=calibration_data,
        int8_io=int8_io,
        min_agreement=min_agreement,
        verify_samples=verify_samples,
        max_accuracy_drop=max_accuracy_drop,
        layer_report=layer_report,
        fallback=fallback,
        fallback_max_layers=fallback_max_layers,
        resize=resize,
        engine=engine,
        recipe=recipe,
        fallback_precision=fallback_precision,
    )
    if user_recipe is not None and recipe is not None:
        check_recipe(user_recipe, source.float32_tflite, recipe)
    engines = {m: pick_engine(m, engine, source) for m in mode_list if m != "float32"}
    out = Path(out_dir)
    model_path = source.source_model
    signature = source.signature
    names = resolve_class_names(class_names, labels, signature.num_classes)
    meta = read_run_metadata(model_path)
    resize, pixel_scaling = input_settings(
        model_path,
        signature,
        meta,
        names,
        resize,
        input_scale,
        input_offset,
        input_mean,
        input_std,
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
    # The standard TFLite metadata's author and license (edge_runtime.metadata.standard_write).
    base_meta.update({k: v for k, v in (("author", author), ("license", license)) if v})
    if "source_model" in base_meta:  # bench and deploy mobile find the desktop model by it
        base_meta["source_model"].update(
            framework=source.framework, logits=source.outputs_logits, **source.recorded
        )

    keras_fn = source.probabilities
    keras_probs = keras_fn(inputs.model_input(inputs.verify_x))
    check_output_dir(out)  # a read-only or full --out fails before the conversions
    results: list[ModeResult] = []
    layer_reports: list[LayerReport] = []
    layer_names = list(source.layer_names)
    export_dir = source.saved_model_dir
    float32_bytes = source.float32_tflite
    float32_size: int | None = len(float32_bytes)
    for mode in mode_list:
        if progress:
            progress(mode, "convert", None)
        path = out / tflite_name(mode)
        started = time.perf_counter()
        made = make_mode(source, mode, engines.get(mode, "converter"), inputs, int8_io, user_recipe)
        if isinstance(made, ModeResult):
            result = made
        else:
            plain = made.model_bytes
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
                engine=made.engine,
            )
            if result.ok and mode != "float32":
                write_recipe(out, mode, made)
            # (a model that does not run in edge_runtime has nothing to study)
            if (
                mode in CALIBRATED_MODES
                and (layer_report or fallback)
                and (result.ok or result.missed_budget)
            ):
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
                    precision=fallback_precision,
                    engine=made.engine,
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
