"""The layer report and `--fallback` for one quantized mode: rank layers, keep some in float."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeshipError
from edge_runtime.files import atomic_path, atomic_write_text
from edgeship.convert.fallback import RANKING_SAMPLES, Budget
from edgeship.convert.inputs import CheckInputs
from edgeship.convert.layers import LayerReport
from edgeship.convert.results import ModeResult, ProgressCallback
from edgeship.convert.selective import PartialQuantizer
from edgeship.convert.verify import convert_and_check
from edgeship.train.quiet import captured_stderr


def _predictor(meta: dict[str, Any]) -> Callable[[bytes, np.ndarray], np.ndarray]:
    """(model bytes, pixels) -> probabilities, through `edge_runtime.EdgeClassifier`."""
    from edge_runtime.backends import load_backend
    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.metadata.graph import output_head

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
    predict: Callable[[bytes, np.ndarray], np.ndarray]
    stats: tuple[Any, ...] = ()
    quantizer: Any = None
    ranking: tuple[Any, ...] | None = None
    ranking_agreement: float | None = None
    ranking_error: float | None = None
    ranking_samples: int = 0
    stats_samples: int = 0
    float32_size: int | None = None
    # Why the layers could not be kept in float one at a time (no ranking, no fallback).
    problem: str | None = None


def _study(
    export_dir: str | None,
    mode: str,
    plain: bytes,
    float32_bytes: bytes,
    layer_names: list[str],
    base_meta: dict[str, Any],
    inputs: CheckInputs,
    keras_probs: np.ndarray,
    ranked: bool,
    with_stats: bool,
    precision: str = "float",
    engine: str = "converter",
) -> _Study:
    from edgeship.convert.fallback import candidates, check, rank
    from edgeship.convert.layers import STATS_SAMPLES, layer_stats
    from edgeship.convert.partial16 import PartialInt16x8
    from edgeship.convert.rescue import RecipeQuantizer
    from edgeship.convert.selective import SelectiveQuantizer

    predict = _predictor(base_meta)
    stats: tuple[Any, ...] = ()
    if with_stats and float32_bytes is not None:
        stats = tuple(
            layer_stats(plain, float32_bytes, layer_names, inputs.model_input(inputs.verify_x))
        )
    quantizer: PartialQuantizer | None = None
    ranking = ranking_agreement = ranking_error = problem = None
    n = 0
    if ranked:
        calib = inputs.calibration_input()
        n = min(len(inputs.verify_x), RANKING_SAMPLES)
        x, ref = inputs.verify_x[:n], keras_probs[:n]
        try:
            if precision == "hybrid" or engine == "quantizer" or export_dir is None:
                quantizer = RecipeQuantizer(float32_bytes, mode, calib, precision)
            elif mode == "int16x8":
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
        stats_samples=min(len(inputs.verify_x), STATS_SAMPLES) if stats else 0,
        float32_size=len(float32_bytes) if float32_bytes is not None else None,
        problem=problem,
    )


def _fallback_one(
    started: float,
    study: _Study,
    export_dir: str | None,
    path: Path,
    base_meta: dict[str, Any],
    inputs: CheckInputs,
    keras_probs: np.ndarray,
    keras_fn: Callable[[np.ndarray], np.ndarray],
    budget: Budget,
    max_float_layers: int,
    float32_size: int | None,
    progress: ProgressCallback | None,
    plain_size: int,
    precision: str,
) -> ModeResult:
    from edgeship.convert.fallback import check, search

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
    if not result.met:
        reached = f"agreement {result.after.agreement:.2%}"
        if result.after.accuracy_drop is not None:
            reached += f", accuracy drop {result.after.accuracy_drop:.2%}"
        kept = ", ".join(result.float_layers) or "none"
        return ModeResult(
            study.mode,
            error=f"--fallback reached {reached} on {len(inputs.verify_x)} search samples with "
            f"{len(result.float_layers)} layer(s) in float ({kept}), short of "
            f"{budget.describe()}; it stopped because {result.stopped}",
            hint="Allow more float layers (--fallback-max-layers), loosen the budget, "
            + ("or try int16x8 or float16." if study.mode == "int8" else "or try float16."),
        )
    held = None
    if inputs.holdout_x is not None:
        held = check(
            study.predict(result.model_bytes, inputs.holdout_x),
            keras_fn(inputs.model_input(inputs.holdout_x)),
            inputs.holdout_y,
        )
    recipe = getattr(study.quantizer, "recipe", None)
    info: dict[str, Any] = {
        "precision": precision,
        "engine": "quantizer" if recipe is not None else "converter",
        "float_layers": list(result.float_layers),
        "layers": [{"name": n, "precision": precision} for n in result.float_layers],
        "float_ops": list(result.float_nodes),
        # Sizes of the flatbuffers without metadata: the rescued model against plain int8's
        # (or int16x8's) and float32's.
        "size_vs_plain": round(len(result.model_bytes) / plain_size, 4),
        "size_vs_float32": (
            round(len(result.model_bytes) / study.float32_size, 4) if study.float32_size else None
        ),
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
    checked = convert_and_check(
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
        engine=info["engine"],
    )
    if checked.ok and recipe is not None:
        from edgeship.convert.engine import Quantized, write_recipe

        made = Quantized(result.model_bytes, recipe(result.float_nodes))
        write_recipe(path.parent, study.mode, made)
    return checked


def _write_layer_report(study: _Study, out: Path, kept: tuple[str, ...]) -> LayerReport:
    """Write `out/quantization/<mode>_layers.{csv,md,png}`; return the report."""
    from edgeship.convert.layers import plot_layers, worst_first

    by_layer = {r.candidate.layer: r.check for r in study.ranking or ()}

    def with_ranking(row):
        found = by_layer.get(row.layer)
        return dataclasses.replace(
            row,
            agreement_if_float=found.agreement if found else None,
            output_error_if_float=found.output_error if found else None,
            error_removed=(
                1.0 - found.output_error / study.ranking_error
                if found and study.ranking_error
                else None
            ),
            kept_float=row.layer in kept,
        )

    report = LayerReport(
        mode=study.mode,
        rows=tuple(worst_first([with_ranking(row) for row in study.stats])),
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


def study_mode(
    result: ModeResult,
    started: float,
    export_dir: str | None,
    path: Path,
    plain: bytes,
    float32_bytes: bytes,
    layer_names: list[str],
    base_meta: dict[str, Any],
    inputs: CheckInputs,
    keras_probs: np.ndarray,
    keras_fn: Callable[[np.ndarray], np.ndarray],
    budget: Budget,
    *,
    layer_report: bool,
    fallback: bool,
    max_float_layers: int,
    float32_size: int | None,
    progress: ProgressCallback | None,
    precision: str = "float",
    engine: str = "converter",
) -> tuple[ModeResult, LayerReport | None]:
    """After the plain model's check: a `--fallback` model in its place if it missed the
    budget, and the layer report (with the ranking when there was one). `keras_fn` maps
    model input to Keras probabilities (for the held-out check)."""
    mode = result.mode
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
        precision=precision if fallback else "float",
        engine=engine,
    )
    if fallback and result.missed_budget and study.quantizer is None:
        result = ModeResult(
            mode,
            error=f"--fallback cannot keep layers of this {mode} model in float ({study.problem})",
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
            keras_fn,
            budget,
            max_float_layers,
            float32_size,
            progress,
            len(plain),
            precision,
        )
    report = None
    if layer_report:
        report = _write_layer_report(study, out=path.parent, kept=result.float_layers)
    return result, report
