"""edgeship.bench: `edgeship bench`, the desktop-vs-edge suite: measurement, report writers, plots.

Exports are loaded on first use, so `python -m edgeship.bench.memprobe` starts from a bare
interpreter (its baseline) and TensorFlow and matplotlib load only inside the functions that
need them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BenchError": "edgeship.bench.errors",
    "BudgetError": "edgeship.bench.errors",
    "BenchOptions": "edgeship.bench.options",
    "raise_for_outcome": "edgeship.bench.budgets",
    "run_bench": "edgeship.bench.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgeship.bench' has no attribute {name!r}")
