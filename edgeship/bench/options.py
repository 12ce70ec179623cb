"""`BenchOptions`: what to measure and the budgets to check, validated once."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeship.bench.errors import BenchError

DEFAULT_RUNS = 1000
DEFAULT_WARMUP = 50
DEFAULT_BATCH = 256
# Keras `model.predict` on one image costs ~0.1 s here: a few dozen samples tell the story.
DEFAULT_PREDICT_RUNS = 30


def parse_number(option: str, text: str | float | int | None, *, integer: bool = False):
    """`text` as an int or float, or `BenchError` naming the option (None passes through)."""
    if text is None or isinstance(text, (int, float)) and not isinstance(text, bool):
        value = text
    else:
        try:
            value = int(str(text).strip()) if integer else float(str(text).strip())
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise BenchError(f"{option} must be {kind}. Received: {option}={text!r}") from None
    if value is not None and not integer and not math.isfinite(value):
        raise BenchError(f"{option} must be a finite number. Received: {option}={text!r}")
    return value


@dataclass(frozen=True)
class BenchOptions:
    """Settings of one bench: sample counts, threads, model filter and budgets.

    `max_accuracy_drop` is in accuracy as a fraction: 0.005 allows a variant half a point
    (0.5 percentage points) below the Keras reference. `max_latency_us` applies to batch-1 p50.
    """

    limit: int | None = None
    threads: int | None = None
    runs: int = DEFAULT_RUNS
    warmup: int = DEFAULT_WARMUP
    batch: int = DEFAULT_BATCH
    predict_runs: int = DEFAULT_PREDICT_RUNS
    only: tuple[str, ...] = ()
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None
    max_latency_us: float | None = None
    device: str | None = None
    memory: bool = True
    plots: bool = True
    test_data: str | None = None
    keras: str | None = None
    labels: str | None = None

    def __post_init__(self) -> None:
        def bad(option: str, rule: str, value) -> BenchError:
            return BenchError(f"{option} must be {rule}. Received: {option}={value}")

        if self.limit is not None and self.limit < 1:
            raise bad("--limit", "at least 1 (or left out for the whole test set)", self.limit)
        if self.threads is not None and self.threads < 1:
            raise bad("--threads", "at least 1", self.threads)
        if self.runs < 1:
            raise bad("--runs", "at least 1", self.runs)
        if self.warmup < 0:
            raise bad("--warmup", "0 or more", self.warmup)
        if self.batch < 1:
            raise bad("--batch", "at least 1", self.batch)
        if self.predict_runs < 1:
            raise bad("--predict-runs", "at least 1", self.predict_runs)
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise bad("--min-accuracy", "a fraction in [0, 1], e.g. 0.85", self.min_accuracy)
        if self.max_accuracy_drop is not None and not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise bad(
                "--max-accuracy-drop", "a fraction in [0, 1], e.g. 0.005", self.max_accuracy_drop
            )
        if self.max_latency_us is not None and self.max_latency_us <= 0:
            raise bad("--max-latency-us", "a positive number of microseconds", self.max_latency_us)

    @property
    def has_budgets(self) -> bool:
        """True if any budget is set."""
        return any(
            b is not None for b in (self.min_accuracy, self.max_accuracy_drop, self.max_latency_us)
        )

    def selects(self, name: str, filename: str) -> bool:
        """True if a TFLite variant is measured (no `--only`, or named by it)."""
        if not self.only:
            return True
        return any(o in (name, filename, filename.removesuffix(".tflite")) for o in self.only)


def parse_only(text: str | None) -> tuple[str, ...]:
    """`--only int8,float16` -> ("int8", "float16")."""
    if not text:
        return ()
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise BenchError(f"--only must name at least one model. Received: --only={text!r}")
    return names
