"""Download a target's pinned wheels (for its device, or another Linux machine) once, cached."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edge_runtime.device.targets import get_target
from edgeship.deploy.errors import BundleError
from edgeship.deploy.pi.requirements import GLIBC_MAX_MINOR, platform_tags, target_pins

CACHE_ENV = "EDGESHIP_CACHE"


def cache_root() -> Path:
    """`$EDGESHIP_CACHE`, else `~/.cache/edgeship`."""
    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "edgeship"


def _resolve(target: str, machine: str | None, python: str | None) -> tuple[str, str]:
    t = get_target(target)
    return machine or t.wheel_machine, python or t.python


def wheel_dir(target: str, machine: str | None = None, python: str | None = None) -> Path:
    """The cache folder of `target`'s pinned wheels (its machine and CPython, or the given)."""
    machine, python = _resolve(target, machine, python)
    pins = target_pins(target)
    spec = json.dumps({"pins": pins, "machine": machine, "python": python}, sort_keys=True)
    key = hashlib.sha256(spec.encode()).hexdigest()[:12]
    tag = f"cp{python.replace('.', '')}-{machine}"
    return cache_root() / "wheels" / f"{tag}-{key}"


def _expected(folder: Path, pins: dict[str, str]) -> list[Path] | None:
    """The wheel of each pin in `folder`, or None when one is missing."""
    found = []
    for name, version in pins.items():
        prefix = f"{name.replace('-', '_')}-{version}-".lower()
        matches = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
        if not matches:
            return None
        found.append(matches[0])
    return found


def download_wheels(
    target: str, machine: str | None = None, python: str | None = None
) -> list[Path]:
    """Return `target`'s pinned wheels for Linux `machine` / CPython `python` (default: the
    target's own), downloading them once.

    `pip download --only-binary=:all: --no-deps --platform manylinux..._<machine>` into a temp
    folder beside the cache folder, moved into place when complete.
    """
    pins = target_pins(target)
    glibc = GLIBC_MAX_MINOR[get_target(target).name]
    final = wheel_dir(target, machine, python)
    machine, python = _resolve(target, machine, python)
    if final.is_dir() and (found := _expected(final, pins)):
        return found
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        platforms = [arg for tag in platform_tags(machine, glibc) for arg in ("--platform", tag)]
        requirements = [f"{name}=={version}" for name, version in pins.items()]
        argv = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-input",
            "-q",
            "--only-binary=:all:",
            "--no-deps",
            "--python-version",
            python,
            "--implementation",
            "cp",
            *platforms,
            "--dest",
            str(tmp),
            *requirements,
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        found = _expected(tmp, pins)
        if proc.returncode != 0 or found is None:
            tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
            raise BundleError(
                f"pip download of the {machine} / CPython {python} wheels failed: check the "
                f"network (PyPI) or build the bundle without --with-wheels. "
                f"Received: exit={proc.returncode} {tail[:400]}"
            )
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _expected(final, pins) or []
