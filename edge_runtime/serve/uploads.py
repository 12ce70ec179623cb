"""Reading a POST /v1/predict request: its token, its query, its image within the upload limit."""

from __future__ import annotations

import hmac
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from edge_runtime.records import DEFAULT_TOP_K
from edge_runtime.serve.options import ServeOptions

if TYPE_CHECKING:
    from starlette.requests import Request

MAX_FILENAME = 200  # characters of X-Filename kept for /v1/recent
MAX_TOP_K_DIGITS = 6


class HttpError(Exception):
    """A request refused with `status` and a JSON `{"error": message}`; `kind` for /metrics."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def check_token(request: Request, token: str | None) -> None:
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


def top_k(request: Request, classes: int) -> int:
    """The `top_k` query parameter (default 3, at most `classes`): ASCII digits in 1..classes,
    else 400 (`?top_k=²` is a digit to `str.isdigit`, not to `int`)."""
    raw = request.query_params.get("top_k")
    if raw is None:
        return min(DEFAULT_TOP_K, classes)
    ok = raw.isascii() and raw.isdigit() and len(raw) <= MAX_TOP_K_DIGITS
    if not ok or not 1 <= int(raw) <= classes:
        raise HttpError(
            400,
            "bad_request",
            f"top_k must be a whole number from 1 to {classes} (the model's classes). "
            f"Received: {raw[:20]!r}",
        )
    return int(raw)


class UploadBudget:
    """The bytes of uploads held in memory by all requests together, at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        """Hold `n` more bytes; False (nothing held) when that passes the limit."""
        with self._lock:
            if self.held + n > self.limit:
                return False
            self.held += n
            return True

    def give_back(self, n: int) -> None:
        """Release `n` bytes held by `take`."""
        with self._lock:
            self.held -= n


class HeldUpload:
    """One request's share of the budget: taken chunk by chunk, released once at the end."""

    def __init__(self, budget: UploadBudget) -> None:
        self.budget, self.size = budget, 0

    def take(self, n: int) -> None:
        """Hold `n` more bytes for this request, or refuse it with 503 (the server is full)."""
        if not self.budget.take(n):
            raise HttpError(
                503,
                "busy",
                "The service holds too many uploads at once (--max-inflight-mb); retry soon.",
            )
        self.size += n

    def release(self) -> None:
        """Give everything back (idempotent)."""
        self.budget.give_back(self.size)
        self.size = 0


async def read_body(request: Request, options: ServeOptions, held: HeldUpload) -> bytes:
    """The request body, refused with 413 as soon as it passes --max-upload-mb, 503 when all
    uploads together pass --max-inflight-mb, 408 when it takes over --body-timeout."""
    import anyio
    from starlette.requests import ClientDisconnect

    limit = options.max_upload_bytes
    too_large = HttpError(
        413,
        "too_large",
        f"The upload is larger than the server's limit of {options.max_upload_mb:g} MB "
        "(--max-upload-mb). Send a smaller image.",
    )
    length = request.headers.get("content-length")
    if length is not None and not (length.isascii() and length.isdigit()):
        raise HttpError(400, "bad_request", f"Bad Content-Length. Received: {length[:40]!r}")
    if length is not None and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        with anyio.fail_after(options.body_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                held.take(len(chunk))
                chunks.append(chunk)
    except TimeoutError:
        raise HttpError(
            408,
            "body_timeout",
            f"The upload did not arrive within {options.body_timeout_s:g} s (--body-timeout).",
        ) from None
    except ClientDisconnect:
        raise HttpError(400, "disconnected", "The client went away mid-upload.") from None
    return b"".join(chunks)


async def image_bytes(
    request: Any, options: ServeOptions, held: HeldUpload
) -> tuple[bytes, str | None]:
    """The uploaded image and its name: the body itself (image/*) or the multipart field
    `image`; 415 for any other Content-Type."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith("image/"):
        name = request.headers.get("x-filename")
        name = unquote(name)[:MAX_FILENAME] if name else None
        return await read_body(request, options, held), name
    if ctype != "multipart/form-data":
        raise HttpError(
            415,
            "unsupported_type",
            "Send the image as the body with Content-Type image/* (image/png, image/jpeg, "
            f"...) or as the multipart field 'image'. Received: Content-Type {ctype or 'none'}",
        )
    return await _multipart_image(request, await read_body(request, options, held))


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
        return await upload.read(), (upload.filename or None) and upload.filename[:MAX_FILENAME]
    finally:
        await form.close()
