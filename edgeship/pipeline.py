"""`edgeship pipeline`: train -> convert (every mode) -> bench, stage by stage through files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgeship.train.models import MODELS


def pipeline_command(
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    model: Annotated[str, typer.Option(help=f"Architecture: {' or '.join(MODELS)}.")] = "mlp",
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the model's).")] = None,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder with the Fashion-MNIST IDX files.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Train on this many images only (quick runs).")
    ] = None,
    bench_limit: Annotated[
        int | None, typer.Option(help="Benchmark on the first N test images (default: all).")
    ] = None,
) -> None:
    """Train a model on Fashion-MNIST, convert it to every TFLite mode, benchmark it all.

    Writes RUN/model.keras, model.json, model_<mode>.tflite and RUN/bench/report.md.
    """
    from edgeship.bench.budgets import raise_for_outcome
    from edgeship.bench.cli import bench_with_progress, print_summary
    from edgeship.bench.options import BenchOptions
    from edgeship.convert.cli import report_table, run_convert
    from edgeship.train.cli import run_training
    from edgeship.train.progress import make_progress
    from edgeship.train.training import MODEL_FILE, TrainConfig

    console = Console(stderr=True)
    config = TrainConfig(
        model=model,
        epochs=epochs,
        seed=seed,
        data_dir=str(data_dir) if data_dir else None,
        limit=limit,
    )
    options = BenchOptions(limit=bench_limit)  # checked before hours of training, not after
    bench_dir = out / "bench"
    with make_progress(console) as progress:
        stages = progress.add_task("pipeline", total=3, info="train")
        run_training(config, out, console, progress=progress)
        progress.update(stages, advance=1, info="convert")
        conversion = run_convert(out / MODEL_FILE, out, console, progress=progress)
        progress.update(stages, advance=1, info="bench")
        report = bench_with_progress(out, bench_dir, options, console, progress=progress)
        progress.update(stages, advance=1, info="done")
    console.print(report_table(conversion))
    print_summary(report, console, bench_dir)
    conversion.raise_for_failures()
    raise_for_outcome(report)
    typer.echo(f"Report: {bench_dir / 'report.md'}")
