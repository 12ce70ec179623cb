"""Reading a POST /v1/predict request: its token, its query, its image within the upload limit."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import unquote

from edge_runtime.serve_options import ServeOptions

DEFAULT_TOP_K = 3
MAX_FILENAME = 200  # characters of X-Filename kept for /v1/recent


class HttpError(Exception):
    """A request refused with `status` and a JSON `{"error": message}`; `kind` for /metrics."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def check_token(request: Any, token: str | None) -> None:
    """Refuse with 401 unless the request carries `Authorization: Bearer TOKEN` (when set)."""
    if token is None:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode(), token.encode()
    ):
        raise HttpError(
            401,
            "unauthorized",
            "This server needs its token: send the header 'Authorization: Bearer TOKEN'.",
        )


def top_k(request: Any) -> int:
    """The `top_k` query parameter (default 3); 400 unless an integer >= 1."""
    raw = request.query_params.get("top_k", str(DEFAULT_TOP_K))
    if not raw.isdigit() or int(raw) < 1:
        raise HttpError(400, "bad_request", f"top_k must be an integer >= 1. Received: {raw}")
    return int(raw)


async def read_body(request: Any, options: ServeOptions) -> bytes:
    """The request body, refused with 413 as soon as it passes --max-upload-mb."""
    limit = options.max_upload_bytes
    too_large = HttpError(
        413,
        "too_large",
        f"The upload is larger than the server's limit of {options.max_upload_mb:g} MB "
        "(--max-upload-mb). Send a smaller image.",
    )
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise HttpError(400, "bad_request", f"Bad Content-Length. Received: {length!r}")
    if length is not None and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def image_bytes(request: Any, options: ServeOptions) -> tuple[bytes, str | None]:
    """The uploaded image and its name: the body itself (image/*) or the multipart field
    `image`; 415 for any other Content-Type."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith("image/"):
        name = request.headers.get("x-filename")
        return await read_body(request, options), unquote(name)[:MAX_FILENAME] if name else None
    if ctype != "multipart/form-data":
        raise HttpError(
            415,
            "unsupported_type",
            "Send the image as the body with Content-Type image/* (image/png, image/jpeg, "
            f"...) or as the multipart field 'image'. Received: Content-Type {ctype or 'none'}",
        )
    return await _multipart_image(request, await read_body(request, options))


async def _multipart_image(request: Any, body: bytes) -> tuple[bytes, str | None]:
    """The file field `image` of a multipart `body` already read within the limit."""
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
