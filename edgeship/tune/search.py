"""The search: an Optuna study (ask/tell) whose trials are trained, converted, validated,
then measured on the device a batch at a time; the budgets are Optuna constraints."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import EdgeshipError
from edgeship.tune.device import Device, DeviceError, Measurement
from edgeship.tune.errors import DeviceFailuresError, TuneError
from edgeship.tune.space import FAMILY_KEYS, SearchSpace
from edgeship.tune.trial import Candidate, build_candidate, search_inputs

DEFAULT_STUDY = "edgeship-tune"
DEFAULT_MAX_FAILURES = 3


@dataclass(frozen=True)
class Budgets:
    """The limits a chosen model must meet; None: no limit."""

    max_latency_ms: float | None = None
    max_size_kb: float | None = None
    max_ram_mb: float | None = None
    min_accuracy: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_latency_ms", "max_size_kb", "max_ram_mb", "min_accuracy"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                flag = name.replace("_", "-")
                raise TuneError(f"--{flag} must be a positive number. Received: {flag}={value}")
        if self.min_accuracy is not None and self.min_accuracy > 1:
            raise TuneError(f"--min-accuracy is a fraction (0-1]. Received: {self.min_accuracy}")

    def constraints(self, accuracy: float, size_bytes: int, m: Measurement) -> dict[str, float]:
        """Optuna constraint values (<= 0: met), each in the budget's own unit."""
        out = {}
        if self.max_latency_ms is not None:
            out["latency_ms"] = m.p50_us / 1000 - self.max_latency_ms
        if self.max_size_kb is not None:
            out["size_kb"] = size_bytes / 1024 - self.max_size_kb
        if self.max_ram_mb is not None:
            out["ram_mb"] = m.peak_rss_mb - self.max_ram_mb
        if self.min_accuracy is not None:
            out["accuracy"] = self.min_accuracy - accuracy
        return out


@dataclass(frozen=True)
class TuneOptions:
    """Everything one `edgeship tune` process needs."""

    out: Path
    trials: int = 20
    timeout: float | None = None
    budgets: Budgets = field(default_factory=Budgets)
    device: Device = field(default_factory=Device)
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    limit: int | None = None
    storage: str | None = None
    study: str = DEFAULT_STUDY
    space_file: Path | None = None
    seed: int = 0
    per_upload: int | None = None
    max_failures: int = DEFAULT_MAX_FAILURES

    def __post_init__(self) -> None:
        for name in ("trials", "max_failures"):
            if getattr(self, name) < 1:
                raise TuneError(
                    f"--{name.replace('_', '-')} must be at least 1. "
                    f"Received: {getattr(self, name)}"
                )
        if self.per_upload is not None and self.per_upload < 1:
            raise TuneError(f"--per-upload must be at least 1. Received: {self.per_upload}")
        if self.limit is not None and self.limit < 20:
            raise TuneError(f"--limit must be at least 20. Received: {self.limit}")
        if self.timeout is not None and self.timeout <= 0:
            raise TuneError(f"--timeout must be positive. Received: {self.timeout}")

    @property
    def storage_url(self) -> str:
        """The study's storage: --storage, or TUNE/study.db (SQLite). A plain postgresql://
        URL gets psycopg 3 (the `tune` extra's driver) rather than SQLAlchemy's psycopg2."""
        if self.storage and self.storage.startswith("postgresql://"):
            return "postgresql+psycopg://" + self.storage.removeprefix("postgresql://")
        return self.storage or f"sqlite:///{(self.out / 'study.db').resolve()}"

    @property
    def batch(self) -> int:
        """Candidates measured per device round trip (one upload for an SSH device)."""
        return self.per_upload or (1 if self.device.is_local else 4)


# progress(event, details): "trial" after each trial, with done/total/best/last_p50_us.
ProgressCallback = Callable[[dict[str, Any]], None]


def suggest(trial, space: SearchSpace) -> dict[str, Any]:
    """A trial's parameters, drawn from the space (conditional on the family)."""
    family = trial.suggest_categorical("family", list(space.families))
    params: dict[str, Any] = {"family": family}
    for key in FAMILY_KEYS[family]:
        name = f"{family}.{key}"
        params[name] = trial.suggest_categorical(name, list(getattr(space, family)[key]))
    params["resolution"] = trial.suggest_categorical("resolution", list(space.resolution))
    params["quantization"] = trial.suggest_categorical("quantization", list(space.quantization))
    lo, hi = space.epochs
    params["epochs"] = trial.suggest_int("epochs", lo, hi)
    return params


def open_study(options: TuneOptions):
    """Create or load the study (several workers may share it through the storage)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options.out.mkdir(parents=True, exist_ok=True)
    for attempt in range(4):
        try:
            storage = optuna.storages.RDBStorage(options.storage_url)
            return optuna.create_study(
                storage=storage,
                study_name=options.study,
                direction="maximize",
                sampler=optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=5),
                load_if_exists=True,
            )
        except Exception as err:  # SQLAlchemy's and the drivers' errors: one line
            if attempt < 3 and type(err).__name__ == "IntegrityError":
                # workers starting together race to create the tables: the loser retries
                time.sleep(0.5 + attempt)
                continue
            line = " ".join(str(err).split())[:300]
            raise TuneError(
                f"Cannot open the study's storage ({type(err).__name__}: {line}). "
                f"Received: storage={_redacted(options.storage_url)}"
            ) from None
    raise AssertionError("unreachable")


def _redacted(url: str) -> str:
    """The storage URL without its password."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        if ":" in cred:
            return f"{scheme}://{cred.split(':')[0]}:***@{host}"
    return url


