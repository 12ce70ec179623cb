"""`edgeship tune`: the most accurate model that fits the device's budgets."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from edgeship.tune.device import REMOTE_DIR, Device
from edgeship.tune.search import DEFAULT_MAX_FAILURES, DEFAULT_STUDY, Budgets, TuneOptions

INTERRUPTED = 130


def tune_command(
    out: Annotated[
        Path,
        typer.Option(
            help="The search's folder: study.db, trials.csv, report.md, front.png, best/."
        ),
    ],
    dataset: Annotated[
        str, typer.Option(help="fashion-mnist or an image folder.")
    ] = "fashion-mnist",
    data_dir: Annotated[Path | None, typer.Option(help="Where Fashion-MNIST's files are.")] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            help="Use at most N training images (the validation split is carved from them)."
        ),
    ] = None,
    trials: Annotated[int, typer.Option(help="Trials in the study, all workers together.")] = 20,
    timeout: Annotated[
        float | None, typer.Option(help="Stop starting trials after S seconds.", metavar="S")
    ] = None,
    max_latency_ms: Annotated[
        float | None, typer.Option(help="Budget: p50 latency (batch 1) measured on the device.")
    ] = None,
    max_size_kb: Annotated[float | None, typer.Option(help="Budget: .tflite size, KiB.")] = None,
    max_ram_mb: Annotated[
        float | None, typer.Option(help="Budget: the device bench's peak RSS, MB.")
    ] = None,
    min_accuracy: Annotated[float | None, typer.Option(help="Budget: validation accuracy.")] = None,
    device: Annotated[str, typer.Option(help="local, or USER@HOST[:PORT] over SSH.")] = "local",
    threads: Annotated[int | None, typer.Option(help="Interpreter threads on the device.")] = None,
    identity: Annotated[Path | None, typer.Option(help="SSH private key.")] = None,
    known_hosts: Annotated[Path | None, typer.Option(help="SSH known_hosts file.")] = None,
    remote_dir: Annotated[
        str,
        typer.Option(help="The device's folder for the candidates (beside a real deployment's)."),
    ] = REMOTE_DIR,
    per_upload: Annotated[
        int | None,
        typer.Option(help="Candidates measured per device trip (default 1 local, 4 over SSH)."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage URL (default "
            "sqlite:///OUT/study.db); postgresql://... "
            "for several workers."
        ),
    ] = None,
    study: Annotated[str, typer.Option(help="The study's name in the storage.")] = DEFAULT_STUDY,
    space: Annotated[Path | None, typer.Option(help="The search space, YAML or JSON.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler, the split and training.")] = 0,
    max_failures: Annotated[
        int, typer.Option(help="Stop after N device failures in a row.")
    ] = DEFAULT_MAX_FAILURES,
) -> None:
    """Search the most accurate model that meets the budgets, measured on the device."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgeship.tune.report import write_outputs
    from edgeship.tune.search import run_search
    from edgeship.tune.trial import rebuild_trial

    options = TuneOptions(
        out=out,
        trials=trials,
        timeout=timeout,
        budgets=Budgets(max_latency_ms, max_size_kb, max_ram_mb, min_accuracy),
        device=Device(
            device,
            threads=threads,
            identity=identity,
            known_hosts=known_hosts,
            remote_dir=remote_dir,
        ),
        dataset=dataset,
        data_dir=str(data_dir) if data_dir else None,
        limit=limit,
        storage=storage,
        study=study,
        space_file=space,
        seed=seed,
        per_upload=per_upload,
        max_failures=max_failures,
    )
    if space is not None:  # a bad --space file: one line, before any data is loaded
        from edgeship.tune.space import load_space

        load_space(space, 28)
    stop = threading.Event()
    console = Console(stderr=True)

    def on_sigint(_sig, _frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        console.print("Ctrl-C: stopping after the running trial (again to abort)")

    previous = signal.signal(signal.SIGINT, on_sigint)
    columns = (
        TextColumn("tune"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("tune", total=trials, status="")

            def progress(event: dict) -> None:
                best = event["best"]
                p50 = event["last_p50_us"]
                bar.update(
                    task,
                    completed=min(event["done"], trials),
                    status=(f"best feasible {best:.4f}" if best is not None else "no feasible yet")
                    + (f", last p50 {p50:.1f} µs" if p50 is not None else ""),
                )

            study_obj = run_search(options, stop=stop, progress=progress)
    finally:
        signal.signal(signal.SIGINT, previous)
    if stop.is_set():
        console.print(
            f"Interrupted: the study is stored in {options.storage_url.split('@')[-1]};"
            " run the same command to resume."
        )
        raise typer.Exit(INTERRUPTED)
    result = write_outputs(
        study_obj,
        out,
        options.budgets,
        device,
        lambda params, folder: rebuild_trial(options, params, folder),
    )
    chosen = result["chosen"]
    typer.echo(
        f"best: trial {chosen.number} ({chosen.params['family']}, "
        f"{chosen.params['quantization']}): validation {chosen.value:.4f}, test "
        f"{result['test_accuracy']:.4f}, {chosen.user_attrs['size_bytes'] / 1024:.1f} KiB,"
        f" p50 {chosen.user_attrs['p50_us']:.1f} us -> {result['best']}"
    )
