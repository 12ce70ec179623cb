"""An emulated Raspberry Pi OS Bookworm Python: arm64 CPython 3.11 under qemu-aarch64-static.

The sysroot is Debian bookworm's own arm64 packages (what Raspberry Pi OS Bookworm 64-bit is
built from), unpacked with `dpkg-deb -x`; the site folder holds the aarch64 / cp311 wheels of
ai-edge-litert, NumPy, Pillow, flatbuffers and litert's dependencies, unzipped. Nothing is
installed on the host: the apt state is private (its own sources, lists and archives under the
cache), so neither root nor `dpkg --add-architecture` is needed. Everything lives under
`${EDGESHIP_CACHE:-~/.cache/edgeship}/arm64/<key>`, the key a hash of the packages and pins, so
a second build is a file check. The wheels are deploy's: the pins of `deploy.requirements.PINS`
fetched by `deploy.wheels.download_wheels`, so the emulated tests run exactly what a bundle ships.

    python -m tests.support.arm64 build        # prepare (or reuse) the environment
    python -m tests.support.arm64 info         # where it is and what it holds
    python -m tests.support.arm64 run -- -c "import platform; print(platform.machine())"
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.errors import BundleError
from deploy.requirements import DEVICE_MACHINE, DEVICE_PYTHON, PINS, platform_tags
from deploy.wheels import download_wheels
from tests.support._cache import (
    EnvironmentBuildError,
    EnvironmentUnavailable,
    build_lock,
    cache_key,
    cache_root,
    fresh_dir,
    run_step,
    write_json,
)
from tests.support._cli import env_main

# The device's CPython (Raspberry Pi OS Bookworm); wheels and pins come from deploy.
PYTHON_VERSION = DEVICE_PYTHON
# What the interpreter and the native modules of litert, NumPy and Pillow load
# (the wheels bundle their other libraries).
DEBIAN_PACKAGES = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "python3.11",
    "libc6",
    "libexpat1",
    "zlib1g",
    "libffi8",
    "libssl3",
    "libstdc++6",
    "libgcc-s1",
    "libbz2-1.0",
    "liblzma5",
    "libcrypt1",
    "libuuid1",
)
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("EDGESHIP_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SECURITY_MIRROR = os.environ.get(
    "EDGESHIP_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
)
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
QEMU_NAMES = ("qemu-aarch64-static", "qemu-aarch64")
FORMAT = 1  # bump when the layout below changes

Log = Callable[[str], None]


def _spec() -> dict:
    return {
        "format": FORMAT,
        "suite": DEBIAN_SUITE,
        "debs": list(DEBIAN_PACKAGES),
        "wheels": PINS,
        "python": PYTHON_VERSION,
        "platforms": platform_tags(DEVICE_MACHINE),
    }


def arm64_cache_dir() -> Path:
    """The folder holding every arm64 build and the shared downloads."""
    return cache_root() / "arm64"


def find_qemu() -> Path:
    """The qemu-user binary for aarch64; `EnvironmentUnavailable` when there is none."""
    if platform.system() != "Linux":
        raise EnvironmentUnavailable(
            f"The emulated arm64 Python needs Linux (qemu-user). Received: "
            f"platform={platform.system()}"
        )
    override = os.environ.get("EDGESHIP_QEMU")
    candidates = [override] if override else list(QEMU_NAMES)
    for name in candidates:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise EnvironmentUnavailable(
        "qemu-aarch64-static was not found on PATH; install it with "
        "`apt-get install qemu-user-static` (or set EDGESHIP_QEMU). "
        f"Received: looked for {candidates}"
    )


@dataclass(frozen=True)
class Arm64Python:
    """A built emulated arm64 CPython 3.11 with the edge wheels; `run` executes it under qemu."""

    root: Path
    qemu: Path

    def __post_init__(self) -> None:
        for path in (self.python, self.site, self.qemu):
            if not path.exists():
                raise ValueError(
                    f"Arm64Python is incomplete: {path} does not exist. Rebuild it with "
                    f"`python -m tests.support.arm64 build --rebuild`. Received: root={self.root}"
                )

    @property
    def sysroot(self) -> Path:
        """The unpacked Debian arm64 packages (qemu's -L prefix)."""
        return self.root / "sysroot"

    @property
    def site(self) -> Path:
        """The unzipped aarch64 wheels (first PYTHONPATH entry after the caller's)."""
        return self.root / "site"

    @property
    def python(self) -> Path:
        """The arm64 interpreter binary inside the sysroot."""
        return self.sysroot / "usr" / "bin" / f"python{PYTHON_VERSION}"

    @property
    def manifest(self) -> dict:
        """What the build downloaded: Debian package versions, wheel files, timings."""
        return json.loads((self.root / "manifest.json").read_text())

    def command(self, args: Sequence[str | os.PathLike]) -> list[str]:
        """The argv that runs the emulated interpreter with `args`."""
        return [str(self.qemu), "-L", str(self.sysroot), str(self.python), *map(str, args)]

    def environ(
        self, env: Mapping[str, str] | None = None, extra_paths: Sequence[str | os.PathLike] = ()
    ) -> dict[str, str]:
        """The process environment: the host's minus its Python settings, plus `env`.

        PYTHONPATH is `extra_paths`, then any PYTHONPATH given in `env`, then the site folder;
        the host's own PYTHONPATH is dropped (its native modules are x86_64).
        """
        base = {
            k: v
            for k, v in os.environ.items()
            if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
        }
        base.update(PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
        env = dict(env or {})
        paths = [str(p) for p in extra_paths]
        if env.get("PYTHONPATH"):
            paths.extend(env.pop("PYTHONPATH").split(os.pathsep))
        base.update(env)
        base["PYTHONPATH"] = os.pathsep.join([*paths, str(self.site)])
        return base

    def run(
        self,
        args: Sequence[str | os.PathLike],
        cwd: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        extra_paths: Sequence[str | os.PathLike] = (),
        timeout: float = 900,
        check: bool = False,
    ) -> subprocess.CompletedProcess:
        """Run the emulated `python3.11 ARGS...`; stdout and stderr captured as text."""
        return subprocess.run(
            self.command(args),
            cwd=cwd,
            env=self.environ(env, extra_paths),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )


def _check_build_tools() -> None:
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise EnvironmentUnavailable(
            "Building the arm64 sysroot needs apt-get and dpkg-deb (a Debian or Ubuntu host). "
            f"Received: missing={missing}"
        )
    if not DEBIAN_KEYRING.exists():
        raise EnvironmentUnavailable(
            f"Debian's archive keyring is missing; install it with "
            f"`apt-get install debian-archive-keyring`. Received: path={DEBIAN_KEYRING}"
        )


def _apt_options(apt: Path) -> list[str]:
    """apt-get options for a private arm64-only apt state under `apt`."""
    etc = apt / "etc"
    for sub in (
        etc / "sources.list.d",
        etc / "preferences.d",
        apt / "lists" / "partial",
        apt / "cache" / "archives" / "partial",
    ):
        sub.mkdir(parents=True, exist_ok=True)
    opts = f"[arch=arm64 signed-by={DEBIAN_KEYRING}]"
    (etc / "sources.list").write_text(
        f"deb {opts} {DEBIAN_MIRROR} {DEBIAN_SUITE} main\n"
        f"deb {opts} {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main\n"
        f"deb {opts} {DEBIAN_SECURITY_MIRROR} {DEBIAN_SUITE}-security main\n"
    )
    (apt / "status").touch()
    settings = {
        "Dir::Etc::SourceList": etc / "sources.list",
        "Dir::Etc::SourceParts": etc / "sources.list.d",
        "Dir::Etc::Preferences": etc / "preferences",
        "Dir::Etc::PreferencesParts": etc / "preferences.d",
        "Dir::State::Lists": apt / "lists",
        "Dir::Cache": apt / "cache",
        "Dir::State::status": apt / "status",
        "APT::Architecture": "arm64",
        "APT::Architectures": "arm64",
        "APT::Sandbox::User": "root",  # the files are ours: no download as user _apt
        "Debug::NoLocking": "1",
    }
    return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]


def _download_debs(downloads: Path, dest: Path, log: Log) -> dict[str, str]:
    """apt-get download the arm64 packages into `dest`; return {package: version}."""
    apt = downloads / "apt"
    options = _apt_options(apt)
    log(f"apt-get update (private arm64 state in {apt})")
    run_step(
        "apt-get update (Debian bookworm arm64 lists)",
        ["apt-get", *options, "--error-on=any", "update"],
    )
    dest.mkdir(parents=True, exist_ok=True)
    log(f"apt-get download {len(DEBIAN_PACKAGES)} packages")
    run_step(
        "apt-get download (Debian bookworm arm64 packages)",
        ["apt-get", *options, "download", *DEBIAN_PACKAGES],
        cwd=dest,
    )
    versions = {}
    for deb in sorted(dest.glob("*.deb")):
        name, version, _arch = deb.stem.split("_")
        versions[name] = version.replace("%3a", ":")
    missing = sorted(set(DEBIAN_PACKAGES) - set(versions))
    if missing:
        raise EnvironmentBuildError(
            f"apt-get download did not produce every package. Received: missing={missing}"
        )
    return versions


def _download_wheels(log: Log) -> list[Path]:
    """deploy's pinned aarch64 cp311 wheels (downloaded once into deploy's wheel cache)."""
    log(f"deploy's wheels: {' '.join(f'{n}=={v}' for n, v in PINS.items())} (aarch64, cp311)")
    try:
        return download_wheels(DEVICE_MACHINE, DEVICE_PYTHON)
    except BundleError as err:
        raise EnvironmentBuildError(str(err)) from err


def _unpack_wheel(wheel: Path, site: Path) -> None:
    """Unzip a wheel into `site`, moving its `.data/purelib|platlib` content up."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    for data in site.glob("*.data"):
        for lib in ("purelib", "platlib"):
            if (data / lib).is_dir():
                shutil.copytree(data / lib, site, dirs_exist_ok=True)
        shutil.rmtree(data)


def _compile(py: Arm64Python, log: Log) -> None:
    """Byte-compile stdlib and site once, so emulated runs don't recompile every import."""
    targets = [py.sysroot / "usr" / "lib" / f"python{PYTHON_VERSION}", py.site]
    log("byte-compiling the stdlib and the wheels")
    if f"{sys.version_info.major}.{sys.version_info.minor}" == PYTHON_VERSION:
        # Same minor version, same bytecode magic: the native host interpreter is much faster.
        argv = [sys.executable, "-m", "compileall", "-q", "-j", "0", *map(str, targets)]
        subprocess.run(argv, capture_output=True, check=False)
    else:
        py.run(["-m", "compileall", "-q", *targets], env={"PYTHONDONTWRITEBYTECODE": ""})


SMOKE = (
    "import platform, sys, numpy, PIL, flatbuffers; "
    "import ai_edge_litert, ai_edge_litert.interpreter; "
    "from importlib.metadata import version; "
    "print(platform.machine(), platform.python_version(), numpy.__version__, PIL.__version__, "
    "version('ai-edge-litert'))"
)


def smoke(py: Arm64Python) -> str:
    """Import litert, NumPy and Pillow under emulation; return their versions line."""
    proc = py.run(["-c", SMOKE], timeout=300)
    out = proc.stdout.strip()
    if proc.returncode != 0 or not out.startswith("aarch64 "):
        raise EnvironmentBuildError(
            "The emulated arm64 Python cannot import ai_edge_litert, numpy and PIL. "
            "Rebuild with `python -m tests.support.arm64 build --rebuild`. "
            f"Received: exit={proc.returncode} stdout={out!r} stderr={proc.stderr[-2000:]!r}"
        )
    return out


def ensure_arm64_python(rebuild: bool = False, log: Log | None = None) -> Arm64Python:
    """Return the cached emulated arm64 Python, building it first if needed.

    Raises `EnvironmentUnavailable` when the host lacks qemu-user or apt (tests skip) and
    `EnvironmentBuildError` when a download or unpack fails (tests fail).
    """
    log = log or (lambda _msg: None)
    qemu = find_qemu()
    base = arm64_cache_dir()
    root = base / cache_key(_spec())
    if not rebuild and (root / "manifest.json").exists():
        return Arm64Python(root, qemu)
    with build_lock(base):
        if rebuild and root.exists():
            shutil.rmtree(root)
        if (root / "manifest.json").exists():
            return Arm64Python(root, qemu)
        _check_build_tools()
        started = time.perf_counter()
        with fresh_dir(root):
            downloads = base / "downloads"
            debs_dir = root / "debs"
            debs = _download_debs(downloads, debs_dir, log)
            sysroot = root / "sysroot"
            log(f"dpkg-deb -x {len(debs)} packages into {sysroot}")
            for deb in sorted(debs_dir.glob("*.deb")):
                run_step(f"dpkg-deb -x {deb.name}", ["dpkg-deb", "-x", deb, sysroot])
            shutil.rmtree(debs_dir)
            wheels = _download_wheels(log)
            site = root / "site"
            site.mkdir()
            for wheel in wheels:
                _unpack_wheel(wheel, site)
            py = Arm64Python(root, qemu)
            _compile(py, log)
            log("smoke test under qemu")
            versions = smoke(py)
            write_json(
                root / "manifest.json",
                {
                    "spec": _spec(),
                    "debs": debs,
                    "wheels": [w.name for w in wheels],
                    "smoke": versions,
                    "build_seconds": round(time.perf_counter() - started, 1),
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
        return py


def main(argv: Sequence[str] | None = None) -> int:
    """`build`, `info` or `run -- ARGS` for the emulated arm64 Python."""
    return env_main(
        argv,
        prog="python -m tests.support.arm64",
        doc=__doc__,
        tag="arm64",
        noun="environment",
        python="the emulated python3.11",
        ensure=ensure_arm64_python,
        smoke=smoke,
        info=lambda py: {"qemu": str(py.qemu)},
    )


if __name__ == "__main__":
    sys.exit(main())
