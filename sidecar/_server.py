"""Serving the API on loopback so that hostile or broken clients cannot stop it.

What :func:`serve` adds to aiohttp, with the numbers in :class:`ApiLimits`:

- At most ``max_connections`` connections are open at once. When one more arrives,
  the oldest connection with no request in progress is closed to make room, so a flood
  of idle connections cannot lock a real client out; when every open connection is in
  the middle of a request, the new one is answered ``503`` and closed at once. Either
  way the process's file descriptors stay bounded (1,100 idle sockets used to exhaust
  them, after which nothing was answered).
- A connection that has not sent a complete request head within ``idle_timeout_s``
  is closed: idle keep-alive connections, and headers trickling in byte by byte.
  This is aiohttp's keep-alive timer, which it arms when the connection opens and
  re-arms only after a response, so bytes arriving do not extend it.
- A request body must arrive within ``body_timeout_s`` (see ``read_json``: 408).

The connection limit is a wrapper around aiohttp's protocol factory: each accepted
socket gets a :class:`_Guarded` protocol that asks the :class:`ConnectionBook` for a
place before it creates the request handler and hands everything on to it.

That handler (:class:`_JsonErrors`) also answers what aiohttp refuses before our app
sees it (a malformed request line or header, an oversized header) as the API answers
everything else: ``{"error": "..."}`` in one line, logged as one warning line, not a
traceback per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from yarl import URL

from memory import dumps_strict, one_line

__all__ = ["ApiLimits", "ConnectionBook", "serve"]

log = logging.getLogger(__name__)

BACKLOG = 512
LINGER_S = 1.0  # how long a refused client has to read its 503


@dataclass(frozen=True)
class ApiLimits:
    """How much the API server grants one client; validated here, built once."""

    max_connections: int = 256
    idle_timeout_s: float = 15.0
    body_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.max_connections, bool) or not isinstance(self.max_connections, int):
            raise ValueError("max_connections must be an integer")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        for key in ("idle_timeout_s", "body_timeout_s"):
            value = getattr(self, key)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{key} must be a positive number of seconds, got {value!r}")


def _busy_answer(limit: int) -> bytes:
    body = json.dumps({"error": f"too many connections (limit {limit}); try again"}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class ConnectionBook:
    """The open connections of one server, oldest first, and which have a request running.

    ``evicted`` counts idle connections closed to make room, ``refused`` new connections
    turned away because every open one was busy.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.evicted = 0
        self.refused = 0
        self.lingering = 0  # refused sockets still reading their 503
        self._open: dict[_Guarded, None] = {}  # insertion order: oldest first
        self._busy: dict[object, int] = {}  # aiohttp handler -> requests in progress

    def __len__(self) -> int:
        return len(self._open)

    @contextlib.contextmanager
    def busy(self, handler: object) -> Iterator[None]:
        """Mark ``handler``'s connection busy (not to be evicted) while a request runs."""
        self._busy[handler] = self._busy.get(handler, 0) + 1
        try:
            yield
        finally:
            left = self._busy.pop(handler) - 1
            if left:
                self._busy[handler] = left

    def admit(self, conn: _Guarded) -> bool:
        """Make room for ``conn`` (closing the oldest idle one if full); False: refuse it."""
        if len(self._open) >= self.limit:
            victim = next((c for c in self._open if c.inner not in self._busy), None)
            if victim is None:
                self.refused += 1
                log.warning("connection limit (%d) reached, all busy: refused one", self.limit)
                return False
            del self._open[victim]
            self.evicted += 1
            log.warning("connection limit (%d) reached: closed the oldest idle one", self.limit)
            victim.close()
        self._open[conn] = None
        return True

    def forget(self, conn: _Guarded) -> None:
        self._open.pop(conn, None)


class _JsonErrors(RequestHandler):
    """aiohttp's request handler, with its own error answers in the API's JSON shape."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            text = "internal error; see the sidecar log"
        else:  # the client's fault: one line is enough
            detail = getattr(exc, "message", None) or message or "bad request"
            text = f"malformed HTTP request: {one_line(str(detail).splitlines()[0], 200)}"
            log.warning("%s from %s: %s", status, request.remote, text)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        resp = web.Response(
            status=status, text=dumps_strict({"error": text}), content_type="application/json"
        )
        resp.force_close()
        return resp


class _Guarded(asyncio.Protocol):
    """One accepted socket: admitted by the book, then served by aiohttp's handler.

    A refused socket gets the 503, a half-close, and up to :data:`LINGER_S` to read it
    (what it sends meanwhile is discarded): closing at once with its request unread
    would make the kernel reset the connection before the client saw the answer.
    """

    def __init__(self, book: ConnectionBook, server: web.Server, options: dict[str, Any]) -> None:
        self._book = book
        self._server = server
        self._options = options
        self._transport: asyncio.BaseTransport | None = None
        self._linger: asyncio.TimerHandle | None = None
        self.inner: RequestHandler | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if self._book.admit(self):
            loop = asyncio.get_running_loop()
            self.inner = _JsonErrors(self._server, loop=loop, **self._options)
            self.inner.connection_made(transport)
            return
        if not isinstance(transport, asyncio.Transport) or self._book.lingering >= self._book.limit:
            transport.close()
            return
        self._book.lingering += 1
        transport.write(_busy_answer(self._book.limit))
        transport.write_eof()
        self._linger = asyncio.get_running_loop().call_later(LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.inner is not None:
            self.inner.eof_received()
        return None  # as aiohttp's handler: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._book.forget(self)
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
            self._book.lingering -= 1
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def close(self) -> None:
        """Close this connection now (it was chosen to make room)."""
        if self.inner is not None:
            self.inner.force_close()
        elif self._transport is not None:
            self._transport.close()


class _GuardedSite(web.BaseSite):
    """A TCP site whose every connection goes through a :class:`ConnectionBook`."""

    __slots__ = ("_book", "_host", "_options", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        book: ConnectionBook,
        options: dict[str, Any],
    ) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._book = book
        self._options = options
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        book, options = self._book, self._options
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Guarded(book, server, options), self._host, self._port, backlog=self._backlog
        )


#: where create_app leaves the limits and the book for serve() and the middlewares
LIMITS_KEY = web.AppKey("harness.sidecar.limits", ApiLimits)
BOOK_KEY = web.AppKey("harness.sidecar.connections", ConnectionBook)


async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 7777) -> web.AppRunner:
    """Start ``app`` on a loopback address; returns the runner (``await runner.cleanup()``).

    The limits are the app's (``create_app(limits=...)``), defaults otherwise.
    ``port=0`` picks a free port: read it from ``runner.addresses[0][1]``.
    """
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the sidecar only listens on loopback, not {host!r}")
    limits = app[LIMITS_KEY] if LIMITS_KEY in app else ApiLimits()
    book = app[BOOK_KEY] if BOOK_KEY in app else ConnectionBook(limits.max_connections)
    options: dict[str, Any] = {"keepalive_timeout": limits.idle_timeout_s}
    runner = web.AppRunner(app, access_log=None, **options)
    await runner.setup()
    site = _GuardedSite(runner, host, port, book=book, options=options)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
