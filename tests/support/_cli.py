"""The `build | info | run -- ARGS` command line shared by the cached test environments."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from tests.support._cache import EnvironmentBuildError, EnvironmentUnavailable

Log = Callable[[str], None]


class CachedEnv(Protocol):
    """What the command line needs of a built environment."""

    root: Path

    @property
    def manifest(self) -> dict: ...

    def command(self, args: Sequence[str | os.PathLike]) -> list[str]: ...

    def environ(
        self, env: Mapping[str, str] | None = None, extra_paths: Sequence[str | os.PathLike] = ()
    ) -> dict[str, str]: ...


def foreign_environ(
    env: Mapping[str, str] | None = None,
    extra_paths: Sequence[str | os.PathLike] = (),
    last_paths: Sequence[str | os.PathLike] = (),
) -> dict[str, str]:
    """The host's environment minus its Python settings, plus `env`, for another Python:
    PYTHONPATH is `extra_paths`, any PYTHONPATH in `env`, then `last_paths`."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
    }
    base["PYTHONNOUSERSITE"] = "1"
    env = dict(env or {})
    paths = [str(p) for p in extra_paths]
    if env.get("PYTHONPATH"):
        paths.extend(env.pop("PYTHONPATH").split(os.pathsep))
    base.update(env)
    paths.extend(str(p) for p in last_paths)
    if paths:
        base["PYTHONPATH"] = os.pathsep.join(paths)
    return base


def run_captured(
    argv: Sequence[str],
    cwd: str | os.PathLike | None,
    env: Mapping[str, str],
    timeout: float,
    check: bool,
) -> subprocess.CompletedProcess:
    """`argv` with stdout and stderr captured as text."""
    return subprocess.run(
        argv, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout, check=check
    )


def env_main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    doc: str | None,
    tag: str,
    noun: str,
    python: str,
    ensure: Callable[..., CachedEnv],
    smoke: Callable[[CachedEnv], str],
    info: Callable[[CachedEnv], dict],
) -> int:
    """Parse `build [--rebuild] | info | run -- ARGS` and do it; return the exit code.

    `ensure(rebuild=, log=)` builds or reuses the environment, `smoke(env)` is the build's
    last line, `info(env)` what `info` prints before the manifest; `noun` ("environment",
    "venv") and `python` (its interpreter, in words) go into the help texts.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help=f"build the {noun}, or reuse the cached one")
    build.add_argument("--rebuild", action="store_true", help=f"discard the cached {noun} first")
    sub.add_parser("info", help=f"print the {noun}'s folder and manifest as JSON")
    run = sub.add_parser("run", help=f"run {python} with ARGS (cwd on PYTHONPATH)")
    run.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(f"[{tag}] {msg}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    try:
        env = ensure(
            rebuild=getattr(ns, "rebuild", False), log=log if ns.command == "build" else None
        )
    except (EnvironmentUnavailable, EnvironmentBuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if ns.command == "build":
        log(f"ready in {time.perf_counter() - started:.1f}s: {env.root}")
        log(smoke(env))
    elif ns.command == "info":
        print(json.dumps({"root": str(env.root), **info(env), **env.manifest}, indent=2))
    else:
        args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
        proc = subprocess.run(
            env.command(args), env=env.environ(extra_paths=[os.getcwd()]), check=False
        )
        return proc.returncode
    return 0
