"""The sidecar HTTP API (aiohttp.web), on loopback, behind a bearer token.

Routes here: ``POST /send``, ``GET /health``, ``GET /messages``. The composition root
registers more (runs, inbox, heartbeat) on the same app with ``app.router.add_*``; the
auth and JSON-error middlewares apply to every route, :func:`json_error` builds the
same error shape (``{"error": "..."}``) and :func:`json_ok` the strict-JSON success
(non-finite numbers as ``null``, never a bare ``NaN``).

``POST /send`` answers 202 only after the message's rows are committed. Concurrent
requests are written together (a group commit): while one transaction runs in a worker
thread, newly arrived messages wait, then all of them go into the next transaction, and
each request is answered once the transaction holding its rows has committed. SQLite
work runs in threads so the event loop stays free. With an ``Idempotency-Key`` header
(see ``_keys``) a repeated request is answered 200 with the ids of the first and
stores nothing; the same key with another body is 409.

``POST /send`` may carry files: ``"files": [{"filename": "chart.png", "data": "<base64>",
"content_type": "image/png"}]`` (at most 10, within the outbox's limits); such a body may
be up to :data:`MAX_SEND_BYTES`, any other stays within :data:`MAX_BODY_BYTES`. A file
that is not valid base64, or a bad name, type or size, is 400 in one line.

The body is parsed as JSON whatever the ``Content-Type`` says, because
``curl -d '{"text": "hi"}'`` sends ``application/x-www-form-urlencoded``. It must be
strict JSON (no ``NaN``), valid Unicode throughout, at most :data:`MAX_DEPTH` levels
deep, and arrive within the body timeout; otherwise 400 (408 for the timeout), one line.
A malformed or non-ASCII ``Authorization`` header is 401 like a wrong token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from memory import Store, dumps_strict

from ._errors import InvalidMessageError, KeyConflictError, TokenFileError
from ._files import Attachment, file_summaries
from ._keys import KEY_HEADER, body_digest, check_key, recall_key, remember_key
from ._outbox import STATES, Prepared, count_by_state, list_messages, prepare, store_prepared
from ._server import BOOK_KEY, LIMITS_KEY, ApiLimits, ConnectionBook
from ._split import check_value

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_SEND_BYTES",
    "STORE_KEY",
    "create_app",
    "json_depth",
    "json_error",
    "json_ok",
    "load_or_create_token",
    "read_json",
    "token_file",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_SEND_BYTES = 2 * 1024 * 1024  # a POST /send with files (base64: about 1.5 MB of files)
MAX_DEPTH = 100  # levels of nested objects/arrays a body may have
TOKEN_FILE = "sidecar.token"
STORE_KEY = web.AppKey("harness.store", Store)
_COMMITTER_KEY: web.AppKey[_GroupCommit] = web.AppKey("harness.sidecar.committer")
_SEND_KEYS = frozenset({"text", "embeds", "kind", "files"})
_FILE_KEYS = frozenset({"filename", "data", "content_type"})
_LIMIT_RE = re.compile(r"body size (\d+)")
_MAX_LIST = 1000
_TOKEN_RE = re.compile(r"[A-Za-z0-9_\-]{16,}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_ok(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response in strict JSON (non-finite numbers as null, text cleaned)."""
    return web.json_response(data, status=status, headers=headers, dumps=dumps_strict)


def json_error(status: int, message: str, **headers: str) -> web.Response:
    """The API's error response: ``{"error": message}`` with ``status``."""
    return json_ok({"error": message}, status=status, headers=headers or None)


def json_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How many levels of objects/arrays ``value`` nests (walked without recursion).

    Stops counting past ``limit``: the result is then ``limit + 1``.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return limit + 1
            stack.extend(
                (sub, depth + 1) for sub in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _parse(raw: bytes) -> Any:
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="the body is not UTF-8") from None
    except RecursionError:
        raise web.HTTPBadRequest(text=f"the body is nested too deep (limit {MAX_DEPTH})") from None
    except ValueError as exc:  # JSONDecodeError, or NaN / Infinity
        raise web.HTTPBadRequest(text=f"the body is not valid JSON: {exc}") from None
    if json_depth(value) > MAX_DEPTH:
        raise web.HTTPBadRequest(text=f"the body is nested too deep (limit {MAX_DEPTH})")
    try:
        check_value(value, "body")
    except InvalidMessageError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return value


def _too_large(limit: int, size: int) -> web.HTTPRequestEntityTooLarge:
    return web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)


async def read_json(request: web.Request, *, limit: int = MAX_BODY_BYTES) -> Any:
    """The request body as JSON, whatever its content type.

    400 (empty, not UTF-8, not strict JSON, nested deeper than :data:`MAX_DEPTH`, text
    that is not valid Unicode), 408 (not received within the body timeout) and 413 (over
    ``limit`` bytes) are raised as :class:`HTTPException`, each with a one-line reason.
    """
    value, size = await _read_sized(request)
    if size > limit:
        raise _too_large(limit, size)
    return value


