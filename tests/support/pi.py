"""Emulated Raspberry Pi OS userlands, one per deploy target, run under qemu-user 10.

Each userland is Debian's own packages of the target's release and architecture (what
Raspberry Pi OS is built from: the target's CPython, `base-files` for `/etc/os-release`, and
for `bookworm-armhf` Debian's `python3-numpy` and `python3-pil`), with their dependency closure,
unpacked with `dpkg-deb -x` (`tests.support.debian`), and run with `qemu-aarch64 -L ROOT` or
`qemu-arm -L ROOT` (`tests.support.qemu`: Debian 13's qemu 10). There is no binfmt here, so
the emulated Python cannot exec another arm binary: wheels are unpacked into a site folder
(`site_from_wheels`), as pip would install them, instead of `python -m venv` + pip.
Everything lives under `${EDGESHIP_CACHE:-~/.cache/edgeship}/pi/<target>-<key>`.

    python -m tests.support.pi build TARGET      # prepare (or reuse) the userland
    python -m tests.support.pi run TARGET [--wheels DIR] -- -m edge_runtime doctor
        # run its python3 (cwd first on PYTHONPATH, then DIR's wheels unpacked, e.g. an
        # unpacked bundle's wheels/TARGET)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support._cache import (
    EnvironmentBuildError,
    build_lock,
    cache_key,
    cache_root,
    fresh_dir,
    write_json,
)
from tests.support._cli import foreign_environ, run_captured
from tests.support.debian import fetch_debs, unpack_debs
from tests.support.qemu import ensure_qemu


@dataclass(frozen=True)
class Userland:
    """A Debian release / architecture with its CPython: a target's, or an unsupported one."""

    suite: str
    arch: str
    python: str
    packages: tuple[str, ...]  # with the dependency closure apt resolves


USERLANDS: dict[str, Userland] = {
    "trixie-arm64": Userland("trixie", "arm64", "3.13", ("python3.13", "libstdc++6", "base-files")),
    "bookworm-arm64": Userland(
        "bookworm", "arm64", "3.11", ("python3.11", "libstdc++6", "base-files")
    ),
    "bookworm-armhf": Userland(
        "bookworm", "armhf", "3.11", ("python3.11", "python3-numpy", "python3-pil", "base-files")
    ),
    # Not a target: 32-bit Trixie (CPython 3.13 armhf), which deploy must refuse.
    "trixie-armhf": Userland("trixie", "armhf", "3.13", ("python3.13", "base-files")),
}
QEMU_ARCH = {"arm64": "aarch64", "armhf": "arm"}
FORMAT = 1

Log = Callable[[str], None]


@dataclass(frozen=True)
class PiPython:
    """An emulated target userland: `run` executes its `python3.X` under qemu-user 10."""

    target: str
    root: Path
    qemu: Path
    site: Path | None = None  # unpacked wheels, last on PYTHONPATH
    cpu: str | None = None  # qemu -cpu (e.g. arm1176: an armv6 Pi Zero)

    def __post_init__(self) -> None:
        for path in (self.python, self.qemu):
            if not path.exists():
                raise ValueError(
                    f"PiPython is incomplete: {path} does not exist. Rebuild it with "
                    f"`python -m tests.support.pi build {self.target} --rebuild`. "
                    f"Received: root={self.root}"
                )

    @property
    def sysroot(self) -> Path:
        """The unpacked Debian packages (qemu's -L prefix)."""
        return self.root / "sysroot"

    @property
    def python(self) -> Path:
        """The target's interpreter binary inside the sysroot."""
        return self.sysroot / "usr" / "bin" / f"python{USERLANDS[self.target].python}"

    @property
    def manifest(self) -> dict:
        """What the build downloaded: Debian package versions and timings."""
        return json.loads((self.root / "manifest.json").read_text())

    def with_site(self, site: Path | None) -> PiPython:
        """The same userland with `site` (unpacked wheels) on its path."""
        return PiPython(self.target, self.root, self.qemu, site, self.cpu)

    def with_cpu(self, cpu: str | None) -> PiPython:
        """The same userland emulating another CPU (`qemu -cpu`)."""
        return PiPython(self.target, self.root, self.qemu, self.site, cpu)

    def command(self, args: Sequence[str | os.PathLike]) -> list[str]:
        """The argv that runs the emulated interpreter with `args`."""
        cpu = ["-cpu", self.cpu] if self.cpu else []
        return [str(self.qemu), *cpu, "-L", str(self.sysroot), str(self.python), *map(str, args)]

    def environ(
        self, env: Mapping[str, str] | None = None, extra_paths: Sequence[str | os.PathLike] = ()
    ) -> dict[str, str]:
        """The host's environment minus its Python settings, plus `env`; PYTHONPATH is
        `extra_paths`, any PYTHONPATH in `env`, then the site folder."""
        return foreign_environ(env, extra_paths, [self.site] if self.site else ())

    def run(
        self,
        args: Sequence[str | os.PathLike],
        cwd: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        extra_paths: Sequence[str | os.PathLike] = (),
        timeout: float = 900,
        check: bool = False,
    ) -> subprocess.CompletedProcess:
        """Run the emulated `python3.X ARGS...`; stdout and stderr captured as text."""
        return run_captured(self.command(args), cwd, self.environ(env, extra_paths), timeout, check)


