"""Everything `serve` can fail at before serving: its outputs, its models and its socket."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from edge_runtime.serve.errors import ServeError
from edge_runtime.serve.options import ServeOptions
from edge_runtime.serve.service import Service, load_models, open_results


def _listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port and listening, inheritable (for Uvicorn)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ServeError(f"Unknown --host ({err.strerror}). Received: --host {host}") from None
    family, kind, proto, _, address = infos[0]
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it a keep-alive client waits ~40 ms per response (Nagle + delayed ACK).
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise ServeError(
            f"Cannot listen on {host}:{port} ({err.strerror}); pick another --port or stop the "
            f"other server. Received: --host {host} --port {port}"
        ) from None
    sock.set_inheritable(True)
    return sock


def _check_outputs(options: ServeOptions) -> None:
    """--watch is a folder and --results can be appended to."""
    if options.watch is not None and not Path(options.watch).is_dir():
        raise ServeError(
            f"--watch: not a folder; create it first (mkdir -p). Received: {options.watch}"
        )
    if options.results is None:
        return
    try:
        with open_results(options.results):
            pass
    except OSError as err:
        why = "a symlink: not followed" if err.errno == errno.ELOOP else err.strerror
        raise ServeError(
            f"Cannot write --results ({why}). Received: path={options.results}"
        ) from None


def prepare(options: ServeOptions) -> tuple[Service, socket.socket]:
    """Check the outputs, load the models and bind: everything that can fail before serving."""
    try:
        import uvicorn  # noqa: F401 - the check is the import
        from starlette.applications import Starlette  # noqa: F401
    except ImportError as err:
        raise ServeError(
            "serve needs Starlette and Uvicorn: pip install 'edgeship[edge]' (or starlette "
            f"uvicorn python-multipart). Received: {err}"
        ) from None
    _check_outputs(options)
    service = Service(options, load_models(options))
    if options.camera is not None:
        from edge_runtime.serve.camera_setup import attach_camera

        attach_camera(service, options.camera)
    return service, _listen(options.host, options.port)