async def _read_sized(request: web.Request) -> tuple[Any, int]:
    """The body as JSON and its size in bytes (up to the app's ``client_max_size``)."""
    limits = request.app[LIMITS_KEY] if LIMITS_KEY in request.app else ApiLimits()
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            raw = await request.read()  # raises HTTPRequestEntityTooLarge past client_max_size
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=f"the body did not arrive within {limits.body_timeout_s:g} s"
        ) from None
    if not raw.strip():
        raise web.HTTPBadRequest(text="the body is empty; send a JSON object")
    return _parse(raw), len(raw)


# -- middlewares -------------------------------------------------------------------------


def _auth_problem(header: str, expected: bytes) -> str | None:
    """Why ``header`` (an Authorization value) does not let the request in; None if it does."""
    if not header:
        return "missing bearer token"
    if not header.isascii() or not header.isprintable():
        return "malformed Authorization header (expected 'Bearer <token>' in ASCII)"
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return "malformed Authorization header (expected 'Bearer <token>')"
    if not hmac.compare_digest(given.strip().encode("ascii"), expected):
        return "wrong bearer token"
    return None


def _auth_middleware(token: str) -> Any:
    expected = token.encode("ascii")

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        problem = _auth_problem(request.headers.get("Authorization", ""), expected)
        if problem is not None:
            return json_error(401, problem, **{"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return auth


@web.middleware
async def _busy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Mark the connection busy while its request runs, so the limit never closes it."""
    with request.app[BOOK_KEY].busy(request.protocol):
        return await handler(request)


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON: aiohttp's own 404/405/413 included."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # the path as sent (percent-encoded, so one line whatever it decodes to), clipped
        shown = request.raw_path if len(request.raw_path) <= 200 else request.raw_path[:199] + "…"
        if exc.status == 404:
            message = f"no route {request.method} {shown}"
        elif exc.status == 405:
            message = f"method {request.method} not allowed on {shown}"
        elif exc.status == 413:
            found = _LIMIT_RE.search(exc.text or "")
            message = f"body too large (limit {found.group(1) if found else MAX_BODY_BYTES} bytes)"
        else:
            message = exc.text if exc.text and exc.content_type == "text/plain" else exc.reason
            message = message.removeprefix(f"{exc.status}: ")
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return json_error(exc.status, message, **headers)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "internal error; see the sidecar log")


# -- group commit ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Submission:
    """One request's message, with its idempotency key and body digest when it has one."""

    message: Prepared
    key: str | None = None
    digest: str = ""


@dataclass(frozen=True)
class _Stored:
    ids: list[int]
    replayed: bool = False  # the key was seen: these are the first request's ids


class _GroupCommit:
    """Write the messages of concurrent requests in as few transactions as possible."""

    def __init__(self, store: Store, wake: Callable[[], None] | None) -> None:
        self._store = store
        self._wake = wake
        self._queue: list[tuple[_Submission, asyncio.Future[_Stored]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, submission: _Submission) -> _Stored:
        """Store (or, for a known key, look up) one message; raises KeyConflictError."""
        future: asyncio.Future[_Stored] = asyncio.get_running_loop().create_future()
        self._queue.append((submission, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future  # a cancelled request leaves its rows queued: they still go out

    def _write(self, batch: list[_Submission]) -> list[_Stored | KeyConflictError]:
        """One transaction: keyed messages one by one (a key may repeat within the batch),
        then every unkeyed message in one ``executemany``."""
        now = time.time()
        out: list[_Stored | KeyConflictError | None] = [None] * len(batch)
        with self._store.write() as session:
            plain = []
            for index, sub in enumerate(batch):
                if sub.key is None:
                    plain.append(index)
                    continue
                try:
                    known = recall_key(session=session, key=sub.key, digest=sub.digest, now=now)
                except KeyConflictError as exc:
                    out[index] = exc
                    continue
                if known is not None:
                    out[index] = _Stored(known, replayed=True)
                    continue
                [ids] = store_prepared(session=session, messages=[sub.message], now=now)
                remember_key(session=session, key=sub.key, digest=sub.digest, ids=ids, now=now)
                out[index] = _Stored(ids)
            groups = store_prepared(session=session, messages=[batch[i].message for i in plain])
            for index, ids in zip(plain, groups, strict=True):
                out[index] = _Stored(ids)
        assert all(o is not None for o in out)
        return [o for o in out if o is not None]

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await asyncio.to_thread(self._write, [s for s, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, KeyConflictError):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            if self._wake is not None and any(
                isinstance(r, _Stored) and not r.replayed for r in results
            ):
                self._wake()


# -- handlers ----------------------------------------------------------------------------


def _files(raw: Any) -> list[Attachment] | None:
    """The ``files`` of a /send body decoded; InvalidMessageError names the problem."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidMessageError("files must be a list of objects")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidMessageError(f"files[{i}] must be an object")
        unknown = sorted(set(item) - _FILE_KEYS)
        if unknown:
            raise InvalidMessageError(
                f"files[{i}] has an unknown key {unknown[0]!r} (expected filename, data, "
                "content_type)"
            )
        name, data = item.get("filename"), item.get("data")
        ctype = item.get("content_type", "application/octet-stream")
        if not isinstance(name, str) or not isinstance(data, str) or not isinstance(ctype, str):
            raise InvalidMessageError(
                f"files[{i}]: filename, data (base64) and content_type must be strings"
            )
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidMessageError(f"files[{i}].data is not base64") from None
        out.append(Attachment(name, decoded, ctype))
    return out


async def _send(request: web.Request) -> web.Response:
    body, size = await _read_sized(request)
    if not isinstance(body, dict):
        return json_error(400, "the body must be a JSON object with text and/or embeds")
    if size > MAX_BODY_BYTES and not body.get("files"):
        raise _too_large(MAX_BODY_BYTES, size)
    unknown = sorted(set(body) - _SEND_KEYS)
    if unknown:
        return json_error(400, f"unknown key {unknown[0]!r} (expected text, embeds, kind, files)")
    kind = body.get("kind")
    if kind is not None and not isinstance(kind, str):
        return json_error(400, "kind must be a string")
    try:
        files = _files(body.get("files"))
        message = prepare(text=body.get("text"), embeds=body.get("embeds"), kind=kind, files=files)
        raw_key = request.headers.get(KEY_HEADER)
        key = None if raw_key is None else check_key(raw_key)
    except InvalidMessageError as exc:
        return json_error(400, str(exc))
    submission = _Submission(message, key, body_digest(body) if key is not None else "")
    try:
        stored = await request.app[_COMMITTER_KEY].submit(submission)
    except KeyConflictError as exc:
        return json_error(409, str(exc))
    except Exception:
        log.exception("could not store a message")
        return json_error(503, "the outbox could not store the message; see the sidecar log")
    if stored.replayed:
        return json_ok({"ids": stored.ids, "replayed": True}, status=200)
    return json_ok({"ids": stored.ids}, status=202)


def _counts(store: Store) -> dict[str, int]:
    with store.read() as session:
        return count_by_state(session=session)


async def _health(request: web.Request) -> web.Response:
    counts = await asyncio.to_thread(_counts, request.app[STORE_KEY])
    return json_ok({"ok": True, "outbox": counts})


def _list(store: Store, state: str | None, limit: int) -> list[dict[str, Any]]:
    """The rows, each with its files as name, type and size (never the bytes)."""
    with store.read() as session:
        rows = list_messages(session=session, state=state, limit=limit)
        files = file_summaries(session=session, ids=[r.id for r in rows if r.id is not None])
        return [{**r.model_dump(), "files": files.get(r.id or 0, [])} for r in rows]


async def _messages(request: web.Request) -> web.Response:
    state = request.query.get("state") or None
    if state is not None and state not in STATES:
        return json_error(400, f"state must be one of {', '.join(STATES)}")
    raw_limit = request.query.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= _MAX_LIST:
        return json_error(400, f"limit must be an integer from 1 to {_MAX_LIST}")
    rows = await asyncio.to_thread(_list, request.app[STORE_KEY], state, int(raw_limit))
    return json_ok({"messages": rows})


def create_app(
    *,
    store: Store,
    token: str,
    wake: Callable[[], None] | None = None,
    limits: ApiLimits | None = None,
) -> web.Application:
    """The API app. ``wake`` is called (on the loop) after new messages are committed.

    ``limits`` (connections, idle and body timeouts) are applied by :func:`serve`.
    """
    if len(token) < 16 or not _TOKEN_RE.fullmatch(token):
        raise ValueError("the API token must be at least 16 characters of [A-Za-z0-9_-]")
    limits = ApiLimits() if limits is None else limits
    app = web.Application(
        client_max_size=MAX_SEND_BYTES,
        middlewares=[_busy_middleware, _error_middleware, _auth_middleware(token)],
    )
    app[STORE_KEY] = store
    app[LIMITS_KEY] = limits
    app[BOOK_KEY] = ConnectionBook(limits.max_connections)
    app[_COMMITTER_KEY] = _GroupCommit(store, wake)
    app.router.add_post("/send", _send)
    app.router.add_get("/health", _health)
    app.router.add_get("/messages", _messages)
    return app


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
