"""`edgeship pipeline`: train -> convert (every mode) -> bench, stage by stage through files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from train.models import MODELS


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
) -> None:
    """Train a model on Fashion-MNIST, then convert and benchmark it, into one run directory."""
    from convert.cli import report_table, run_convert
    from train.cli import run_training
    from train.training import MODEL_FILE, TrainConfig

    console = Console(stderr=True)
    config = TrainConfig(
        model=model,
        epochs=epochs,
        seed=seed,
        data_dir=str(data_dir) if data_dir else None,
        limit=limit,
    )
    console.rule("[bold]1. train")
    run_training(config, out, console)
    console.rule("[bold]2. convert")
    conversion = run_convert(out / MODEL_FILE, out, console)
    console.print(report_table(conversion))
    console.print(f"Run directory: {out}")
    conversion.raise_for_failures()
