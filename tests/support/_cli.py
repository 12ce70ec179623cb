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
