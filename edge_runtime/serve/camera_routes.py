"""The camera's HTTP side: the latest classified frame and a server-sent event per answer.

    GET /v1/camera.jpg      the latest classified frame (404 without --camera, 503 before one)
    GET /v1/camera/events   text/event-stream: `event: frame` with the answer's JSON (seq, label,
                            confidence, top_k, latency_us, frame_latency_ms) at each new answer

With a token, both need it: the `Authorization: Bearer` header, or `?token=` (a browser's
EventSource and <img> cannot send headers; the service writes no access log).
At most `MAX_LISTENERS` event streams at once (503 past it); a stream ends when the server stops.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from edge_runtime.serve.uploads import HttpError, check_token

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import BaseRoute

    from edge_runtime.serve.camera_live import CameraLive
    from edge_runtime.serve.service import Service

MAX_LISTENERS = 8
HEARTBEAT_S = 15.0
WAIT_S = 1.0  # how often an idle stream looks whether the server is stopping


def _check(service: Service, request: Request) -> CameraLive:
    """The service's camera, after the token check; HttpError otherwise."""
    token = service.options.token
    given = request.query_params.get("token")
    if token is None or given is None or not hmac.compare_digest(given.encode(), token.encode()):
        check_token(request, token)
    camera = service.camera
    if camera is None:
        raise HttpError(404, "no_camera", "This service has no camera: start it with --camera.")
    return camera


def camera_routes(
    service: Service, error: Callable[[int, str, str], JSONResponse]
) -> list[BaseRoute]:
    """The Starlette routes of the camera (none without --camera: then 404 as any path)."""
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    listeners = [0]

    async def frame(request: Request) -> Response:
        try:
            camera = _check(service, request)
        except HttpError as err:
            return error(err.status, err.kind, err.message)
        latest = camera.latest
        if latest is None:
            return error(503, "no_frame", "No camera frame classified yet; retry in a moment.")
        return Response(
            latest[1],
            media_type="image/jpeg",
            headers={"Cache-Control": "no-store", "X-Frame-Seq": str(latest[0])},
        )

    async def events(request: Request) -> Response:
        try:
            camera = _check(service, request)
            if listeners[0] >= MAX_LISTENERS:
                raise HttpError(503, "busy", f"At most {MAX_LISTENERS} camera event streams.")
        except HttpError as err:
            return error(err.status, err.kind, err.message)
        listeners[0] += 1

        async def stream() -> AsyncIterator[str]:
            try:
                sent, idle = 0, 0.0
                yield "retry: 2000\n\n"
                while not camera.stopping():
                    got = await camera.next_event(sent, WAIT_S)
                    if got is None:
                        idle += WAIT_S
                        if idle >= HEARTBEAT_S:
                            idle = 0.0
                            yield ": keep-alive\n\n"
                        continue
                    sent, idle = got[0], 0.0
                    yield f"id: {got[0]}\nevent: frame\ndata: {got[1]}\n\n"
            finally:
                listeners[0] -= 1

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return [Route("/v1/camera.jpg", frame), Route("/v1/camera/events", events)]
