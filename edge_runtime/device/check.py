"""One line of `doctor`'s report (its own module: doctor and the camera check both make them)."""

from __future__ import annotations

from dataclasses import dataclass

STATUSES = ("ok", "warn", "fail", "skip")


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: str
    detail: str
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}. Received: {self.status!r}")
        if self.status in ("warn", "fail") and not self.fix:
            raise ValueError(f"A {self.status} check needs a fix. Received: {self.name}")
