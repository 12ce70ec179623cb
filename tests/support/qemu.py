"""qemu-user 10 (Debian 13's static `qemu-aarch64` and `qemu-arm`), unpacked into the cache.

Debian 12's qemu-user-static is 7.2, under which ai-edge-litert 2.x dies with SIGSEGV in
`Interpreter()`; the static binaries of Debian 13's `qemu-user` package run on a Debian 12
host. The .deb is fetched with a private apt state (`tests.support.debian`) and `dpkg-deb -x`'d
into `${EDGESHIP_CACHE:-~/.cache/edgeship}/qemu/<key>/`; nothing is installed on the host.

    python -m tests.support.qemu           # fetch (or reuse) and print the binaries' versions
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support._cache import (
    EnvironmentBuildError,
    EnvironmentUnavailable,
    build_lock,
    cache_key,
    cache_root,
    fresh_dir,
    write_json,
)
from tests.support.debian import fetch_debs, unpack_debs

SUITE = "trixie"
PACKAGE = "qemu-user"
MIN_MAJOR = 10
BINARIES = {"aarch64": "qemu-aarch64", "arm": "qemu-arm"}
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
FORMAT = 1


def _version(binary: Path) -> str:
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    first = (proc.stdout or proc.stderr).splitlines()[:1]
    # "qemu-aarch64 version 10.0.6 (Debian 1:10.0.6+ds-0+deb13u2)"
    return first[0].split(" version ")[1].split()[0] if first and " version " in first[0] else ""


def _keep_only(tree: Path, names: set[str]) -> None:
    """Keep the qemu binaries we run (the package holds ~30 targets, 450 MB)."""
    bin_dir = tree / "usr" / "bin"
    for path in bin_dir.iterdir():
        if path.name not in names:
            path.unlink()
    for path in tree.iterdir():
        if path.name != "usr":
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for path in (tree / "usr").iterdir():
        if path.name != "bin":
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def ensure_qemu(log=None) -> dict[str, Path]:
    """{"aarch64": path, "arm": path} of qemu-user >= 10, fetched once into the cache.

    `EDGESHIP_QEMU_DIR` may name a folder that already holds qemu-aarch64 and qemu-arm >= 10.
    """
    override = os.environ.get("EDGESHIP_QEMU_DIR")
    if override:
        found = {k: Path(override) / v for k, v in BINARIES.items()}
    else:
        machine = platform.machine()
        if platform.system() != "Linux" or machine not in HOST_ARCH:
            raise EnvironmentUnavailable(
                f"qemu-user 10 from Debian needs a Linux x86_64 or aarch64 host. "
                f"Received: {platform.system()} {machine}"
            )
        spec = {"format": FORMAT, "suite": SUITE, "package": PACKAGE, "arch": HOST_ARCH[machine]}
        base = cache_root() / "qemu"
        root = base / cache_key(spec)
        if not (root / "manifest.json").exists():
            with build_lock(base), fresh_dir(root):
                if not (root / "manifest.json").exists():
                    debs = fetch_debs(SUITE, HOST_ARCH[machine], [PACKAGE], root / "debs", log=log)
                    unpack_debs(root / "debs", root / "tree")
                    shutil.rmtree(root / "debs")
                    _keep_only(root / "tree", set(BINARIES.values()))
                    write_json(root / "manifest.json", {"spec": spec, "debs": debs})
        found = {k: root / "tree" / "usr" / "bin" / v for k, v in BINARIES.items()}
    for name, path in found.items():
        if not path.is_file():
            raise EnvironmentBuildError(f"qemu-user has no {BINARIES[name]}. Received: {path}")
        version = _version(path)
        if not version or int(version.split(".")[0]) < MIN_MAJOR:
            raise EnvironmentBuildError(
                f"{path} is qemu {version or '(unknown)'}; ai-edge-litert 2.x needs qemu >= "
                f"{MIN_MAJOR}. Received: path={path}"
            )
    return found


if __name__ == "__main__":
    paths = ensure_qemu(log=lambda m: print(f"[qemu] {m}", file=sys.stderr))
    for name, path in paths.items():
        print(name, _version(path), path)
