"""What `doctor` and its camera check share: a line of the report, and a tool found under the
root (its own module: doctor imports the camera check)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

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


def find_tool(root: Path, name: str) -> str | None:
    """The executable `name`: on PATH for the root `/`, else `root/usr/bin/name`."""
    if root == Path("/"):
        return shutil.which(name)
    found = root / "usr" / "bin" / name
    return str(found) if os.access(found, os.X_OK) else None
