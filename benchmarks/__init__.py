"""benchmarks: the desktop-vs-edge suite: measurement, report writers, plots.

Exports are loaded on first use, so `python -m benchmarks.memprobe` starts from a bare
interpreter (its baseline) and TensorFlow and matplotlib load only inside the functions that
need them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BenchError": "benchmarks.errors",
    "BudgetError": "benchmarks.errors",
    "BenchOptions": "benchmarks.options",
    "raise_for_outcome": "benchmarks.budgets",
    "run_bench": "benchmarks.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'benchmarks' has no attribute {name!r}")
