"""The emulated Raspberry Pi OS Bookworm 64-bit Python with deploy's pinned wheels.

`tests.support.pi`'s `bookworm-arm64` userland (Debian bookworm arm64 packages, CPython 3.11,
run under Debian 13's qemu-aarch64 10) with the aarch64 / cp311 wheels of the target's pins
(`edgeship.deploy.pi.requirements`, fetched by `edgeship.deploy.pi.wheels.download_wheels`)
unpacked as its site folder, so the emulated tests run exactly what a bundle ships.

    python -m tests.support.arm64 build        # prepare (or reuse) the environment
    python -m tests.support.arm64 info         # where it is and what it holds
    python -m tests.support.arm64 run -- -c "import platform; print(platform.machine())"
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from edgeship.deploy.errors import BundleError
from edgeship.deploy.pi.requirements import target_pins
from edgeship.deploy.pi.wheels import download_wheels
from tests.support._cache import EnvironmentBuildError
from tests.support._cli import env_main
from tests.support.pi import PiPython, ensure_pi_python, site_from_wheels

TARGET = "bookworm-arm64"
PINS = target_pins(TARGET)
Arm64Python = PiPython

SMOKE = (
    "import platform, sys, numpy, PIL, flatbuffers; "
    "import ai_edge_litert, ai_edge_litert.interpreter; "
    "from importlib.metadata import version; "
    "print(platform.machine(), platform.python_version(), numpy.__version__, PIL.__version__, "
    "version('ai-edge-litert'))"
)


def smoke(py: PiPython) -> str:
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


def ensure_arm64_python(
    rebuild: bool = False, log: Callable[[str], None] | None = None
) -> PiPython:
    """The emulated bookworm-arm64 Python with the target's wheels on its path."""
    py = ensure_pi_python(TARGET, rebuild=rebuild, log=log)
    try:
        wheels = download_wheels(TARGET)
    except BundleError as err:
        raise EnvironmentBuildError(str(err)) from err
    return py.with_site(site_from_wheels(wheels))


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
        info=lambda py: {"qemu": str(py.qemu), "site": str(py.site)},
    )


if __name__ == "__main__":
    sys.exit(main())
