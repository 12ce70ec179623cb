"""A host venv with the legacy `tflite-runtime` 2.14 and `numpy<2` (the `tflite` extra).

tflite-runtime's last release is built against NumPy 1.x, so it cannot share the main venv
(NumPy 2). The venv holds only the runtime's needs; edgeship is not installed in it: callers
put the repository root on PYTHONPATH (`extra_paths=[repo]`). Cached under
`${EDGESHIP_CACHE:-~/.cache/edgeship}/tflite/<key>`, the key a hash of the pins below.

    python -m tests.support.tflite_env build
    python -m tests.support.tflite_env info
    python -m tests.support.tflite_env run -- -m edge_runtime info MODEL.tflite
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

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
from tests.support._cli import env_main, foreign_environ, run_captured

REQUIREMENTS: dict[str, str] = {
    "tflite-runtime": "2.14.0",
    "numpy": "1.26.4",
    "pillow": "13.0.0",
    "flatbuffers": "25.12.19",
}
# tflite-runtime 2.14.0 publishes manylinux wheels for CPython 3.9-3.11 on these machines.
SUPPORTED_MACHINES = ("x86_64", "aarch64")
SUPPORTED_PYTHONS = ((3, 9), (3, 10), (3, 11))
FORMAT = 1

Log = Callable[[str], None]


def _spec() -> dict:
    return {
        "format": FORMAT,
        "requirements": REQUIREMENTS,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "machine": platform.machine(),
    }


def _check_platform() -> None:
    here = (platform.system(), platform.machine(), sys.version_info[:2])
    if here[0] != "Linux" or here[1] not in SUPPORTED_MACHINES or here[2] not in SUPPORTED_PYTHONS:
        raise EnvironmentUnavailable(
            "tflite-runtime 2.14.0 has wheels only for Linux x86_64/aarch64 and CPython "
            f"3.9-3.11. Received: system={here[0]} machine={here[1]} "
            f"python={here[2][0]}.{here[2][1]}"
        )


@dataclass(frozen=True)
class TfliteEnv:
    """A built venv with tflite-runtime and numpy<2; `run` executes its Python."""

    root: Path

    def __post_init__(self) -> None:
        if not self.python.exists():
            raise ValueError(
                f"TfliteEnv is incomplete: {self.python} does not exist. Rebuild it with "
                f"`python -m tests.support.tflite_env build --rebuild`. Received: root={self.root}"
            )

    @property
    def python(self) -> Path:
        """The venv's interpreter."""
        return self.root / "venv" / "bin" / "python"

    @property
    def manifest(self) -> dict:
        """The pins and the versions installed."""
        return json.loads((self.root / "manifest.json").read_text())

    def command(self, args: Sequence[str | os.PathLike]) -> list[str]:
        """The argv that runs the venv's interpreter with `args`."""
        return [str(self.python), *map(str, args)]

    def environ(
        self, env: Mapping[str, str] | None = None, extra_paths: Sequence[str | os.PathLike] = ()
    ) -> dict[str, str]:
        """The host's environment minus its Python settings, plus `env`; PYTHONPATH =
        `extra_paths` then any PYTHONPATH given in `env`."""
        return foreign_environ(env, extra_paths, ())

    def run(
        self,
        args: Sequence[str | os.PathLike],
        cwd: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        extra_paths: Sequence[str | os.PathLike] = (),
        timeout: float = 600,
        check: bool = False,
    ) -> subprocess.CompletedProcess:
        """Run the venv's `python ARGS...`; stdout and stderr captured as text."""
        return run_captured(self.command(args), cwd, self.environ(env, extra_paths), timeout, check)


SMOKE = (
    "import numpy, PIL, flatbuffers, tflite_runtime; "
    "from tflite_runtime.interpreter import Interpreter; "
    "print(tflite_runtime.__version__, numpy.__version__, PIL.__version__)"
)


def smoke(env: TfliteEnv) -> str:
    """Import tflite_runtime, NumPy and Pillow in the venv; return their versions line."""
    proc = env.run(["-c", SMOKE], timeout=120)
    if proc.returncode != 0 or not proc.stdout.startswith(REQUIREMENTS["tflite-runtime"]):
        raise EnvironmentBuildError(
            "The tflite-runtime venv cannot import tflite_runtime, numpy and PIL. Rebuild with "
            "`python -m tests.support.tflite_env build --rebuild`. "
            f"Received: exit={proc.returncode} stdout={proc.stdout!r} "
            f"stderr={proc.stderr[-2000:]!r}"
        )
    return proc.stdout.strip()


def _base_python() -> str:
    """The interpreter to base the venv on: the real one behind a running venv."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_tflite_env(rebuild: bool = False, log: Log | None = None) -> TfliteEnv:
    """Return the cached tflite-runtime venv, building it first if needed.

    Raises `EnvironmentUnavailable` on a platform without tflite-runtime wheels (tests skip)
    and `EnvironmentBuildError` when creating the venv or installing fails (tests fail).
    """
    log = log or (lambda _msg: None)
    _check_platform()
    base = cache_root() / "tflite"
    root = base / cache_key(_spec())
    if not rebuild and (root / "manifest.json").exists():
        return TfliteEnv(root)
    with build_lock(base):
        if rebuild and root.exists():
            shutil.rmtree(root)
        if (root / "manifest.json").exists():
            return TfliteEnv(root)
        started = time.perf_counter()
        with fresh_dir(root):
            venv = root / "venv"
            log(f"python -m venv {venv}")
            run_step("python -m venv", [_base_python(), "-m", "venv", venv])
            env = TfliteEnv(root)
            requirements = [f"{name}=={version}" for name, version in REQUIREMENTS.items()]
            log(f"pip install {' '.join(requirements)}")
            run_step(
                "pip install (tflite-runtime venv)",
                [
                    env.python,
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--only-binary=:all:",
                    *requirements,
                ],
                env=env.environ(),
            )
            log("smoke test")
            versions = smoke(env)
            write_json(
                root / "manifest.json",
                {
                    "spec": _spec(),
                    "smoke": versions,
                    "build_seconds": round(time.perf_counter() - started, 1),
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
        return env


def main(argv: Sequence[str] | None = None) -> int:
    """`build`, `info` or `run -- ARGS` for the tflite-runtime venv."""
    return env_main(
        argv,
        prog="python -m tests.support.tflite_env",
        doc=__doc__,
        tag="tflite",
        noun="venv",
        python="the venv's python",
        ensure=ensure_tflite_env,
        smoke=smoke,
        info=lambda env: {"python": str(env.python)},
    )


if __name__ == "__main__":
    sys.exit(main())
