"""The web app's files at /app/: precompressed bytes, cross-origin isolation, cheap revalidation.

`edgeship deploy web` writes `NAME.br` and `NAME.gz` beside its large files (the WASM builds,
the scripts). `AppFiles` serves one of them in place of `NAME` when the browser accepts that
encoding (`Content-Encoding`, `Vary: Accept-Encoding`; each variant has its own ETag), sends
`Cache-Control: no-cache` so the browser and the service worker revalidate with a 304, and the
cross-origin isolation headers (COOP/COEP/CORP) that give the page `SharedArrayBuffer`: the
threaded LiteRT.js build runs on every core.
"""

from __future__ import annotations

import os
import stat as stat_module
from mimetypes import guess_type
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles

if TYPE_CHECKING:
    from starlette.types import Scope

# Every response of /app/: cross-origin isolated (everything the app loads is same-origin).
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Revalidate every time (ETag/Last-Modified -> 304): a new `deploy web` is seen at once.
CACHE_CONTROL = "no-cache"
# The encodings `deploy web` writes beside a file, best first, and their suffixes.
ENCODINGS = (("br", ".br"), ("gzip", ".gz"))


def accepted_encodings(header: str) -> set[str]:
    """The content codings an Accept-Encoding header allows (q=0 excluded)."""
    accepted = set()
    for part in header.split(","):
        name, _, params = part.partition(";")
        q = params.strip().lower()
        if name.strip() and q not in ("q=0", "q=0.", "q=0.0", "q=0.00", "q=0.000"):
            accepted.add(name.strip().lower())
    return accepted


class AppFiles(StaticFiles):
    """StaticFiles for the web app: only the files `listed` at startup (no dotfiles, no links,
    nothing added later), precompressed variants, isolation and caching headers."""

    def __init__(self, *, listed: frozenset[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.listed = listed

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file (or its 304, redirect, 404.html), with the app's headers; 404 if unlisted."""
        from starlette.exceptions import HTTPException

        route = "" if path in ("", ".") else path.replace(os.sep, "/")
        if route not in self.listed and f"{route}/index.html".lstrip("/") not in self.listed:
            raise HTTPException(404)
        response = await super().get_response(path, scope)
        response.headers.update(ISOLATION_HEADERS)
        return response

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        """`full_path`, or its `.br`/`.gz` sibling when the browser accepts that encoding."""
        request_headers = Headers(scope=scope)
        accepted = accepted_encodings(request_headers.get("accept-encoding", ""))
        path, stat, encoding = str(full_path), stat_result, None
        has_variant = False
        for coding, suffix in ENCODINGS:
            try:
                variant = os.lstat(path + suffix)  # a link beside the file is not served
            except OSError:
                continue
            if not stat_module.S_ISREG(variant.st_mode):
                continue
            has_variant = True
            if coding in accepted and encoding is None:
                path, stat, encoding = path + suffix, variant, coding
        media_type = guess_type(str(full_path))[0] or "text/plain"
        response = FileResponse(
            path, status_code=status_code, stat_result=stat, media_type=media_type
        )
        response.headers["Cache-Control"] = CACHE_CONTROL
        if has_variant:
            response.headers["Vary"] = "Accept-Encoding"
        if encoding is not None:
            response.headers["Content-Encoding"] = encoding
        if self.is_not_modified(response.headers, request_headers):
            return NotModifiedResponse(response.headers)
        return response
