"""Measurements: classification statistics, batch-1 latency, throughput, the timer's cost.

Latency statistics and peak RSS come from `edge_runtime.device.bench` (the code that runs on the
device), so desktop and device numbers are computed the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge_runtime.device.bench import Latency

CLOCK = "time.perf_counter"


def classification_stats(
    probs: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    reference: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class accuracy, confusion matrix, and agreement with `reference` probs."""
    pred = probs.argmax(axis=1)
    labels = np.asarray(labels, dtype=np.int64)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    support = confusion.sum(axis=1)
    per_class = [
        round(float(confusion[i, i] / support[i]), 6) if support[i] else None
        for i in range(num_classes)
    ]
    stats: dict[str, Any] = {
        "accuracy": round(float((pred == labels).mean()), 6),
        "correct": int((pred == labels).sum()),
        "images": len(labels),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "agreement": None,
        "flipped": None,
        "prob_diff_mean": None,
        "prob_diff_max": None,
    }
    if reference is not None:
        diff = np.abs(probs.astype(np.float64) - reference.astype(np.float64))
        flipped = np.flatnonzero(pred != reference.argmax(axis=1))
        stats["agreement"] = round(float((pred == reference.argmax(axis=1)).mean()), 6)
        # The images whose top-1 differs from Keras's: (1 - agreement) x images of them.
        stats["flipped"] = {"count": int(len(flipped)), "indices": flipped.tolist()}
        stats["prob_diff_mean"] = round(float(diff.mean()), 8)
        stats["prob_diff_max"] = round(float(diff.max()), 8)
    return stats


def timer_overhead_ns(samples: int = 20000) -> dict[str, float]:
    """The cost of one `perf_counter()` pair around nothing, as `time_calls` times: median, p99."""
    clock = time.perf_counter
    out = np.empty(samples, dtype=np.float64)
    for i in range(samples):
        t0 = clock()
        out[i] = clock() - t0
    return {
        "median_ns": round(float(np.median(out)) * 1e9, 1),
        "p99_ns": round(float(np.percentile(out, 99)) * 1e9, 1),
        "resolution_ns": time.get_clock_info("perf_counter").resolution * 1e9,
    }


def time_calls(
    fn: Callable[[Any], Any], inputs: Sequence[Any], runs: int, warmup: int
) -> np.ndarray:
    """Seconds per call of `fn(x)` over `runs` calls, cycling `inputs`, after `warmup` calls."""
    n = len(inputs)
    for i in range(warmup):
        fn(inputs[i % n])
    samples = np.empty(runs, dtype=np.float64)
    clock = time.perf_counter
    for i in range(runs):
        x = inputs[i % n]
        t0 = clock()
        fn(x)
        samples[i] = clock() - t0
    return samples


def latency_summary(samples_s: np.ndarray) -> dict[str, float]:
    """p50/p90/p99/mean/min/max in microseconds (edge_runtime's `Latency`)."""
    latency = Latency.from_samples(samples_s)
    return {k: getattr(latency, k) for k in ("p50", "p90", "p99", "mean", "min", "max")}


def throughput_ips(
    fn: Callable[[Any], Any], batch: Any, size: int, min_seconds: float = 0.3
) -> float:
    """Images per second of `fn(batch)` (one warm call, then repeat for `min_seconds`, >= 2x)."""
    fn(batch)
    clock = time.perf_counter
    reps, start = 0, clock()
    while True:
        fn(batch)
        reps += 1
        elapsed = clock() - start
        if reps >= 2 and elapsed >= min_seconds:
            break
    return round(size * reps / elapsed, 1)
