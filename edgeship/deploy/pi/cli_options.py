"""The Typer options `deploy push` and `deploy fleet` share (checked by `ReleaseOptions`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeship.deploy.pi.options import DEFAULT_KEEP, ReleaseOptions

Bench = Annotated[
    bool, typer.Option("--bench", help="Run `python -m edge_runtime bench --json` there.")
]
Threads = Annotated[
    str | None,
    typer.Option("--threads", help="With --bench: thread counts to measure, e.g. 1,2,4."),
]
Serve = Annotated[
    bool,
    typer.Option(
        "--serve",
        help="Run `python -m edge_runtime serve` as a service (systemd user unit) on the "
        "new release; roll back if its /healthz fails.",
    ),
]
ServePort = Annotated[
    int | None,
    typer.Option("--serve-port", help="With --serve: the service's port (default: 8080)."),
]
ServeHost = Annotated[
    str | None,
    typer.Option(
        "--serve-host",
        help="With --serve: the service's address (default: 127.0.0.1; 0.0.0.0: the LAN).",
    ),
]
ServeTokenFile = Annotated[
    Path | None,
    typer.Option(
        "--serve-token-file",
        help="With --serve: POSTs need 'Authorization: Bearer TOKEN', TOKEN the file's one "
        "line (copied to the device with mode 0600, never on a command line).",
    ),
]
Camera = Annotated[
    str | None,
    typer.Option(
        "--camera",
        help="With --serve: the service classifies a camera live (`serve --camera SOURCE`: "
        "auto, rpicam, v4l2:/dev/videoN, cmd:COMMAND; docs/camera.md).",
    ),
]
Keep = Annotated[int, typer.Option("--keep", help="Releases to keep on the device (0: all).")]

__all__ = [
    "DEFAULT_KEEP",
    "Bench",
    "Camera",
    "Keep",
    "ReleaseOptions",
    "Serve",
    "ServeHost",
    "ServePort",
    "ServeTokenFile",
    "Threads",
]
