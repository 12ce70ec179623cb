"""`python -m edge_runtime serve`: the classifier as an HTTP service (Starlette on Uvicorn).

    GET  /            the page (edge_runtime/page.html: no CDN, works offline)
    GET  /healthz     {"status": "ok", "models": [...], "uptime_s", "predictions", "errors"}
    GET  /v1/models   each model's name, input, classes, quantization, backend
    POST /v1/predict  ?model=NAME&top_k=K; the image as the body (Content-Type: image/*) or
                      a multipart field `image` (optional header X-Filename: the image's
                      name, URL-encoded, for /v1/recent) -> {"model", "label", "index",
                      "confidence", "top_k", "latency_us"}
    GET  /v1/recent   the last predictions, newest first (HTTP and --watch)
    GET  /metrics     Prometheus text

Errors are JSON `{"error": "..."}`: 400 unreadable image or bad parameter, 401 missing or wrong
token (POSTs, when --token is set), 404 unknown model, 413 body over --max-upload-mb (reading
stops at the limit), 415 a Content-Type that is neither image/* nor multipart/form-data.

One `EdgeClassifier` per model (thread-safe); decoding and inference run off the event loop in
worker threads, at most one per core. SIGTERM (systemd's stop) stops accepting, finishes the
requests in flight and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from edge_runtime.errors import EdgeRuntimeError, EdgeshipError, ImageError
from edge_runtime.metrics import CONTENT_TYPE, ServeMetrics, board_state

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_UPLOAD_MB = 10
DEFAULT_TOP_K = 3
RECENT = 30  # predictions kept for the page's "last predictions"
GRACEFUL_SHUTDOWN_S = 30
PAGE = Path(__file__).with_name("page.html")

__all__ = [
    "ServeError",
    "ServeOptions",
    "Service",
    "build_app",
    "load_models",
    "prepare",
    "run",
    "serve",
]


class ServeError(EdgeRuntimeError):
    """The service cannot start: bad option, unusable model or labels, port taken."""


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

    def __post_init__(self) -> None:
        if not self.models:
            raise ServeError("Pass at least one MODEL.tflite. Received: none")
        if not 0 <= self.port <= 65535:
            raise ServeError(f"--port must be in 0..65535. Received: --port {self.port}")
        if not self.max_upload_mb > 0:
            raise ServeError(f"--max-upload-mb must be > 0. Received: {self.max_upload_mb}")
        if self.threads is not None and self.threads < 1:
            raise ServeError(
                f"--threads must be at least 1 (leave it out for the runtime's default). "
                f"Received: --threads {self.threads}"
            )
        if self.token is not None and not self.token.strip():
            raise ServeError("--token must not be empty. Received: an empty token")
        if self.results is not None and self.watch is None:
            raise ServeError("--results goes with --watch DIR. Received: --results only")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class HttpError(Exception):
    """A request refused with `status` and a JSON `{"error": message}`; `kind` for /metrics."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


@dataclass(frozen=True)
class _Model:
    name: str
    classifier: Any

    def info(self) -> dict[str, Any]:
        clf = self.classifier
        meta = clf.metadata or {}
        return {
            "name": self.name,
            "file": str(clf.path),
            "size_bytes": clf.size_bytes,
            "input": {
                "shape": list(clf.input_shape),
                "dtype": clf.input_spec.dtype.name,
                "scale": clf.input_scale,
                "offset": clf.input_offset,
                "background": clf.background,
            },
            "classes": list(clf.class_names),
            "quantization": (meta.get("quantization") or {}).get("mode")
            or clf.input_spec.dtype.name,
            "backend": f"{clf.backend.name} {clf.backend.version}",
        }


