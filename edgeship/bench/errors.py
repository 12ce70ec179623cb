"""The benchmark suite's errors: bad input (exit 2) and unmet budgets (exit 1)."""

from __future__ import annotations

from edge_runtime.errors import EdgeshipError


class BenchError(EdgeshipError):
    """Bad input to `bench`: no models, a corrupt model, a bad option or device file."""


class BudgetError(BenchError):
    """At least one model missed a budget (`--min-accuracy`, `--max-latency-us`, ...)."""

    exit_code = 1
