"""`edgeship convert`: a Keras model -> `model_<mode>.tflite` per mode, with a check table."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from edgeship.convert.calibration import DEFAULT_CALIBRATION_SAMPLES
from edgeship.convert.errors import ConvertError
from edgeship.convert.fallback import DEFAULT_MAX_FLOAT_LAYERS
from edgeship.convert.modes import MODES
from edgeship.convert.run import DEFAULT_VERIFY_SAMPLES, ConvertReport


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MiB"


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}%}"


def report_table(report: ConvertReport) -> Table:
    """The per-mode table: size, size vs float32, agreement, max difference, seconds."""
    with_accuracy = report.keras_accuracy is not None
    title = f"check: {report.verify_samples} samples of the {report.verify_source}"
    if with_accuracy:
        title += f"; Keras accuracy {report.keras_accuracy:.2%}"
    table = Table(title=title)
    table.add_column("mode")
    table.add_column("size", justify="right")
    table.add_column("vs f32", justify="right")
    table.add_column("agree", justify="right")
    table.add_column("max diff", justify="right")
    if with_accuracy:
        table.add_column("acc", justify="right")
    table.add_column("conv s", justify="right")
    table.add_column("check s", justify="right")
    for r in report.results:
        if not r.ok:
            row = [f"[red]{r.mode}[/red]", "[red]failed[/red]", "-", "-", "-"]
            row += ["-"] if with_accuracy else []
            table.add_row(*row, "-", "-")
            continue
        row = [
            r.label,
            _size(r.size_bytes),
            _pct(r.size_vs_float32, 1),
            _pct(r.agreement),
            f"{r.max_abs_diff:.4f}",
        ]
        row += [_pct(r.accuracy)] if with_accuracy else []
        row += [f"{r.convert_seconds:.2f}", f"{r.verify_seconds:.2f}"]
        table.add_row(*row)
    return table


def summary_lines(report: ConvertReport, top: int = 3) -> list[str]:
    """What the layer reports and the fallback found, a few lines per mode."""
    lines = []
    for lr in report.layer_reports:
        rows = ", ".join(
            f"{r.layer} ({r.op}"
            + (f", error removed if float {r.error_removed:.0%}" if r.error_removed else "")
            + (f", agree if float {r.agreement_if_float:.2%}" if r.agreement_if_float else "")
            + (f", RMSE/scale {r.rmse_over_scale:.2f}" if r.rmse_over_scale else "")
            + f", cosine {r.cosine:.3f})"
            for r in lr.rows[:top]
        )
        where = lr.files[1] if len(lr.files) > 1 else "-"
        lines.append(f"{lr.mode} layers, worst first: {rows or 'none'}. Table: {where}")
    for r in report.results:
        if not r.ok or not r.fallback:
            continue
        fb = r.fallback
        held = fb.get("held_out")
        kept = "in float (int8 weights)" if fb.get("precision") == "hybrid" else "in float"
        line = (
            f"{r.mode} --fallback kept {kept}: {', '.join(r.float_layers)}; agreement "
            f"{fb['plain']['agreement']:.2%} -> {fb['search']['agreement']:.2%} on "
            f"{fb['search']['samples']} search samples"
        )
        if fb.get("size_vs_float32") is not None:
            line += (
                f"; size {fb['size_vs_float32']:.0%} of float32, "
                f"{fb['size_vs_plain']:.0%} of plain {r.mode}"
            )
        if held:
            line += f", {held['agreement']:.2%} on {held['samples']} held-out samples"
            if held.get("accuracy") is not None:
                line += f" (accuracy {held['accuracy']:.2%})"
            if not fb.get("held_out_meets_budget"):
                line += " [held-out misses the budget]"
        else:
            line += "; no held-out samples (the check used them all: lower --verify-samples)"
        lines.append(line)
    return lines


def run_convert(
    model: Path, out: Path, console: Console, progress: Progress | None = None, **options
) -> ConvertReport:
    """Convert with a progress bar (on `progress`, else a new one on `console`); return the
    report (failures not raised)."""
    from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn

    from edgeship.convert.modes import parse_modes
    from edgeship.convert.run import convert_model

    modes = parse_modes(options.pop("modes", None))
    own = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    with contextlib.nullcontext(progress) if progress else own as progress:
        task = progress.add_task("loading model and data", total=len(modes))

        def on_progress(mode: str, stage: str, result) -> None:
            if stage in ("done", "failed"):
                progress.advance(task)
            else:
                progress.update(task, description=f"{mode}: {stage}")

        return convert_model(model, out, modes=modes, progress=on_progress, **options)


def convert_command(
    model: Annotated[
        Path,
        typer.Argument(
            help="Keras model (RUN/model.keras, any .keras/.h5) or PyTorch model (FILE.pt2 from "
            "torch.export.save, or FILE.py:FUNCTION returning (model, example_args))."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Directory for model_<mode>.tflite.")],
    quantize: Annotated[
        str, typer.Option(help=f"Comma-separated modes out of {','.join(MODES)}.")
    ] = ",".join(MODES),
    calibration_samples: Annotated[
        int,
        typer.Option(help="Calibration images for int8/int16x8 (class-balanced, fixed seed)."),
    ] = DEFAULT_CALIBRATION_SAMPLES,
    calibration_data: Annotated[
        Path | None,
        typer.Option(
            help="Image folder or .npy (model's input layout) to calibrate on; required for "
            "int8/int16x8 on a model edgeship did not train."
        ),
    ] = None,
    int8_io: Annotated[
        bool, typer.Option("--int8-io", help="int8 mode: make the input and output tensors int8.")
    ] = False,
    min_agreement: Annotated[
        float | None,
        typer.Option(help="Fail (exit 1) a mode whose top-1 agreement with Keras is below this."),
    ] = None,
    max_accuracy_drop: Annotated[
        float | None,
        typer.Option(
            help="Fail (exit 1) a mode whose accuracy is more than this below Keras's "
            "(a fraction: 0.01 = one point; needs labels: an edgeship run)."
        ),
    ] = None,
    layer_report: Annotated[
        bool,
        typer.Option(
            "--layer-report",
            help="int8/int16x8: write OUT/quantization/<mode>_layers.{csv,md,png}, each "
            "layer's error against float, worst first.",
        ),
    ] = False,
    fallback: Annotated[
        bool,
        typer.Option(
            "--fallback",
            help="int8/int16x8 missing the budget (--min-agreement/--max-accuracy-drop): "
            "keep its costliest layers in float until the budget holds.",
        ),
    ] = False,
    fallback_max_layers: Annotated[
        int | None,
        typer.Option(
            help=f"--fallback: at most this many Keras layers in float "
            f"(default: {DEFAULT_MAX_FLOAT_LAYERS})."
        ),
    ] = None,
    verify_samples: Annotated[
        int, typer.Option(help="Held-out samples to check each mode against Keras.")
    ] = DEFAULT_VERIFY_SAMPLES,
    class_names: Annotated[
        str | None,
        typer.Option(help="Class names in the model's output order, comma-separated: a,b,c."),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Labels file: one class name per line, in the model's output order."),
    ] = None,
    resize: Annotated[
        str | None,
        typer.Option(
            help="Fit photos to the input: stretch (default) or crop (center, aspect "
            "kept). Recorded in the metadata for bench and the runtime."
        ),
    ] = None,
    input_scale: Annotated[
        float | None,
        typer.Option(
            help="A model edgeship did not train, normalized outside it: raw pixel p "
            "becomes p*S+O (1/255 for [0, 1]; 1/127.5 with offset -1 for [-1, 1])."
        ),
    ] = None,
    input_offset: Annotated[
        float | None, typer.Option(help="O in p*S+O (see --input-scale); default 0.")
    ] = None,
    input_mean: Annotated[
        str | None,
        typer.Option(
            help="Per-channel normalization outside the model, on pixels scaled to "
            "[0, 1]: (p/255 - mean) / std. R,G,B (ImageNet: 0.485,0.456,0.406).",
            metavar="R,G,B",
        ),
    ] = None,
    input_std: Annotated[
        str | None,
        typer.Option(
            help="The std of --input-mean, R,G,B (ImageNet: 0.229,0.224,0.225).", metavar="R,G,B"
        ),
    ] = None,
    author: Annotated[
        str | None, typer.Option(help="Author, in the standard TFLite metadata.")
    ] = None,
    license: Annotated[  # noqa: A002 - the option's name
        str | None, typer.Option(help="License, in the standard TFLite metadata.")
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="What quantizes each mode from the float32 .tflite: quantizer "
            "(ai-edge-quantizer recipes), converter (TensorFlow's, Keras only) or auto (per "
            "mode, docs/convert.md)."
        ),
    ] = "auto",
    fallback_precision: Annotated[
        str,
        typer.Option(
            help="--fallback: keep a rescued layer at float compute with int8 weights (hybrid) "
            "or all float (float)."
        ),
    ] = "hybrid",
    recipe: Annotated[
        Path | None,
        typer.Option(
            help="An ai-edge-quantizer recipe (JSON) for the quantized modes, instead of "
            "edgeship's; each mode writes the one it used to OUT/quantization/<mode>.recipe.json."
        ),
    ] = None,
) -> None:
    """Convert a Keras or PyTorch model to TensorFlow Lite in each mode and check it against
    the original model."""
    if fallback_max_layers is not None and not fallback:
        raise ConvertError(
            "--fallback-max-layers caps what --fallback keeps in float; add --fallback (with a "
            f"budget) or leave it out. Received: --fallback-max-layers={fallback_max_layers}"
        )
    report = run_convert(
        model,
        out,
        Console(stderr=True),
        modes=quantize,
        calibration_samples=calibration_samples,
        calibration_data=calibration_data,
        int8_io=int8_io,
        min_agreement=min_agreement,
        verify_samples=verify_samples,
        max_accuracy_drop=max_accuracy_drop,
        layer_report=layer_report,
        fallback=fallback,
        fallback_max_layers=(
            DEFAULT_MAX_FLOAT_LAYERS if fallback_max_layers is None else fallback_max_layers
        ),
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
    console = Console()
    console.print(report_table(report))
    for line in summary_lines(report):
        console.print(line, highlight=False, markup=False)
    report.raise_for_failures()
