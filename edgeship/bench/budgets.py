"""Budgets: each `--min-accuracy`/`--max-accuracy-drop`/`--max-latency-us` against each model,
and the bench's outcome as an exception."""

from __future__ import annotations

from typing import Any

from edgeship.bench.errors import BenchError, BudgetError
from edgeship.bench.options import BenchOptions


def _check(model: str, budget: str, limit: float, value: float | None, op: str) -> dict:
    if value is None:
        ok, note = False, "no Keras reference to compare with"
    else:
        ok, note = (value >= limit if op == ">=" else value <= limit), None
    return {
        "model": model,
        "budget": budget,
        "limit": limit,
        "value": value,
        "op": op,
        "ok": ok,
        "note": note,
    }


def check_budgets(models: list[dict], keras_accuracy: float | None, options: BenchOptions) -> dict:
    """Each budget against each measured TFLite model; `passed` is False if any is missed."""
    checks = []
    for m in (m for m in models if m["format"] == "tflite"):
        drop = None if keras_accuracy is None else round(keras_accuracy - m["accuracy"], 6)
        wanted = [
            ("min_accuracy", options.min_accuracy, m["accuracy"], ">="),
            ("max_accuracy_drop", options.max_accuracy_drop, drop, "<="),
            ("max_latency_us", options.max_latency_us, m["latency_us"]["p50"], "<="),
        ]
        checks += [
            _check(m["name"], budget, limit, value, op)
            for budget, limit, value, op in wanted
            if limit is not None
        ]
    return {
        "min_accuracy": options.min_accuracy,
        "max_accuracy_drop": options.max_accuracy_drop,
        "max_latency_us": options.max_latency_us,
        "checks": checks,
        "passed": all(c["ok"] for c in checks),
    }


def raise_for_outcome(report: dict[str, Any]) -> None:
    """Raise `BenchError` (exit 2) for unmeasured models, else `BudgetError` (exit 1) for misses."""
    missed = [c for c in report["budgets"]["checks"] if not c["ok"]]
    budget_text = "; ".join(
        f"{c['model']}: {c['budget']} {c['value']} (limit {c['op']} {c['limit']})"
        + (f" ({c['note']})" if c.get("note") else "")
        for c in missed
    )
    if report["failed"]:
        bad = "; ".join(f"{f['path']}: {f['error']}" for f in report["failed"])
        extra = f" Budgets also missed: {budget_text}." if missed else ""
        raise BenchError(
            f"{len(report['failed'])} model(s) could not be measured (the report covers the "
            f"others). Fix or remove them and re-run. Received: {bad}.{extra}"
        )
    if missed:
        raise BudgetError(f"budget not met: {budget_text}")
