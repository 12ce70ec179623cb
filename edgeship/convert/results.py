"""The outcome of a conversion: one `ModeResult` per mode, gathered in a `ConvertReport`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeship.convert.errors import ModeFailedError
from edgeship.convert.layers import LayerReport
from edgeship.convert.modes import MODES

# progress(mode, stage, result): stage is "convert", "verify", "fallback", "done" or "failed".
ProgressCallback = Callable[[str, str, "ModeResult | None"], None]


def tflite_name(mode: str) -> str:
    """The file name of a mode's model inside a run directory."""
    return f"model_{mode}.tflite"


@dataclass(frozen=True)
class ModeResult:
    """The outcome of one mode: the file and its check, or why it failed and what to try."""

    mode: str
    path: Path | None = None
    size_bytes: int | None = None
    size_vs_float32: float | None = None
    agreement: float | None = None
    max_abs_diff: float | None = None
    accuracy: float | None = None
    convert_seconds: float | None = None
    verify_seconds: float | None = None
    error: str | None = None
    hint: str | None = None
    # The layers `--fallback` kept in float (empty: the plain model), and how it got there.
    float_layers: tuple[str, ...] = ()
    fallback: dict[str, Any] | None = None
    # True when the model converted and ran but missed the budget (what --fallback can fix).
    missed_budget: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode. Received: mode={self.mode}")
        if (self.path is None) == (self.error is None):
            raise ValueError("A ModeResult has either a path (success) or an error (failure).")
        if self.agreement is not None and not 0.0 <= self.agreement <= 1.0:
            raise ValueError(f"agreement must be in [0, 1]. Received: {self.agreement}")

    @property
    def ok(self) -> bool:
        """True if the mode's file was written."""
        return self.error is None

    @property
    def label(self) -> str:
        """The mode as the table shows it: 'int8', or 'int8, 1 layer float'."""
        n = len(self.float_layers)
        if not n:
            return self.mode
        return f"{self.mode}, {n} layer{'s' if n > 1 else ''} float"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary of this mode."""
        return {
            "mode": self.mode,
            "path": str(self.path) if self.path else None,
            "size_bytes": self.size_bytes,
            "size_vs_float32": self.size_vs_float32,
            "agreement": self.agreement,
            "max_abs_diff": self.max_abs_diff,
            "accuracy": self.accuracy,
            "convert_seconds": self.convert_seconds,
            "verify_seconds": self.verify_seconds,
            "error": self.error,
            "hint": self.hint,
            "float_layers": list(self.float_layers),
            "fallback": self.fallback,
        }


@dataclass(frozen=True)
class ConvertReport:
    """Every mode's result, plus the data the check and the calibration used."""

    model_path: Path
    out_dir: Path
    results: tuple[ModeResult, ...]
    verify_samples: int
    verify_source: str
    calibration_samples: int
    calibration_source: str | None
    keras_accuracy: float | None = None
    min_agreement: float | None = None
    notes: tuple[str, ...] = field(default=())
    max_accuracy_drop: float | None = None
    layer_reports: tuple[LayerReport, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.results:
            raise ValueError("A ConvertReport needs at least one mode result.")

    @property
    def failed(self) -> tuple[ModeResult, ...]:
        """The modes that wrote no file."""
        return tuple(r for r in self.results if not r.ok)

    def raise_for_failures(self) -> None:
        """Raise `ModeFailedError` (exit 1) naming each failed mode, why, and what to try."""
        if self.failed:
            raise ModeFailedError(
                # A failed result has its error (__post_init__); convert gives each a hint.
                "; ".join(
                    f"mode {r.mode} failed: {(r.error or '').rstrip('.')}. "
                    f"{(r.hint or '').rstrip('.')}"
                    for r in self.failed
                )
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "model": str(self.model_path),
            "out": str(self.out_dir),
            "keras_accuracy": self.keras_accuracy,
            "verify": {"samples": self.verify_samples, "source": self.verify_source},
            "calibration": {"samples": self.calibration_samples, "source": self.calibration_source},
            "min_agreement": self.min_agreement,
            "max_accuracy_drop": self.max_accuracy_drop,
            "layer_reports": {lr.mode: [str(p) for p in lr.files] for lr in self.layer_reports},
            "modes": [r.to_dict() for r in self.results],
        }
