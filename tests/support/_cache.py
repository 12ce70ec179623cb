"""The cache folder, a build lock and atomic publishing of a built environment."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

CACHE_ENV = "EDGESHIP_CACHE"


class EnvironmentUnavailable(RuntimeError):
    """This platform lacks a tool the environment needs (tests skip, they do not fail)."""


class EnvironmentBuildError(RuntimeError):
    """Building the environment failed (a download, an unpack): tests must fail loudly."""


def cache_root() -> Path:
    """`$EDGESHIP_CACHE`, else `~/.cache/edgeship`."""
    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "edgeship"


def cache_key(spec: object) -> str:
    """A short stable hash of a JSON-able build spec: one folder per set of pins."""
    blob = json.dumps(spec, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder/.lock` so concurrent builders wait for each other."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def fresh_dir(final: Path, marker: str = "manifest.json") -> Iterator[Path]:
    """Yield `final`, emptied if a previous build left it without `marker`; delete it on failure.

    Builds happen in place (venvs and compiled files record their own path); the caller writes
    `marker` last, so a folder without it is a half-built one and never used.
    """
    if final.exists() and not (final / marker).exists():
        shutil.rmtree(final)
    final.mkdir(parents=True, exist_ok=True)
    try:
        yield final
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise


def run_step(what: str, argv: Sequence[str | os.PathLike], **kwargs) -> str:
    """Run one build command; raise `EnvironmentBuildError` with its output if it fails."""
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, **kwargs
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-3000:]
        raise EnvironmentBuildError(
            f"{what} failed (exit {proc.returncode}). Check the network and the command below, "
            f"then rerun the build. Received: command={' '.join(map(str, argv))!r}\n{tail}"
        )
    return proc.stdout


def write_json(path: Path, data: object) -> None:
    """Write `data` as indented JSON (inside a staging folder, so already atomic)."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