def _spec(name: str) -> dict:
    u = USERLANDS[name]
    return {"format": FORMAT, "suite": u.suite, "arch": u.arch, "debs": list(u.packages)}


def _blas_links(sysroot: Path) -> None:
    """The libblas.so.3 / liblapack.so.3 links update-alternatives would make (armhf NumPy)."""
    for lib in ("blas", "lapack"):
        for found in sysroot.glob(f"usr/lib/*-linux-gnu*/{lib}/lib{lib}.so.3"):
            link = found.parent.parent / f"lib{lib}.so.3"
            if not link.exists():
                link.symlink_to(found.relative_to(found.parent.parent))


def ensure_pi_python(target: str, rebuild: bool = False, log: Log | None = None) -> PiPython:
    """The cached emulated userland `target` (a USERLANDS name), built first if needed.

    Raises `EnvironmentUnavailable` when the host lacks apt or qemu cannot run here (tests
    skip) and `EnvironmentBuildError` when a download or unpack fails (tests fail).
    """
    log = log or (lambda _msg: None)
    t = USERLANDS[target]
    qemu = ensure_qemu(log)[QEMU_ARCH[t.arch]]
    base = cache_root() / "pi"
    root = base / f"{target}-{cache_key(_spec(target))}"
    if not rebuild and (root / "manifest.json").exists():
        return PiPython(target, root, qemu)
    with build_lock(base):
        if rebuild and root.exists():
            shutil.rmtree(root)
        if (root / "manifest.json").exists():
            return PiPython(target, root, qemu)
        started = time.perf_counter()
        with fresh_dir(root):
            debs = fetch_debs(
                t.suite, t.arch, t.packages, root / "debs", with_dependencies=True, log=log
            )
            log(f"dpkg-deb -x {len(debs)} packages into {root / 'sysroot'}")
            unpack_debs(root / "debs", root / "sysroot")
            shutil.rmtree(root / "debs")
            _blas_links(root / "sysroot")
            py = PiPython(target, root, qemu)
            log("smoke test under qemu")
            proc = py.run(["-c", "import platform; print(platform.machine())"], timeout=300)
            if proc.returncode != 0:
                raise EnvironmentBuildError(
                    f"The emulated {target} Python does not start. Rebuild with `python -m "
                    f"tests.support.pi build {target} --rebuild`. Received: exit="
                    f"{proc.returncode} stderr={proc.stderr[-1500:]!r}"
                )
            write_json(
                root / "manifest.json",
                {
                    "spec": _spec(target),
                    "debs": debs,
                    "machine": proc.stdout.strip(),
                    "build_seconds": round(time.perf_counter() - started, 1),
                },
            )
        return py


def unpack_wheel(wheel: Path, site: Path) -> None:
    """Unzip a wheel into `site`, moving its `.data/purelib|platlib` content up."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    for data in site.glob("*.data"):
        for lib in ("purelib", "platlib"):
            if (data / lib).is_dir():
                shutil.copytree(data / lib, site, dirs_exist_ok=True)
        shutil.rmtree(data)


def site_from_wheels(wheels: Sequence[Path]) -> Path:
    """A site folder with `wheels` unpacked, cached by their content (sha256)."""
    digest = hashlib.sha256()
    for wheel in sorted(wheels, key=lambda p: p.name):
        digest.update(wheel.name.encode() + hashlib.sha256(wheel.read_bytes()).digest())
    base = cache_root() / "pi" / "sites"
    site = base / digest.hexdigest()[:16]
    if (site / ".complete").exists():
        return site
    with build_lock(base), fresh_dir(site, marker=".complete"):
        if not (site / ".complete").exists():
            for wheel in wheels:
                unpack_wheel(wheel, site)
            (site / ".complete").write_text("\n".join(sorted(w.name for w in wheels)) + "\n")
    return site


def main(argv: Sequence[str] | None = None) -> int:
    """`build TARGET [--rebuild]` | `run TARGET [--wheels DIR] -- ARGS` (cwd on PYTHONPATH)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] not in ("build", "run") or args[1] not in USERLANDS:
        print(f"usage: python -m tests.support.pi build|run {'|'.join(USERLANDS)} ...")
        return 2
    command, target, rest = args[0], args[1], args[2:]
    started = time.perf_counter()
    py = ensure_pi_python(
        target,
        rebuild="--rebuild" in rest,
        log=lambda m: print(f"[pi {target}] {m}", file=sys.stderr, flush=True),
    )
    if command == "build":
        print(f"{py.root} ({time.perf_counter() - started:.1f}s): {py.manifest['machine']}")
        return 0
    if rest[:1] == ["--wheels"] and len(rest) > 1:
        py = py.with_site(site_from_wheels(sorted(Path(rest[1]).glob("*.whl"))))
        rest = rest[2:]
    rest = rest[1:] if rest[:1] == ["--"] else rest
    return subprocess.run(py.command(rest), env=py.environ(extra_paths=[os.getcwd()])).returncode


if __name__ == "__main__":
    sys.exit(main())
