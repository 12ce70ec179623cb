"""`edgeship bench RUN --out RUN/bench`: the desktop-vs-edge benchmark as a Typer command."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress

from edge_runtime.files import check_output_dir
from edgeship.bench.options import (
    DEFAULT_BATCH,
    DEFAULT_PREDICT_RUNS,
    DEFAULT_RUNS,
    DEFAULT_WARMUP,
    BenchOptions,
    parse_number,
    parse_only,
)

# Numbers arrive as text and are parsed here so a bad one is one line and exit 2 (no usage box).
_N = {"metavar": "N"}
_X = {"metavar": "X"}


def bench_command(
    run: Annotated[Path, typer.Argument(help="Run directory (model.keras, model_<mode>.tflite).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Report directory (default: RUN/bench).")
    ] = None,
    limit: Annotated[
        str | None, typer.Option(help="Use the first N test images (default: all).", **_N)
    ] = None,
    threads: Annotated[
        str | None, typer.Option(help="Interpreter threads (default: the runtime's).", **_N)
    ] = None,
    runs: Annotated[str, typer.Option(help="Timed batch-1 calls per model.", **_N)] = str(
        DEFAULT_RUNS
    ),
    warmup: Annotated[str, typer.Option(help="Untimed calls before timing.", **_N)] = str(
        DEFAULT_WARMUP
    ),
    batch: Annotated[str, typer.Option(help="Batch size of the throughput figure.", **_N)] = str(
        DEFAULT_BATCH
    ),
    predict_runs: Annotated[
        str, typer.Option(help="Timed Keras model.predict calls (each ~0.1 s).", **_N)
    ] = str(DEFAULT_PREDICT_RUNS),
    only: Annotated[
        str | None,
        typer.Option(help="Measure and gate only these TFLite variants, e.g. int8,float16."),
    ] = None,
    min_accuracy: Annotated[
        str | None, typer.Option(help="Budget: accuracy >= X (fraction, e.g. 0.85).", **_X)
    ] = None,
    max_accuracy_drop: Annotated[
        str | None,
        typer.Option(
            help="Budget: Keras accuracy - variant accuracy <= X (fraction: 0.005 = half a point).",
            **_X,
        ),
    ] = None,
    max_latency_us: Annotated[
        str | None, typer.Option(help="Budget: batch-1 p50 latency <= X microseconds.", **_X)
    ] = None,
    device: Annotated[
        Path | None,
        typer.Option(help="On-device results (`python -m edge_runtime bench --json`) to add."),
    ] = None,
    no_memory: Annotated[
        bool, typer.Option("--no-memory", help="Skip the peak-memory subprocesses.")
    ] = False,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the PNG plots.")] = False,
    test_data: Annotated[
        Path | None,
        typer.Option(
            help="Your test images: a folder of class subfolders named like the "
            "model's classes, or an .npz with x (uint8) and y (class indices)."
        ),
    ] = None,
    keras: Annotated[
        Path | None,
        typer.Option(
            help="The Keras model to compare against (default: "
            "RUN/model.keras, else the one convert recorded)."
        ),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Class names, one per line in output order.")
    ] = None,
) -> None:
    """Measure Keras and every .tflite of RUN: accuracy, latency, size, memory; write a report.

    Exit 1 if a budget is missed, 2 on bad input (the report still covers the good models).
    """
    options = BenchOptions(
        limit=parse_number("--limit", limit, integer=True),
        threads=parse_number("--threads", threads, integer=True),
        runs=parse_number("--runs", runs, integer=True),
        warmup=parse_number("--warmup", warmup, integer=True),
        batch=parse_number("--batch", batch, integer=True),
        predict_runs=parse_number("--predict-runs", predict_runs, integer=True),
        only=parse_only(only),
        min_accuracy=parse_number("--min-accuracy", min_accuracy),
        max_accuracy_drop=parse_number("--max-accuracy-drop", max_accuracy_drop),
        max_latency_us=parse_number("--max-latency-us", max_latency_us),
        device=str(device) if device else None,
        memory=not no_memory,
        plots=not no_plots,
        test_data=str(test_data) if test_data else None,
        keras=str(keras) if keras else None,
        labels=str(labels) if labels else None,
    )
    console = Console(stderr=True)
    from edgeship.bench.models import find_models

    out = out or run / "bench"
    if run.is_dir() and (out.is_dir() or not out.exists()):
        # A read-only or full report folder fails now, not after the measurements (an --out
        # that is a file is run_bench's error to report).
        check_output_dir(out, keep=False)
    find_models(run, options)  # no run or no models: one error line before any progress
    report = bench_with_progress(run, out, options, console)
    print_summary(report, console, out)
    from edgeship.bench.budgets import raise_for_outcome

    raise_for_outcome(report)


def bench_with_progress(
    run: Path, out: Path, options: BenchOptions, console: Console, progress: Progress | None = None
) -> dict:
    """`run_bench` with a Rich progress bar (on `progress`, else a new one on `console`)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from edgeship.bench.run import run_bench

    own = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # piped stderr: no bar, so an error stays one line
    )
    with contextlib.nullcontext(progress) if progress else own as progress:
        task = progress.add_task("bench", total=None)

        def update(text: str, completed: int, total: int) -> None:
            progress.update(task, description=text, completed=completed, total=total)

        report = run_bench(run, out, options, progress=update)
        progress.update(task, description="bench", completed=1, total=1)
        return report


def print_summary(report: dict, console: Console, out: Path) -> None:
    """The table, then budget results, failures, and where the report is."""
    from edgeship.bench.device import device_summary
    from edgeship.bench.report import rich_table

    # Piped output (CI logs) would be squeezed to 80 columns, cutting the device columns.
    wide = console if console.is_terminal else Console(file=console.file, width=160)
    wide.print(rich_table(report))
    summary = device_summary((report.get("device") or {}).get("entries"))
    if summary:
        console.print(summary)
    timer = report["timer"]
    keras = any(m.get("format") == "keras" for m in report["models"])
    console.print(
        f"timer overhead {timer['median_ns']:.0f} ns per measurement (median, not subtracted)"
        + (
            "; Keras latency: compiled tf.function call, model.predict on its own row"
            if keras
            else ""
        )
    )
    for c in report["budgets"]["checks"]:
        if not c["ok"]:
            console.print(
                f"[red]budget missed[/red]: {c['model']} {c['budget']} = {c['value']} "
                f"(limit {c['op']} {c['limit']})"
            )
    if report["budgets"]["checks"] and report["budgets"]["passed"]:
        console.print(f"[green]all {len(report['budgets']['checks'])} budget checks met[/green]")
    for f in report["failed"]:
        console.print(f"[red]not measured[/red]: {f['path']}: {f['error']}")
    for note in report.get("notes") or []:
        console.print(f"[yellow]note[/yellow]: {note}", markup=True, highlight=False)
    console.print(f"report: {out / 'report.md'} ({report['wall_seconds']} s)")
