"""On-device benchmark: load time, per-call latency in microseconds, throughput, peak RSS.

Uses only the standard library (`resource` for peak RSS: no psutil on the device).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.classifier import EdgeClassifier
from edge_runtime.device.memory import peak_rss_mb
from edge_runtime.model_bounds import DEFAULT_MAX_MODEL_MB

if TYPE_CHECKING:
    import numpy.typing as npt


@dataclass(frozen=True)
class Latency:
    """Latency statistics in microseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float

    def __post_init__(self) -> None:
        if not self.min <= self.p50 <= self.max:
            raise ValueError(f"Inconsistent latency statistics. Received: {self}")

    @classmethod
    def from_samples(cls, seconds: npt.ArrayLike) -> Latency:
        """Statistics of per-call durations given in seconds."""
        us = np.asarray(seconds, dtype=np.float64) * 1e6
        p50, p90, p99 = np.percentile(us, [50, 90, 99])
        return cls(
            p50=round(float(p50), 3),
            p90=round(float(p90), 3),
            p99=round(float(p99), 3),
            mean=round(float(us.mean()), 3),
            min=round(float(us.min()), 3),
            max=round(float(us.max()), 3),
        )


@dataclass(frozen=True)
class BenchResult:
    """What `python -m edge_runtime bench --json` prints."""

    model: str
    load_ms: float
    latency_us: Latency
    throughput_ips: float
    peak_rss_mb: float
    backend: str
    backend_version: str
    machine: str
    python: str
    numpy: str
    runs: int
    warmup: int
    threads: int | None
    batch: int
    # The Pi's state around the measurement (edge_runtime.device.doctor.pi_state): temperature,
    # get_throttled flags, clock; `throttled` is True when it throttled (or under-volted)
    # during the run, None when the machine cannot tell (no vcgencmd, no sysfs).
    device_before: dict[str, Any] | None = None
    device_after: dict[str, Any] | None = None
    throttled: bool | None = None

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0 or self.batch < 1:
            raise ValueError(
                f"runs >= 1, warmup >= 0, batch >= 1 required. Received: runs={self.runs}, "
                f"warmup={self.warmup}, batch={self.batch}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return asdict(self)


def throttled_between(before: dict[str, Any], after: dict[str, Any]) -> bool | None:
    """Whether the Pi throttled, capped or under-volted between two `pi_state` readings."""
    if after.get("throttled") is None:
        return None
    now = [f for f in after["throttled_flags"] if f.endswith(" now")]
    new = set(after["throttled_flags"]) - set(before.get("throttled_flags") or [])
    return bool(now or new)


def parse_threads(text: str | int | None) -> list[int | None]:
    """`"1,2,4"` -> [1, 2, 4]; None -> [None] (the runtime's default)."""
    if text is None:
        return [None]
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        counts = [int(t) for t in items]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ValueError(f"--threads takes counts >= 1, e.g. 1,2,4. Received: {text!r}")
    return list(dict.fromkeys(counts))


def run_bench_threads(
    model_path: str | os.PathLike[str], threads: list[int | None], **kwargs: Any
) -> list[BenchResult]:
    """`run_bench` once per thread count, each with the Pi's state before and after it."""
    from edge_runtime.device.doctor import pi_state

    results = []
    for count in threads:
        before = pi_state()
        result = run_bench(model_path, threads=count, **kwargs)
        after = pi_state()
        results.append(
            replace(
                result,
                device_before=before,
                device_after=after,
                throttled=throttled_between(before, after),
            )
        )
    return results


def run_bench(
    model_path: str | os.PathLike[str],
    *,
    runs: int = 200,
    warmup: int = 20,
    threads: int | None = None,
    batch: int = 1,
    backend: str | None = None,
    seed: int = 0,
    max_model_mb: float = DEFAULT_MAX_MODEL_MB,
) -> BenchResult:
    """Load the model, then time `runs` calls of `predict_proba` on `batch` random images."""
    if runs < 1 or warmup < 0 or batch < 1:
        raise ValueError(
            f"runs >= 1, warmup >= 0, batch >= 1 required. Received: runs={runs}, "
            f"warmup={warmup}, batch={batch}"
        )
    start = time.perf_counter()
    clf = EdgeClassifier.load(
        model_path,
        num_threads=threads,
        backend=backend,
        batch_size=batch,
        max_model_mb=max_model_mb,
    )
    load_ms = (time.perf_counter() - start) * 1e3
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(batch, *clf.input_shape), dtype=np.uint8)
    if batch == 1:
        x = x[0]
    for _ in range(warmup):
        clf.predict_proba(x)
    samples = np.empty(runs, dtype=np.float64)
    clock = time.perf_counter
    for i in range(runs):
        t0 = clock()
        clf.predict_proba(x)
        samples[i] = clock() - t0
    latency = Latency.from_samples(samples)
    return BenchResult(
        model=str(model_path),
        load_ms=round(load_ms, 3),
        latency_us=latency,
        throughput_ips=round(batch / float(samples.mean()), 1),
        peak_rss_mb=peak_rss_mb(),
        backend=clf.backend.name,
        backend_version=clf.backend.version,
        machine=platform.machine(),
        python=platform.python_version(),
        numpy=np.__version__,
        runs=runs,
        warmup=warmup,
        threads=threads,
        batch=batch,
    )
