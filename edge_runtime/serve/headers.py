"""Security headers on every response of `serve`, in one place (an ASGI middleware).

Every response: `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`,
`X-Frame-Options: DENY` and a Content-Security-Policy with `frame-ancestors 'none'` (no other
origin may frame the page or the app with their file inputs live):
- `/` (page.html): PAGE_CSP; its inline `<script>`/`<style>` blocks and `style="..."`
  attributes are allowed by their sha256, computed from the file at startup, so an edit of
  page.html stays covered without an edit here;
- `/app/` (the `deploy web` site, webapp.py): APP_CSP, what the web app needs (LiteRT.js's
  WebAssembly and its Web Workers, the camera), plus the sha256 of the site's inline scripts
  (its import map);
- anything else (JSON, /metrics): API_CSP, nothing may load.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

COMMON_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
# The headers this middleware sets: an app's own value of any of them is dropped.
_REPLACED = frozenset({name for name, _ in COMMON_HEADERS} | {b"content-security-policy"})
# `/`: same-origin fetches (the API, the camera's EventSource), images from the page itself or
# the photo being sent (blob:/data:); {scripts} {styles} {style_attrs}: page.html's sha256s.
PAGE_CSP = (
    "default-src 'none'; script-src {scripts}; style-src {styles}; "
    "style-src-attr {style_attrs}; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# `/app/`: LiteRT.js compiles WebAssembly ('wasm-unsafe-eval') and may run Web Workers (its
# threaded build, from a blob: URL); the camera's stream and the photos as blob:/data: URLs;
# the service worker and the manifest from the site itself. {scripts}: inline scripts' sha256.
APP_CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'{scripts}; "
    "worker-src 'self' blob:; connect-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; style-src 'self'; object-src 'none'; "
    "manifest-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"

_BLOCK = {
    "script": re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.S | re.I),
    "style": re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.S | re.I),
}
_STYLE_ATTR = re.compile(r"""\sstyle\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.I)


def _sha256(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
    return f"'sha256-{digest}'"


def _sources(hashes: Iterable[str]) -> str:
    """The CSP source list of `hashes` ('none' when there is none)."""
    unique = sorted(set(hashes))
    return " ".join(unique) if unique else "'none'"


def inline_hashes(html: str) -> dict[str, list[str]]:
    """The sha256 sources of `html`'s inline scripts, style blocks and style attributes."""
    scripts = [
        _sha256(body)
        for attrs, body in _BLOCK["script"].findall(html)
        if not re.search(r"\bsrc\s*=", attrs)
    ]
    styles = [_sha256(body) for body in _BLOCK["style"].findall(html)]
    attrs = [_sha256(a or b) for a, b in _STYLE_ATTR.findall(html)]
    return {"scripts": scripts, "styles": styles, "style_attrs": attrs}


def page_csp(html: str) -> str:
    """The policy of `/` for the page `html`."""
    found = inline_hashes(html)
    sources = {k: _sources(v) for k, v in found.items()}
    if found["style_attrs"]:  # style="..." attributes: allowed by hash only with this keyword
        sources["style_attrs"] = "'unsafe-hashes' " + sources["style_attrs"]
    return PAGE_CSP.format(**sources)


def app_csp(site: Path | None) -> str:
    """The policy of `/app/` for the site folder (its HTML files' inline scripts hashed)."""
    hashes: list[str] = []
    for html in sorted(site.glob("*.html")) if site is not None else []:
        hashes += inline_hashes(html.read_text(encoding="utf-8", errors="replace"))["scripts"]
    extra = "".join(f" {h}" for h in sorted(set(hashes)))
    return APP_CSP.format(scripts=extra)


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP response (errors included)."""

    def __init__(self, app: ASGIApp, page: str, site: Path | None, app_path: str = "/app") -> None:
        self.app = app
        self.app_path = app_path
        self.policies = {
            "page": page_csp(page).encode(),
            "app": app_csp(site).encode(),
            "api": API_CSP.encode(),
        }

    def _policy(self, path: str) -> bytes:
        if path == "/":
            return self.policies["page"]
        if path == self.app_path or path.startswith(self.app_path + "/"):
            return self.policies["app"]
        return self.policies["api"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self._policy(scope.get("path", ""))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() not in _REPLACED
                ]
                headers += [*COMMON_HEADERS, (b"content-security-policy", policy)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
