"""The sidecar HTTP API (aiohttp.web), on loopback, behind a bearer token.

Routes here: ``POST /send``, ``GET /health``, ``GET /messages``. The composition root
registers more (runs, inbox, heartbeat) on the same app with ``app.router.add_*``; the
auth and JSON-error middlewares apply to every route, and :func:`json_error` builds the
same error shape (``{"error": "..."}``).

``POST /send`` answers 202 only after the message's rows are committed. Concurrent
requests are written together (a group commit): while one transaction runs in a worker
thread, newly arrived messages wait, then all of them go into the next transaction, and
each request is answered once the transaction holding its rows has committed. SQLite
work runs in threads so the event loop stays free.

The body is parsed as JSON whatever the ``Content-Type`` says, because
``curl -d '{"text": "hi"}'`` sends ``application/x-www-form-urlencoded``.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from memory import Store

from ._errors import InvalidMessageError, TokenFileError
from ._outbox import STATES, count_by_state, list_messages, prepare, store_prepared

__all__ = [
    "MAX_BODY_BYTES",
    "STORE_KEY",
    "create_app",
    "json_error",
    "load_or_create_token",
    "read_json",
    "serve",
    "token_file",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
TOKEN_FILE = "sidecar.token"
STORE_KEY = web.AppKey("harness.store", Store)
_COMMITTER_KEY: web.AppKey[_GroupCommit] = web.AppKey("harness.sidecar.committer")
_SEND_KEYS = frozenset({"text", "embeds", "kind"})
_MAX_LIST = 1000
_TOKEN_RE = re.compile(r"[A-Za-z0-9_\-]{16,}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, **headers: str) -> web.Response:
    """The API's error response: ``{"error": message}`` with ``status``."""
    return web.json_response({"error": message}, status=status, headers=headers or None)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, whatever its content type; 400/413 as :class:`HTTPException`."""
    raw = await request.read()  # raises HTTPRequestEntityTooLarge past client_max_size
    if not raw.strip():
        raise web.HTTPBadRequest(text="the body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"the body is not valid JSON: {exc}") from None


# -- middlewares -------------------------------------------------------------------------


def _auth_middleware(token: str) -> Any:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            reason = "missing bearer token" if not given else "wrong bearer token"
            return json_error(401, reason, **{"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return auth


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON: aiohttp's own 404/405/413 included."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            message = f"no route {request.method} {request.path}"
        elif exc.status == 405:
            message = f"method {request.method} not allowed on {request.path}"
        elif exc.status == 413:
            message = f"body too large (limit {MAX_BODY_BYTES} bytes)"
        else:
            message = exc.text if exc.text and exc.content_type == "text/plain" else exc.reason
            message = message.removeprefix(f"{exc.status}: ")
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return json_error(exc.status, message, **headers)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "internal error; see the sidecar log")


# -- group commit ------------------------------------------------------------------------


class _GroupCommit:
    """Write the messages of concurrent requests in as few transactions as possible."""

    def __init__(self, store: Store, wake: Callable[[], None] | None) -> None:
        self._store = store
        self._wake = wake
        self._queue: list[tuple[tuple[str, list[dict[str, Any]]], asyncio.Future[list[int]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, message: tuple[str, list[dict[str, Any]]]) -> list[int]:
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queue.append((message, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future  # a cancelled request leaves its rows queued: they still go out

    def _write(self, messages: list[tuple[str, list[dict[str, Any]]]]) -> list[list[int]]:
        with self._store.write() as session:
            return store_prepared(session=session, messages=messages)

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                ids = await asyncio.to_thread(self._write, [m for m, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), group in zip(batch, ids, strict=True):
                if not future.done():
                    future.set_result(group)
            if self._wake is not None:
                self._wake()


# -- handlers ----------------------------------------------------------------------------


async def _send(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        return json_error(400, "the body must be a JSON object with text and/or embeds")
    unknown = sorted(set(body) - _SEND_KEYS)
    if unknown:
        return json_error(400, f"unknown key {unknown[0]!r} (expected text, embeds, kind)")
    kind = body.get("kind")
    if kind is not None and not isinstance(kind, str):
        return json_error(400, "kind must be a string")
    try:
        message = prepare(text=body.get("text"), embeds=body.get("embeds"), kind=kind)
    except InvalidMessageError as exc:
        return json_error(400, str(exc))
    try:
        ids = await request.app[_COMMITTER_KEY].submit(message)
    except Exception:
        log.exception("could not store a message")
        return json_error(503, "the outbox could not store the message; see the sidecar log")
    return web.json_response({"ids": ids}, status=202)


def _counts(store: Store) -> dict[str, int]:
    with store.read() as session:
        return count_by_state(session=session)


async def _health(request: web.Request) -> web.Response:
    counts = await asyncio.to_thread(_counts, request.app[STORE_KEY])
    return web.json_response({"ok": True, "outbox": counts})


def _list(store: Store, state: str | None, limit: int) -> list[dict[str, Any]]:
    with store.read() as session:
        rows = list_messages(session=session, state=state, limit=limit)
        return [r.model_dump() for r in rows]


async def _messages(request: web.Request) -> web.Response:
    state = request.query.get("state") or None
    if state is not None and state not in STATES:
        return json_error(400, f"state must be one of {', '.join(STATES)}")
    raw_limit = request.query.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= _MAX_LIST:
        return json_error(400, f"limit must be an integer from 1 to {_MAX_LIST}")
    rows = await asyncio.to_thread(_list, request.app[STORE_KEY], state, int(raw_limit))
    return web.json_response({"messages": rows})


def create_app(
    *, store: Store, token: str, wake: Callable[[], None] | None = None
) -> web.Application:
    """The API app. ``wake`` is called (on the loop) after new messages are committed."""
    if len(token) < 16:
        raise ValueError("the API token must be at least 16 characters")
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[_error_middleware, _auth_middleware(token)],
    )
    app[STORE_KEY] = store
    app[_COMMITTER_KEY] = _GroupCommit(store, wake)
    app.router.add_post("/send", _send)
    app.router.add_get("/health", _health)
    app.router.add_get("/messages", _messages)
    return app


async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 7777) -> web.AppRunner:
    """Start ``app`` on a loopback address; returns the runner (``await runner.cleanup()``).

    ``port=0`` picks a free port: read it from ``runner.addresses[0][1]``.
    """
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the sidecar only listens on loopback, not {host!r}")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


# -- the token file ----------------------------------------------------------------------


def token_file(state_dir: Path) -> Path:
    return Path(state_dir) / TOKEN_FILE


def _create_token(path: Path, *, replace: bool = False) -> str:
    """Write a fresh token with mode 0600, atomically (a temp file, then link or replace).

    Without ``replace``, a file that another process created meanwhile wins, so two
    processes starting together agree on one token.
    """
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return path.read_text(encoding="ascii").strip()
    finally:
        tmp.unlink(missing_ok=True)
    return token


def load_or_create_token(state_dir: Path) -> str:
    """The API token from ``<state_dir>/sidecar.token``, created (0600) on first use.

    A token file that others could read (group/other permission bits) is treated as
    leaked: it is replaced by a new 0600 file with a new token, and a warning is logged.
    A file owned by another user is refused with :class:`TokenFileError`.
    """
    path = token_file(state_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            st = path.stat()
        except FileNotFoundError:
            return _create_token(path)
        if not stat.S_ISREG(st.st_mode):
            raise TokenFileError(f"{path} is not a regular file")
        if st.st_uid != os.getuid():
            raise TokenFileError(f"{path} belongs to another user (uid {st.st_uid}); refusing it")
        if st.st_mode & 0o077:
            log.warning(
                "%s was readable by others (mode %o); replaced it with a new token",
                path,
                stat.S_IMODE(st.st_mode),
            )
            return _create_token(path, replace=True)
        token = path.read_bytes().decode("ascii", "replace").strip()
        if not _TOKEN_RE.fullmatch(token):
            log.warning("%s held no usable token; wrote a new one", path)
            return _create_token(path, replace=True)
        return token
    except OSError as exc:
        raise TokenFileError(f"cannot use {path}: {exc.strerror or exc}") from None
