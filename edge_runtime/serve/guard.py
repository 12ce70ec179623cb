"""Who may talk to `serve`: the Host names it answers to and the Origins it takes POSTs from.

A web page on another site must not drive the service from the user's browser: a cross-origin
POST (`Origin: http://evil.example`) is refused with 403 unless `--allow-origin` names it, and a
DNS-rebinding page (which reaches the Pi under the attacker's name) is refused by the Host
check, as Starlette's `TrustedHostMiddleware` does it (exact names and `*.domain` patterns,
`*` for any), with a JSON error and a counter. The names allowed: the bound address,
`localhost`, 127.0.0.1 and ::1, the machine's hostname and `<hostname>.local` (mDNS), the
`--allowed-host` entries, and any IP address the connection actually arrived on (a phone on the
LAN that types the Pi's IP; a rebinding page cannot name it, it only knows its own name).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The Host names `serve` answers to when bound to `bound` (lower case, IPv6 in brackets)."""
    name = socket.gethostname().lower()
    hosts = ["localhost", "127.0.0.1", "[::1]", name, f"{name}.local"]
    if bound not in ("0.0.0.0", "::", ""):
        hosts.append(_bracketed(bound.lower()))
    hosts += [_bracketed(h.strip().lower()) for h in extra if h.strip()]
    return tuple(dict.fromkeys(hosts))


def _bracketed(host: str) -> str:
    """`::1` as a Host header writes it (`[::1]`); other names unchanged."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None


def _split_host(value: str) -> tuple[str, int | None] | None:
    """(host lower case, port or None) of a Host header; None when malformed."""
    from starlette._utils import parse_host_header

    parsed = parse_host_header(value) if value else None
    if parsed is None or not parsed.host:
        return None
    port = parsed.port
    if port is not None and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        return None
    return parsed.host.lower(), None if port is None else int(port)


class HostOriginGuard:
    """ASGI middleware: 400 for an unknown Host, 403 for a POST from a foreign Origin."""

    def __init__(
        self,
        app: ASGIApp,
        hosts: Iterable[str],
        origins: Iterable[str] = (),
        on_refused: Callable[[str], None] = lambda kind: None,
    ) -> None:
        self.app = app
        self.hosts = tuple(h.lower() for h in hosts)
        self.allow_any = "*" in self.hosts
        self.origins = frozenset(o.strip().rstrip("/").lower() for o in origins)
        self.on_refused = on_refused

    def host_allowed(self, host: str, local_address: str | None) -> bool:
        """True for a listed name (or `*.domain` pattern), or the IP the connection came to."""
        if self.allow_any or host in self.hosts:
            return True
        if any(p.startswith("*.") and host.endswith(p[1:]) for p in self.hosts):
            return True
        ip, local = _ip(host), _ip(local_address or "")
        if ip is not None and local is not None:
            if isinstance(local, ipaddress.IPv6Address) and local.ipv4_mapped:  # a v4 client
                local = local.ipv4_mapped
            return ip == local
        return False

    def origin_allowed(self, origin: str, scheme: str, host: str, port: int | None) -> bool:
        """True for an --allow-origin entry or the service's own origin (scheme, host, port)."""
        if origin.rstrip("/").lower() in self.origins or "*" in self.origins:
            return True
        try:
            parts = urlsplit(origin)
            o_port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return False
        o_host = _bracketed((parts.hostname or "").lower())
        return (parts.scheme, o_host, o_port) == (scheme, host, port or DEFAULT_PORTS.get(scheme))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        server = scope.get("server") or (None, None)
        host_port = _split_host(headers.get("host", ""))
        if host_port is None or not self.host_allowed(host_port[0], server[0]):
            shown = headers.get("host", "")[:100]
            await self._refuse(
                send,
                400,
                "bad_host",
                f"This service does not answer to that Host name; add it with --allowed-host "
                f"NAME. Received: Host {shown!r}",
            )
            return
        origin = headers.get("origin")
        if (
            scope["method"] not in SAFE_METHODS
            and origin is not None
            and not self.origin_allowed(origin, scope.get("scheme", "http"), *host_port)
        ):
            await self._refuse(
                send,
                403,
                "foreign_origin",
                "POSTs from another site's page are refused; name it with --allow-origin "
                f"ORIGIN to allow it. Received: Origin {origin[:100]!r}",
            )
            return
        await self.app(scope, receive, send)

    async def _refuse(self, send: Send, status: int, kind: str, message: str) -> None:
        self.on_refused(kind)
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
