"""Running the project's commands in a subprocess of this Python, and reading their errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def one_error_line(
    module: str,
    args: Sequence[str | os.PathLike],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike = REPO,
) -> str:
    """Run `python -m module ARGS`; assert exit 2 with one stderr line and no traceback;
    return that line."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        cwd=cwd,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.rstrip("\n").splitlines()  # a blank line before it counts
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def terminate(proc: subprocess.Popen, timeout: float) -> int | None:
    """SIGTERM `proc` if it still runs, wait `timeout` s, then SIGKILL; return its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode
