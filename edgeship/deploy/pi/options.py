"""`push`'s and `fleet`'s options checked on the desktop, before any host is contacted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgeship.deploy.errors import DeployError
from edgeship.deploy.pi import service
from edgeship.deploy.pi.bundle_file import LoadedBundle


def check_push_options(
    b: LoadedBundle, device_target: str | None, bench_threads: str | None
) -> None:
    """`--target` (known, in the bundle) and `--threads` (parsable)."""
    from edge_runtime.device.bench import parse_threads
    from edge_runtime.device.targets import get_target

    if device_target is not None:
        try:
            get_target(device_target)
        except ValueError as err:
            raise DeployError(f"--target: {err}") from None
        if device_target not in b.manifest["targets"]:
            raise DeployError(
                f"--target {device_target} is not in the bundle (built for "
                f"{', '.join(b.manifest['targets'])}); rebuild it with `edgeship deploy bundle "
                f"RUN --target {device_target}`. Received: --target={device_target}"
            )
    if bench_threads is not None:
        try:
            parse_threads(bench_threads)
        except ValueError as err:
            raise DeployError(str(err)) from None


def with_token(serve: service.ServeSettings | None, path: Path) -> service.ServeSettings:
    """`serve` needing the token in `path`, checked (readable, one line) before any host."""
    from edge_runtime.errors import EdgeshipError
    from edge_runtime.serve.options import read_token_file

    if serve is None:
        raise DeployError(
            "--serve-token-file goes with --serve; add --serve. "
            f"Received: --serve-token-file {path}"
        )
    try:
        read_token_file(path, option="--serve-token-file")
    except EdgeshipError as err:
        raise DeployError(str(err)) from None
    return dataclasses.replace(serve, token=True)
