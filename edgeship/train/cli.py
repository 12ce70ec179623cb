"""`edgeship train`: train a model and write `model.keras` + `model.json`."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress

from edgeship.train.datasets import FASHION_MNIST, load_dataset
from edgeship.train.models import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, MODELS
from edgeship.train.training import TrainConfig, prepare_out_dir, subsample, train

_MODEL_HELP = f"Architecture: {' or '.join(MODELS)} (mlp is the tutorial's network)."


def train_command(
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    model: Annotated[str, typer.Option(help=_MODEL_HELP)] = "mlp",
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Epochs (default: "
            + ", ".join(f"{n} for {m}" for m, n in DEFAULT_EPOCHS.items())
            + ")."
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Batch size (default: "
            + ", ".join(f"{n} for {m}" for m, n in DEFAULT_BATCH_SIZE.items())
            + ")."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for weights, shuffling and --limit.")] = 0,
    dataset: Annotated[
        str, typer.Option(help="'fashion-mnist' or a folder with one subfolder per class.")
    ] = FASHION_MNIST,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Folder with the Fashion-MNIST IDX files (else the usual places)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Train on this many images only (quick runs).")
    ] = None,
) -> None:
    """Train a classifier, evaluate it on the test set, write RUN/model.keras and model.json."""
    config = TrainConfig(
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        dataset=dataset,
        data_dir=str(data_dir) if data_dir else None,
        limit=limit,
    )
    run_training(config, out, Console(stderr=True))


def run_training(
    config: TrainConfig, out: Path, console: Console, progress: Progress | None = None
) -> dict:
    """Train with a progress display (`progress`, else a new one) and print a summary line."""
    from edgeship.train.progress import make_progress, rich_training_callback
    from edgeship.train.quiet import import_keras

    prepare_out_dir(out)  # a read-only or full --out fails now, not after the training
    with console.status("Loading TensorFlow..."):
        import_keras()  # a machine without the desktop extra fails here, before any output
    with console.status("Loading dataset..."):
        data = load_dataset(config.dataset, config.data_dir)
    n_train = len(subsample(data.x_train, data.y_train, config.limit, config.seed)[0])
    steps = math.ceil(n_train / config.resolved_batch_size)
    console.print(
        f"Training [bold]{config.model}[/] on {data.name}: {n_train} train / "
        f"{len(data.x_test)} test images, {config.resolved_epochs} epochs"
    )
    with contextlib.nullcontext(progress) if progress else make_progress(console) as shown:
        callback = rich_training_callback(shown, config.resolved_epochs, steps)
        result = train(config, out, callbacks=[callback], data=data)
    meta = result.metadata
    console.print(
        f"test accuracy {meta['metrics']['test_accuracy']:.4f}, loss "
        f"{meta['metrics']['test_loss']:.4f}, {meta['parameters']} parameters, "
        f"{meta['training']['seconds']:.1f} s -> {result.model_path}",
        soft_wrap=True,
    )
    return meta