def load_models(options: ServeOptions) -> dict[str, _Model]:
    """One classifier per model file, named by its stem (`model_int8`); --labels applied."""
    from edge_runtime.classifier import EdgeClassifier

    models: dict[str, _Model] = {}
    for path in options.models:
        path = Path(path)
        if path.stem in models:
            raise ServeError(
                f"Two models share the name {path.stem!r} (file stem); rename one. "
                f"Received: {models[path.stem].classifier.path} and {path}"
            )
        clf = EdgeClassifier.load(
            path, num_threads=options.threads, backend=options.backend, labels=options.labels
        )
        models[path.stem] = _Model(path.stem, clf)
    return models


def _record(model: _Model, pred: Any, top_k: int, seconds: float) -> dict[str, Any]:
    """The answer to one image: the CLI's `predict --json` record (same rounding), with the
    model's name and the latency instead of the image's path."""
    from edge_runtime.cli import prediction_record

    record = prediction_record("", pred, top_k)
    del record["image"]
    return {"model": model.name, **record, "latency_us": round(seconds * 1e6, 1)}


class Service:
    """The models, counters and recent predictions behind the HTTP routes and the watcher."""

    def __init__(self, options: ServeOptions, models: dict[str, _Model]) -> None:
        self.options = options
        self.models = models
        self.default = next(iter(models))
        self.metrics = ServeMetrics(list(models))
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._recent_lock = threading.Lock()
        self._results_lock = threading.Lock()
        self._watcher = None
        self._limiter = None  # an anyio CapacityLimiter, made inside the event loop

    # ------------------------------------------------------------------------- inference
    def classify(self, model: _Model, data: bytes, top_k: int) -> tuple[dict[str, Any], float]:
        """Decode, preprocess and classify one image's bytes (in a worker thread): the
        response record and the seconds it took."""
        from edge_runtime.preprocess import load_image

        clf = model.classifier
        started = time.perf_counter()
        img = load_image(data, max_pixels=clf.max_pixels)
        try:  # the classifier prepares the photo as predict does: its resize rule, invert, ...
            pred = clf.predict(img)[0]
        finally:
            img.close()
        seconds = time.perf_counter() - started
        return _record(model, pred, top_k, seconds), seconds

    def remember(self, record: dict[str, Any], source: str, image: str | None) -> None:
        """Keep a prediction for the page's "last predictions"."""
        entry = {"time": time.time(), "source": source, "image": image, **record}
        entry.pop("top_k", None)
        with self._recent_lock:
            self._recent.appendleft(entry)

    def recent(self) -> list[dict[str, Any]]:
        with self._recent_lock:
            return list(self._recent)

    # ---------------------------------------------------------------------------- watch
    def on_watched_file(self, path: Path) -> None:
        """Classify one complete file from --watch; append its JSON line to --results."""
        model = self.models[self.default]
        try:
            data = path.read_bytes()
            record, seconds = self.classify(model, data, DEFAULT_TOP_K)
        except (OSError, EdgeshipError) as err:
            self.metrics.error("watch_bad_image")
            reason = getattr(err, "strerror", None) or str(err)
            line = {"time": time.time(), "image": str(path), "error": reason}
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the watcher
            self.metrics.error("internal")
            reason = f"{type(err).__name__}: {err}"
            line = {"time": time.time(), "image": str(path), "error": reason}
        else:
            self.metrics.prediction(model.name, record["label"], "watch", seconds)
            self.remember(record, "watch", path.name)
            line = {"time": time.time(), "image": str(path), **record}
        if self.options.results is not None:
            text = json.dumps(line, ensure_ascii=False) + "\n"
            try:
                with self._results_lock, open(self.options.results, "a", encoding="utf-8") as f:
                    f.write(text)
            except OSError as err:  # disk full, folder gone: say so in the log, keep watching
                self.metrics.error("results_write")
                print(f"warning: cannot append to --results ({err.strerror}). Received: "
                      f"path={self.options.results}", file=sys.stderr, flush=True)

    def start_watch(self) -> None:
        if self.options.watch is None or self._watcher is not None:
            return
        from edge_runtime.watch import FolderWatcher

        self._watcher = FolderWatcher(self.options.watch, self.on_watched_file).start()

    def stop_watch(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    # ------------------------------------------------------------------------- requests
    def check_token(self, request: Any) -> None:
        token = self.options.token
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            raise HttpError(
                401,
                "unauthorized",
                "This server needs its token: send the header 'Authorization: Bearer TOKEN'.",
            )

    async def read_body(self, request: Any) -> bytes:
        """The request body, refused with 413 as soon as it passes --max-upload-mb."""
        limit = self.options.max_upload_bytes
        too_large = HttpError(
            413,
            "too_large",
            f"The upload is larger than the server's limit of {self.options.max_upload_mb:g} MB "
            "(--max-upload-mb). Send a smaller image.",
        )
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise HttpError(400, "bad_request", f"Bad Content-Length. Received: {length!r}")
            if int(length) > limit:
                raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def image_bytes(self, request: Any) -> tuple[bytes, str | None]:
        """The uploaded image: the body itself (image/*) or the multipart field `image`."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype.startswith("image/"):
            name = request.headers.get("x-filename")
            return await self.read_body(request), unquote(name)[:200] if name else None
        if ctype != "multipart/form-data":
            raise HttpError(
                415,
                "unsupported_type",
                "Send the image as the body with Content-Type image/* (image/png, image/jpeg, "
                f"...) or as the multipart field 'image'. Received: Content-Type {ctype or 'none'}",
            )
        body = await self.read_body(request)
        from starlette.requests import Request

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
        except Exception as err:  # starlette's MultiPartException and parser errors
            raise HttpError(400, "bad_request", f"Unreadable multipart body ({err}).") from None
        try:
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise HttpError(
                    400,
                    "bad_request",
                    "The multipart body has no file field 'image'. Received: fields "
                    f"{sorted(form.keys())}",
                )
            return await upload.read(), upload.filename
        finally:
            await form.close()

    async def predict(self, request: Any) -> dict[str, Any]:
        """POST /v1/predict."""
        import anyio.to_thread

        self.check_token(request)
        name = request.query_params.get("model", self.default)
        model = self.models.get(name)
        if model is None:
            raise HttpError(
                404,
                "unknown_model",
                f"No model named {name!r}. Models: {', '.join(self.models)}",
            )
        raw_k = request.query_params.get("top_k", str(DEFAULT_TOP_K))
        if not raw_k.isdigit() or int(raw_k) < 1:
            raise HttpError(400, "bad_request", f"top_k must be an integer >= 1. Received: {raw_k}")
        data, filename = await self.image_bytes(request)
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.options.workers)
        try:
            record, seconds = await anyio.to_thread.run_sync(
                self.classify, model, data, int(raw_k), limiter=self._limiter
            )
        except ImageError as err:
            raise HttpError(400, "bad_image", str(err)) from None
        self.metrics.prediction(model.name, record["label"], "http", seconds)
        self.remember(record, "http", filename)
        return record

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "models": list(self.models),
            "pid": os.getpid(),
            "workdir": os.getcwd(),  # under `deploy push --serve`: the release folder
            "token_required": self.options.token is not None,
            "watch": str(self.options.watch) if self.options.watch else None,
            **self.metrics.snapshot(),
        }

    def metrics_text(self) -> str:
        return self.metrics.render(*board_state())


def build_app(service: Service):
    """The Starlette application of `service`."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    page = PAGE.read_text(encoding="utf-8")

    def error(status: int, kind: str, message: str) -> JSONResponse:
        service.metrics.error(kind)
        return JSONResponse({"error": message}, status_code=status)

    async def index(request):
        return HTMLResponse(page)

    async def healthz(request):
        return JSONResponse(service.health())

    async def models(request):
        return JSONResponse(
            {"default": service.default, "models": [m.info() for m in service.models.values()]}
        )

    async def predict(request):
        try:
            return JSONResponse(await service.predict(request))
        except HttpError as err:
            return error(err.status, err.kind, err.message)
        except Exception as err:  # noqa: BLE001 - one bad request must not take the server down
            return error(500, "internal", f"Internal error: {type(err).__name__}: {err}")

    async def recent(request):
        return JSONResponse({"predictions": service.recent()})

    async def metrics(request):
        import anyio.to_thread

        text = await anyio.to_thread.run_sync(service.metrics_text)  # vcgencmd may take ms
        return Response(text, media_type=CONTENT_TYPE)

    async def http_error(request, exc: HTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return error(exc.status_code, kind, f"{exc.detail}: {request.method} {request.url.path}")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.start_watch()
        try:
            yield
        finally:
            service.stop_watch()

    return Starlette(
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/v1/models", models),
            Route("/v1/predict", predict, methods=["POST"]),
            Route("/v1/recent", recent),
            Route("/metrics", metrics),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )


def _listen(host: str, port: int) -> socket.socket:
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
    if options.watch is not None and not Path(options.watch).is_dir():
        raise ServeError(
            f"--watch: not a folder; create it first (mkdir -p). Received: {options.watch}"
        )
    if options.results is not None:
        try:
            with open(options.results, "a", encoding="utf-8"):
                pass
        except OSError as err:
            raise ServeError(
                f"Cannot write --results ({err.strerror}). Received: path={options.results}"
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
    return service, _listen(options.host, options.port)


def run(service: Service, sock: socket.socket, *, announce: Any = None) -> None:
    """Serve on the bound socket until SIGTERM or SIGINT (then return normally)."""
    import uvicorn

    options = service.options
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        build_app(service),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    say = announce or (lambda text: print(text, file=sys.stderr, flush=True))
    shown = f"[{host}]" if ":" in host else host
    # Watching before the line that says so: a file landing right after it is not missed.
    service.start_watch()
    say(
        f"serving {', '.join(service.models)} on http://{shown}:{port} "
        f"(token {'required' if options.token else 'off'}"
        + (f", watching {options.watch}" if options.watch else "")
        + ")"
    )
    # Uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, with the handlers that were
    # installed before it ran: these make that a no-op, so a stop exits 0 (systemd: success).
    previous = {
        sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        service.stop_watch()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()


def serve(options: ServeOptions) -> None:
    """Load, bind and serve until SIGTERM or SIGINT."""
    run(*prepare(options))


def options_from_args(args: Any) -> ServeOptions:
    """`ServeOptions` from the argparse namespace of `python -m edge_runtime serve`."""
    return ServeOptions(
        models=tuple(Path(m) for m in args.models),
        host=args.host,
        port=args.port,
        labels=Path(args.labels) if args.labels else None,
        max_upload_mb=args.max_upload_mb,
        threads=args.threads,
        token=_token(args),
        watch=Path(args.watch) if args.watch else None,
        results=Path(args.results) if args.results else None,
        backend=args.backend,
    )


def read_token_file(path: str | os.PathLike, option: str = "--token-file") -> str:
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
    token_file = getattr(args, "token_file", None)
    if token_file is not None and args.token is not None:
        raise ServeError(
            "Pass --token or --token-file, not both. Received: --token and --token-file "
            f"{token_file}"
        )
    if token_file is not None:
        return read_token_file(token_file)
    return args.token if args.token is not None else os.environ.get("EDGESHIP_TOKEN")


def add_serve_parser(sub: Any) -> None:
    """The `serve` subcommand's arguments."""
    p = sub.add_parser("serve", help="serve the models over HTTP (page, JSON API, metrics)")
    p.add_argument("models", nargs="+", metavar="MODEL", help=".tflite model files")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}; 0.0.0.0: the LAN, then use --token)",
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT,
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
        "--threads", type=int, default=None, metavar="N",
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


def exposure_warning(options: ServeOptions) -> str | None:
    """A warning line when the service is exposed beyond loopback without a token."""
    if options.token is None and options.host not in ("127.0.0.1", "localhost", "::1"):
        return (
            f"warning: serving on {options.host} without --token: anyone on the network can "
            "use the classifier; pass --token-file FILE (or --token TOKEN)"
        )
    return None
