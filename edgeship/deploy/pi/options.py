"""`push`'s and `fleet`'s options checked on the desktop, before any host is contacted."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import edgeship.deploy.pi.service as service
from edgeship.deploy.errors import DeployError

if TYPE_CHECKING:
    from edgeship.deploy.pi.bundle_file import LoadedBundle

DEFAULT_KEEP = 3


@dataclass(frozen=True)
class ReleaseOptions:
    """The release options `push` and `fleet` both take, checked once (DeployError)."""

    bench: bool = False
    threads: str | None = None  # with bench: "1,2,4"
    serve: bool = False
    serve_port: int | None = None
    serve_host: str | None = None
    serve_token_file: Path | None = None
    camera: str | None = None  # serve --camera SOURCE
    keep: int = DEFAULT_KEEP  # releases kept on the device (0: all)

    def __post_init__(self) -> None:
        for option, value, needs, on in (
            ("--threads", self.threads, "--bench", self.bench),
            ("--serve-port", self.serve_port, "--serve", self.serve),
            ("--serve-host", self.serve_host, "--serve", self.serve),
            ("--serve-token-file", self.serve_token_file, "--serve", self.serve),
            ("--camera", self.camera, "--serve", self.serve),
        ):
            if value is not None and not on:
                raise DeployError(
                    f"{option} goes with {needs}; add {needs} or leave {option} out. "
                    f"Received: {option}={value}"
                )
        if self.keep < 0:
            raise DeployError(f"--keep takes 0 (all) or more. Received: {self.keep}")
        self.serve_settings  # noqa: B018 - checks --serve-port, --serve-host, --camera

    @property
    def serve_settings(self) -> service.ServeSettings | None:
        """The service's settings with --serve (its token not yet read), else None."""
        if not self.serve:
            return None
        return service.ServeSettings(
            port=service.DEFAULT_SERVE_PORT if self.serve_port is None else self.serve_port,
            host=service.DEFAULT_SERVE_HOST if self.serve_host is None else self.serve_host,
            camera=self.camera,
        )


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
