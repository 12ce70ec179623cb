"""`python -m edge_runtime serve`: the classifier as an HTTP service (Starlette on Uvicorn).

    GET  /            the page (edge_runtime/serve/page.html: no CDN, works offline)
    GET  /healthz     {"status": "ok", "models": [...], "uptime_s", "predictions", "errors"}
    GET  /v1/models   each model's name, input, classes, quantization, backend
    POST /v1/predict  ?model=NAME&top_k=K; the image as the body (Content-Type: image/*) or
                      a multipart field `image` (optional header X-Filename: the image's
                      name, URL-encoded, for /v1/recent) -> {"model", "label", "index",
                      "confidence", "top_k", "latency_us"}
    GET  /v1/recent   the last predictions, newest first (HTTP and --watch)
    GET  /metrics     Prometheus text
    GET  /v1/camera.jpg, /v1/camera/events
                      with --camera SOURCE: the latest classified frame, an event per answer
                      (camera_routes.py; the camera itself: camera*.py, mjpeg.py)
    GET  /app/        with --web SITE: the offline web app of `edgeship deploy web`
                      (edge_runtime/serve/webapp.py; --tls-cert/--tls-key: all of it over HTTPS)

Errors are JSON `{"error": "..."}`: 400 unreadable image, bad parameter or a Host that is not
this service's (guard.py), 401 missing or wrong token (POSTs, when --token is set), 403 a POST
from a foreign Origin, 404 unknown model, 408 an upload slower than --body-timeout, 413 body over
--max-upload-mb (reading stops at the limit) or an image over --max-decoded-mb once decoded to
the model's size, 415 a Content-Type that is neither image/* nor multipart/form-data, 503 busy
(--max-connections, --max-inflight-mb: connections.py, uploads.py).

One `EdgeClassifier` per model (thread-safe); decoding and inference run off the event loop in
worker threads, at most one per core. SIGTERM (systemd's stop) stops accepting, finishes the
requests in flight and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.errors import ImageError
from edge_runtime.image.preprocess import ImageTooLargeError
from edge_runtime.serve.camera_routes import camera_routes
from edge_runtime.serve.connections import bounded_protocol, connection_limit, quiet_accept_errors
from edge_runtime.serve.errors import ServeError
from edge_runtime.serve.guard import HostOriginGuard, allowed_hosts
from edge_runtime.serve.headers import SecurityHeaders
from edge_runtime.serve.metrics import CONTENT_TYPE
from edge_runtime.serve.options import (
    ServeOptions,
    add_serve_parser,
    exposure_warning,
    options_from_args,
    read_token_file,
)
from edge_runtime.serve.service import Service, load_models
from edge_runtime.serve.startup import prepare
from edge_runtime.serve.tls import server_context
from edge_runtime.serve.uploads import HeldUpload, HttpError, check_token, image_bytes, top_k
from edge_runtime.serve.webapp import web_routes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from starlette.applications import Starlette
    from starlette.requests import Request

GRACEFUL_SHUTDOWN_S = 30
PAGE = Path(__file__).with_name("page.html")

__all__ = [
    "ServeError",
    "ServeOptions",
    "Service",
    "add_serve_parser",
    "build_app",
    "exposure_warning",
    "load_models",
    "options_from_args",
    "prepare",
    "read_token_file",
    "run",
    "serve",
]


def health(service: Service) -> dict[str, Any]:
    """GET /healthz: the service is up, its models, where it runs and its counters."""
    options = service.options
    watch = service.watch_state()
    camera = service.camera.health() if service.camera is not None else {"camera": None}
    failed = watch == "failed" or camera["camera"] == "failed"
    return {
        "status": "ok",
        "models": list(service.models),
        "pid": os.getpid(),
        "workdir": os.getcwd(),  # under `deploy push --serve`: the release folder
        "token_required": options.token is not None,
        "watch": watch,
        "watch_folder": str(options.watch) if options.watch else None,
        **camera,
        **service.metrics.snapshot(),
    } | ({"status": "failed"} if failed else {})


async def predict(service: Service, request: Request) -> dict[str, Any]:
    """POST /v1/predict: check the token and query, read the image, classify it off the loop."""
    check_token(request, service.options.token)
    name = request.query_params.get("model", service.default)
    model = service.models.get(name)
    if model is None:
        raise HttpError(
            404,
            "unknown_model",
            f"No model named {name!r}. Models: {', '.join(service.models)}",
        )
    k = top_k(request, len(model.classifier.class_names))
    held = HeldUpload(service.uploads)
    try:
        data, filename = await image_bytes(request, service.options, held)
        record, seconds = await service.classify_off_loop(model, data, k)
    except ImageTooLargeError as err:  # decoded, it would be over --max-decoded-mb
        raise HttpError(413, "too_large_decoded", str(err)) from None
    except ImageError as err:
        raise HttpError(400, "bad_image", str(err)) from None
    finally:
        held.release()
    service.metrics.prediction(model.name, record["label"], "http", seconds)
    service.recent.add(record, "http", filename)
    return record


def build_app(service: Service) -> Starlette:
    """The Starlette application of `service`."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    page = PAGE.read_text(encoding="utf-8")

    def error(status: int, kind: str, message: str) -> JSONResponse:
        service.metrics.error(kind)
        return JSONResponse({"error": message}, status_code=status)

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    async def healthz(request: Request) -> JSONResponse:
        state = health(service)
        return JSONResponse(state, status_code=503 if state["status"] == "failed" else 200)

    async def models(request: Request) -> JSONResponse:
        return JSONResponse(
            {"default": service.default, "models": [m.info() for m in service.models.values()]}
        )

    async def predict_route(request: Request) -> JSONResponse:
        try:
            return JSONResponse(await predict(service, request))
        except HttpError as err:
            return error(err.status, err.kind, err.message)
        except Exception as err:  # noqa: BLE001 - one bad request must not take the server down
            return error(500, "internal", f"Internal error: {type(err).__name__}: {err}")

    async def recent(request: Request) -> JSONResponse:
        return JSONResponse({"predictions": service.recent.list()})

    async def metrics(request: Request) -> Response:
        import anyio.to_thread

        def render() -> str:  # in a thread: vcgencmd may take ms
            text = service.metrics.render(*service.board_state())
            return text + (service.camera.render_metrics() if service.camera else "")

        return Response(await anyio.to_thread.run_sync(render), media_type=CONTENT_TYPE)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return error(exc.status_code, kind, f"{exc.detail}: {request.method} {request.url.path}")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.start_watch()
        if service.camera is not None:
            service.camera.attach(asyncio.get_running_loop())
            service.camera.start()
        try:
            yield
        finally:
            service.stop_watch()
            if service.camera is not None:
                service.camera.stop()

    return Starlette(
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/v1/models", models),
            Route("/v1/predict", predict_route, methods=["POST"]),
            Route("/v1/recent", recent),
            Route("/metrics", metrics),
            *camera_routes(service, error),
            *web_routes(service.options.web),
        ],
        # Starlette types a handler as taking any Exception; it calls this one with its key's
        exception_handlers={HTTPException: http_error},  # type: ignore[dict-item]
        middleware=[
            Middleware(SecurityHeaders, page=page, site=service.options.web),
            Middleware(
                HostOriginGuard,
                hosts=allowed_hosts(service.options.host, service.options.allowed_hosts),
                origins=service.options.allow_origins,
                on_refused=service.metrics.error,
            ),
        ],
        lifespan=lifespan,
    )


