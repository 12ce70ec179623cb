"""Connections bounded: how many `serve` holds, how long one may take to send its headers.

Uvicorn's h11 protocol, with three additions a Pi on a LAN needs:
- at most `max_connections` open; past it the oldest connection still waiting for request
  headers (an idle or slow-loris socket) is closed to make room, and when every connection is
  busy the new one gets a JSON 503 at once and is closed (its file descriptor freed);
- a request's headers must be complete within `header_timeout_s` of the connection's accept
  (its TLS handshake included, under --tls-cert; or of its first byte, on a keep-alive
  connection), or the connection is closed;
- `max_connections` is kept below the process's open-file limit (`ulimit -n`), so a flood of
  sockets never makes `accept()` fail with "Too many open files".
Uvicorn's own `limit_concurrency` stays on as the last line (its 503 for running tasks).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

FD_RESERVE = 32  # descriptors kept for the models, inotify, the event loop, logs, threads
ACCEPT_WARNING_EVERY_S = 60.0


def connection_limit(requested: int) -> int:
    """`requested`, lowered to fit the open-file limit (`ulimit -n`) less a reserve."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return requested
    return max(1, min(requested, soft - FD_RESERVE))


def _busy_response() -> bytes:
    body = json.dumps(
        {"error": "The service is busy (too many connections, --max-connections); retry soon."}
    ).encode()
    return (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"connection: close\r\nretry-after: 1\r\ncontent-length: %d\r\n\r\n" % len(body)
    ) + body


def bounded_protocol(
    max_connections: int,
    header_timeout_s: float,
    on_event: Callable[[str], None],
    ssl_context: Any = None,
) -> Callable[..., asyncio.BaseProtocol]:
    """An h11 protocol factory for `uvicorn.Config(http=...)` with the bounds above;
    `on_event(kind)` counts each refusal (`busy`, `evicted`, `header_timeout`).

    With `ssl_context` each accepted socket is wrapped in TLS here (Uvicorn gets no TLS
    options): the connection is counted and its header timer runs from accept, so a socket
    that never finishes its handshake is evictable and closed within `header_timeout_s` like
    any idle one, instead of holding a descriptor for asyncio's 60 s handshake timeout."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    accepted: set[Any] = set()  # every open connection of this server, handshakes included

    class BoundedH11Protocol(H11Protocol):
        _made_at = 0.0
        _header_timer = None
        _raw: Any = None  # the accepted socket's transport (under TLS: below the TLS layer)
        _handshaking = False

        def accept(self, raw: Any) -> bool:
            """Count and time the connection from accept; False when refused (busy)."""
            self._raw, self._made_at = raw, time.monotonic()
            accepted.add(self)
            open_now = [c for c in accepted if not c._raw.is_closing()]
            if len(open_now) > max_connections and not self._evict_one(open_now):
                on_event("busy")
                if not self._handshaking:  # no TLS session to answer in yet: just close
                    raw.write(_busy_response())
                raw.close()
                return False
            self._arm_header_timer()
            return True

        def forget(self) -> None:
            """The socket is closed: no longer counted, no timer."""
            self._cancel_header_timer()
            accepted.discard(self)

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if self._handshaking:  # TLS: counted and timed since accept already
                self._handshaking = False
                return
            self.accept(transport)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._waiting_for_headers():
                if self._header_timer is None:
                    self._arm_header_timer()
            else:
                self._cancel_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self.forget()
            super().connection_lost(exc)

        def _waiting_for_headers(self) -> bool:
            """No request in hand: its TLS handshake or headers not (all) received yet."""
            return self._handshaking or (
                self.conn.their_state is h11.IDLE
                and (self.cycle is None or self.cycle.response_complete)
            )

        def _evict_one(self, open_now: list[Any]) -> bool:
            """Close the oldest other connection still waiting for headers; False if none."""
            idle = [c for c in open_now if c is not self and c._waiting_for_headers()]
            if not idle:
                return False
            oldest = min(idle, key=lambda c: c._made_at)
            on_event("evicted")
            oldest._raw.close()
            return True

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self._raw.is_closing():
                on_event("header_timeout")
                self._raw.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # arms Uvicorn's keep-alive timeout when kept open
            self._cancel_header_timer()

    if ssl_context is None:
        return BoundedH11Protocol
    from asyncio.sslproto import SSLProtocol

    class CountedTLS(SSLProtocol):
        """asyncio's TLS layer, telling the HTTP protocol of the accept and of the close."""

        app: BoundedH11Protocol

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)  # starts the handshake
            self.app.accept(transport)

        def connection_lost(self, exc: BaseException | None) -> None:
            self.app.forget()
            super().connection_lost(exc)

    def tls_protocol(**kwargs: Any) -> CountedTLS:
        app = BoundedH11Protocol(**kwargs)
        app._handshaking = True
        # typeshed wants a waiter Future and an int timeout; asyncio itself passes
        # waiter=None and takes any positive number (its default: 60.0)
        tls = CountedTLS(
            app.loop,
            app,
            ssl_context,
            None,  # type: ignore[arg-type]  # typeshed gap: asyncio accepts waiter=None
            server_side=True,
            ssl_handshake_timeout=header_timeout_s,  # type: ignore[arg-type]  # a float works
        )
        tls.app = app
        return tls

    return tls_protocol


def quiet_accept_errors() -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event-loop exception handler: "out of system resource" on accept (EMFILE) becomes one
    warning line a minute instead of a traceback a second; anything else as asyncio logs it."""
    last_warned: list[float] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not str(context.get("message", "")).startswith("socket.accept() out of system"):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if not last_warned or now - last_warned[-1] >= ACCEPT_WARNING_EVERY_S:
            last_warned[:] = [now]
            err = context.get("exception")
            reason = getattr(err, "strerror", None) or str(err)
            print(
                f"warning: cannot accept connections ({reason}); raise `ulimit -n` or lower "
                "--max-connections",
                file=sys.stderr,
                flush=True,
            )

    return handler
