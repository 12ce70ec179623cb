"""What `serve` was asked to do: its options, their checks, its CLI arguments and token."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.model_bounds import DEFAULT_MAX_MODEL_MB, max_model_option
from edge_runtime.serve.camera_args import (
    DEFAULT_CAMERA_FPS,
    DEFAULT_CAMERA_SAVE_MAX,
    DEFAULT_CAMERA_TIMEOUT_S,
    MAX_CAMERA_FPS,
    add_camera_arguments,
    camera_options,
)
from edge_runtime.serve.errors import ServeError
from edge_runtime.serve.webapp import add_web_arguments, check_site, check_tls

if TYPE_CHECKING:
    import argparse

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_UPLOAD_MB = 10
# Bounds for a Pi 4 with 2 GB (docs/serve.md): connections held, seconds to send the request
# headers and the body, megabytes of uploads held in memory at once over all requests.
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 60.0
DEFAULT_MAX_INFLIGHT_MB = 64
# Decoded pixels one upload may take (after a JPEG's decode to size): a 12 MP PNG (46 MiB as
# RGBX) or a 6300x6300 palette PNG (38 MiB) pass; a 16-bit one of that size (76 MiB) gets 413.
DEFAULT_MAX_DECODED_MB = 48
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeOptions:
    """Everything `serve` was asked to do."""

    models: tuple[Path, ...]
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    labels: Path | None = None
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    threads: int | None = None
    token: str | None = None
    watch: Path | None = None
    results: Path | None = None
    backend: str | None = None
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    web: Path | None = None  # the `deploy web` site, served at /app/ (edge_runtime/serve/webapp.py)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_inflight_mb: float = DEFAULT_MAX_INFLIGHT_MB
    allowed_hosts: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    max_decoded_mb: float = DEFAULT_MAX_DECODED_MB
    full_decode: bool = False
    camera: str | None = None  # --camera SOURCE (edge_runtime/serve/camera_source.py)
    camera_fps: float = DEFAULT_CAMERA_FPS
    camera_size: tuple[int, int] | None = None  # None: the model's (camera_source.default_size)
    camera_timeout_s: float = DEFAULT_CAMERA_TIMEOUT_S
    camera_save: Path | None = None
    camera_save_max: int = DEFAULT_CAMERA_SAVE_MAX
    token_file: Path | None = None  # where --token-file read the token (its mode is checked)
    tls_key_password_file: Path | None = None
    strict_permissions: bool = False
    max_model_mb: float = DEFAULT_MAX_MODEL_MB

    def __post_init__(self) -> None:
        if not self.models:
            raise ServeError("Pass at least one MODEL.tflite. Received: none")
        if not 0 <= self.port <= 65535:
            raise ServeError(f"--port must be in 0..65535. Received: --port {self.port}")
        if not self.max_upload_mb > 0:
            raise ServeError(f"--max-upload-mb must be > 0. Received: {self.max_upload_mb}")
        if not self.max_decoded_mb > 0:
            raise ServeError(f"--max-decoded-mb must be > 0. Received: {self.max_decoded_mb}")
        if self.threads is not None and self.threads < 1:
            raise ServeError(
                f"--threads must be at least 1 (leave it out for the runtime's default). "
                f"Received: --threads {self.threads}"
            )
        if self.token is not None and not self.token.strip():
            raise ServeError("--token must not be empty. Received: an empty token")
        if self.results is not None and self.watch is None and self.camera is None:
            raise ServeError(
                "--results goes with --watch DIR or --camera SOURCE. Received: --results only"
            )
        self._check_camera()
        if self.web is not None:
            check_site(Path(self.web))
        check_tls(self.tls_cert, self.tls_key)
        self._check_bounds()
        loose = self.secret_warnings() if self.strict_permissions else []
        if loose:
            raise ServeError(
                f"{loose[0]} (--strict-permissions refuses to start). "
                "Received: --strict-permissions"
            )

    def secret_warnings(self) -> list[str]:
        """One line per secret file (TLS key, its passphrase, token file) open to others."""
        from edge_runtime.serve.tls import loose_secrets

        return loose_secrets(
            [
                ("--tls-key", self.tls_key),
                ("--tls-key-password-file", self.tls_key_password_file),
                ("--token-file", self.token_file),
            ]
        )

    def _check_camera(self) -> None:
        """The --camera-* options are in range and come with --camera."""
        if self.camera is None:
            if self.camera_save is not None:
                raise ServeError("--camera-save goes with --camera. Received: --camera-save only")
            return
        if not 0 < self.camera_fps <= MAX_CAMERA_FPS:
            raise ServeError(
                f"--camera-fps must be in (0, {MAX_CAMERA_FPS:g}]. Received: {self.camera_fps:g}"
            )
        if not self.camera_timeout_s > 0:
            raise ServeError(f"--camera-timeout must be > 0. Received: {self.camera_timeout_s:g}")
        if self.camera_save_max < 1:
            raise ServeError(
                f"--camera-save-max must be at least 1. Received: {self.camera_save_max}"
            )

    def _check_bounds(self) -> None:
        """The connection and upload bounds are positive."""
        if self.max_connections < 1:
            raise ServeError(
                f"--max-connections must be at least 1. Received: {self.max_connections}"
            )
        for option, value in (
            ("--header-timeout", self.header_timeout_s),
            ("--body-timeout", self.body_timeout_s),
        ):
            if not value > 0:
                raise ServeError(f"{option} must be > 0 seconds. Received: {option} {value}")
        if not self.max_inflight_mb > 0:
            raise ServeError(f"--max-inflight-mb must be > 0. Received: {self.max_inflight_mb}")

    @property
    def max_upload_bytes(self) -> int:
        """--max-upload-mb in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_inflight_bytes(self) -> int:
        """--max-inflight-mb in bytes, at least one upload's worth (--max-upload-mb)."""
        return int(max(self.max_inflight_mb, self.max_upload_mb) * 1024 * 1024)

    @property
    def max_decoded_bytes(self) -> int:
        """--max-decoded-mb in bytes."""
        return int(self.max_decoded_mb * 1024 * 1024)