def run(
    service: Service, sock: socket.socket, *, announce: Callable[[str], None] | None = None
) -> None:
    """Serve on the bound socket until SIGTERM or SIGINT (then return normally)."""
    import uvicorn

    options = service.options
    host, port = sock.getsockname()[:2]
    tls = server_context(options.tls_cert, options.tls_key, options.tls_key_password_file)
    max_connections = connection_limit(options.max_connections)
    config = uvicorn.Config(
        build_app(service),
        # uvicorn types `http` as a Protocol class but calls it: a factory works (TLS's does)
        http=bounded_protocol(  # type: ignore[arg-type]
            max_connections, options.header_timeout_s, service.metrics.error, ssl_context=tls
        ),
        limit_concurrency=max_connections + 1,  # Uvicorn counts the asking one too
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )
    server = uvicorn.Server(config)

    async def serve_quietly() -> None:
        asyncio.get_running_loop().set_exception_handler(quiet_accept_errors())
        await server.serve(sockets=[sock])

    # A watcher that stops for good (its folder removed or unmounted) stops the service, which
    # then exits non-zero: systemd's Restart= brings it back watching.
    service.on_watch_failure = lambda: setattr(server, "should_exit", True)
    say = announce or (lambda text: print(text, file=sys.stderr, flush=True))
    shown = f"[{host}]" if ":" in host else host
    # Watching before the line that says so: a file landing right after it is not missed.
    service.start_watch()
    if service.camera is not None:  # event streams end when the server stops
        service.camera.stopping = lambda: server.should_exit
    say(
        f"serving {', '.join(service.models)} on http{'s' if options.tls_cert else ''}://"
        f"{shown}:{port} (token {'required' if options.token else 'off'}"
        + (f", watching {options.watch}" if options.watch else "")
        + (", web app at /app/" if options.web else "")
        + (f", camera {service.camera.command.describe}" if service.camera else "")
        + ")"
    )
    # Uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, with the handlers that were
    # installed before it ran: these make that a no-op, so a stop exits 0 (systemd: success).
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        asyncio.run(serve_quietly())
    finally:
        service.stop_watch()
        if service.camera is not None:
            service.camera.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    service.raise_if_watch_failed()


def serve(options: ServeOptions) -> None:
    """Load, bind and serve until SIGTERM or SIGINT."""
    run(*prepare(options))