def _started(study) -> int:
    """Trials of the study that count toward --trials: every one finished or running."""
    from optuna.trial import TrialState

    return len(
        study.get_trials(
            deepcopy=False,
            states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, TrialState.PRUNED),
        )
    )


def run_search(
    options: TuneOptions,
    *,
    stop: threading.Event | None = None,
    progress: ProgressCallback | None = None,
):
    """Run trials until the study holds `options.trials` (or the timeout, or `stop`);
    return the study. Device failures in a row (`max_failures`) raise DeviceFailuresError."""
    from optuna.trial import TrialState

    stop = stop or threading.Event()
    say = progress or (lambda _e: None)
    space, train_part, validation = search_inputs(options)
    study = open_study(options)
    with contextlib.suppress(Exception):
        study.set_user_attr("space", space.to_dict())
    workdir = options.out / "trials"
    started_at = time.monotonic()
    failures_in_a_row = 0
    last_error = ""
    while not stop.is_set():
        if options.timeout is not None and time.monotonic() - started_at > options.timeout:
            break
        room = options.trials - _started(study)
        if room <= 0:
            break
        asked = [study.ask() for _ in range(min(options.batch, room))]
        try:
            built, measured, error = _run_batch(
                study, asked, options, space, train_part, validation, workdir
            )
        except BaseException:  # a second Ctrl-C, a crash: no trial left "running" forever
            for trial in asked:
                with contextlib.suppress(Exception):
                    trial.set_user_attr("error", "interrupted")
                    study.tell(trial, state=TrialState.FAIL)
            raise
        if error is not None:
            failures_in_a_row += len(built)
            last_error = error
        elif built:
            failures_in_a_row = 0
        say(
            {
                "event": "trial",
                "done": _started(study),
                "total": options.trials,
                "best": best_feasible_accuracy(study),
                "last_p50_us": measured[built[-1][1].tflite].p50_us if measured else None,
            }
        )
        if failures_in_a_row >= options.max_failures:
            from edgeship.tune.report import write_trials_csv

            write_trials_csv(study, options.out)  # each failure with its reason
            raise DeviceFailuresError(
                f"Stopped: the device failed {failures_in_a_row} trials in a row "
                f"(--max-failures {options.max_failures}); the study is kept, rerun to resume. "
                f"Received: device={options.device.spec}, last error: {last_error}"
            )
    return study


def _run_batch(
    study: Any,
    asked: list[Any],
    options: TuneOptions,
    space: SearchSpace,
    train_part: Any,
    validation: Any,
    workdir: Path,
) -> tuple[list[tuple[Any, Candidate]], dict[Path, Measurement], str | None]:
    """Build each asked trial, measure them in one device trip, tell Optuna."""
    from optuna.trial import TrialState

    built: list[tuple[Any, Candidate]] = []
    for trial in asked:
        params = suggest(trial, space)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            cand = build_candidate(
                params,
                train_part,
                validation,
                workdir / f"{trial.number:04d}",
                seed=options.seed,
                batch_size=space.batch_size,
            )
        except EdgeshipError as err:
            trial.set_user_attr("error", f"build: {err}")
            study.tell(trial, state=TrialState.FAIL)
            continue
        finally:
            _free_keras()
        trial.set_user_attr("validation_accuracy", cand.validation_accuracy)
        trial.set_user_attr("size_bytes", cand.size_bytes)
        trial.set_user_attr("folder", str(cand.folder.resolve()))
        built.append((trial, cand))
    measured: dict[Path, Measurement] = {}
    error: str | None = None
    if built:
        try:
            measured = options.device.measure([c.tflite for _, c in built], workdir)
        except DeviceError as err:
            error = str(err)
    for trial, cand in built:
        if error is not None:
            trial.set_user_attr("error", f"device: {error}")
            study.tell(trial, state=TrialState.FAIL)
            continue
        m = measured[cand.tflite]
        trial.set_user_attr("p50_us", m.p50_us)
        trial.set_user_attr("p99_us", m.p99_us)
        trial.set_user_attr("peak_rss_mb", m.peak_rss_mb)
        for key, value in options.budgets.constraints(
            cand.validation_accuracy, cand.size_bytes, m
        ).items():
            trial.set_constraint(key, round(value, 6))
        study.tell(trial, cand.validation_accuracy)
    return built, measured, error


def best_feasible_accuracy(study) -> float | None:
    """The best validation accuracy among trials that met every budget, or None."""
    from edgeship.tune.report import feasible_trials

    good = feasible_trials(study)
    return max((t.value for t in good), default=None)


def _free_keras() -> None:
    """Drop the finished trial's graph: a long search must not grow."""
    with contextlib.suppress(ImportError):
        import keras

        keras.backend.clear_session()
    gc.collect()