def exposure_warning(options: ServeOptions) -> str | None:
    """A warning line when the service is exposed beyond loopback without a token."""
    if options.token is None and options.host not in LOOPBACK:
        return (
            f"warning: serving on {options.host} without --token: anyone on the network can "
            "use the classifier; pass --token-file FILE (or --token TOKEN)"
        )
    return None


def read_token_file(path: str | os.PathLike[str], option: str = "--token-file") -> str:
    """The token in `path` (its first line, stripped); ServeError when unreadable or empty."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ServeError(
            f"Cannot read the token file ({reason}); pass a readable file holding the token on "
            f"one line. Received: {option} {path}"
        ) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise ServeError(
            "The token file must hold the token on one line "
            f"({'it is empty' if not lines else f'it has {len(lines)} lines'}). "
            f"Received: {option} {path}"
        )
    return lines[0]


def _token(args: Any) -> str | None:
    """--token, --token-file (never both) or EDGESHIP_TOKEN."""
    if args.token_file is not None and args.token is not None:
        raise ServeError(
            "Pass --token or --token-file, not both. Received: --token and --token-file "
            f"{args.token_file}"
        )
    if args.token_file is not None:
        return read_token_file(args.token_file)
    return args.token if args.token is not None else os.environ.get("EDGESHIP_TOKEN")


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def options_from_args(args: argparse.Namespace) -> ServeOptions:
    """`ServeOptions` from the argparse namespace of `python -m edge_runtime serve`."""
    return ServeOptions(
        models=tuple(Path(m) for m in args.models),
        host=args.host,
        port=args.port,
        labels=_path(args.labels),
        max_upload_mb=args.max_upload_mb,
        max_decoded_mb=args.max_decoded_mb,
        full_decode=args.full_decode,
        threads=args.threads,
        token=_token(args),
        watch=_path(args.watch),
        results=_path(args.results),
        backend=args.backend,
        web=_path(args.web),
        tls_cert=_path(args.tls_cert),
        tls_key=_path(args.tls_key),
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_inflight_mb=args.max_inflight_mb,
        allowed_hosts=tuple(args.allowed_host or ()),
        allow_origins=tuple(args.allow_origin or ()),
        **camera_options(args),
        token_file=_path(args.token_file),
        tls_key_password_file=_path(args.tls_key_password_file),
        strict_permissions=args.strict_permissions,
        max_model_mb=args.max_model_mb,
    )


def add_serve_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """The `serve` subcommand's arguments."""
    p = sub.add_parser("serve", help="serve the models over HTTP (page, JSON API, metrics)")
    p.add_argument("models", nargs="+", metavar="MODEL", help=".tflite model files")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}; 0.0.0.0: the LAN, then use --token)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"TCP port (default {DEFAULT_PORT}; 0: any free one)",
    )
    p.add_argument(
        "--labels",
        default=None,
        metavar="FILE",
        help="class names, one per line in output order (replaces the models' own)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        metavar="MB",
        help=f"largest image upload (default {DEFAULT_MAX_UPLOAD_MB}; larger: 413)",
    )
    p.add_argument(
        "--max-decoded-mb",
        type=float,
        default=DEFAULT_MAX_DECODED_MB,
        metavar="MB",
        help="largest decoded image, after a JPEG's decode to the model's size "
        f"(default {DEFAULT_MAX_DECODED_MB}; larger: 413)",
    )
    p.add_argument(
        "--full-decode",
        action="store_true",
        help="decode photos in full before resizing, not at the model's size (slower, more "
        "memory; docs/photos.md)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="interpreter threads per model (default: the runtime's)",
    )
    p.add_argument(
        "--token",
        default=None,
        help="require 'Authorization: Bearer TOKEN' on POSTs (or set EDGESHIP_TOKEN); "
        "visible in `ps`: prefer --token-file",
    )
    p.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help="like --token, the token read from FILE (one line; keep it mode 0600)",
    )
    p.add_argument(
        "--strict-permissions",
        action="store_true",
        help="refuse to start when the token file or TLS key is readable by group or others "
        "(default: a warning)",
    )
    p.add_argument("--watch", default=None, metavar="DIR", help="classify new images in DIR")
    p.add_argument(
        "--results",
        default=None,
        metavar="FILE",
        help="with --watch: append one JSON line per image to FILE",
    )
    p.add_argument(
        "--backend",
        default=None,
        help="ai_edge_litert, tflite_runtime or tensorflow (default: the first installed)",
    )
    add_web_arguments(p)
    add_camera_arguments(p)
    _add_bound_arguments(p)


def _add_bound_arguments(p: Any) -> None:
    """The connection, upload, model, Host and Origin bounds of `serve` (docs/serve.md)."""
    max_model_option(p)
    p.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help=f"connections held at once (default {DEFAULT_MAX_CONNECTIONS}, kept under "
        "`ulimit -n`); past it idle ones are closed, else 503",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT_S,
        metavar="S",
        help=f"seconds to send the request headers (default {DEFAULT_HEADER_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT_S,
        metavar="S",
        help=f"seconds to send an upload (default {DEFAULT_BODY_TIMEOUT_S:g}; later: 408)",
    )
    p.add_argument(
        "--max-inflight-mb",
        type=float,
        default=DEFAULT_MAX_INFLIGHT_MB,
        metavar="MB",
        help=f"uploads held in memory at once, all requests (default {DEFAULT_MAX_INFLIGHT_MB}; "
        "past it: 503)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="also answer to this Host name (repeatable; '*.example.com' patterns; '*': any)",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="also take POSTs from pages of this origin, e.g. https://app.example (repeatable)",
    )
