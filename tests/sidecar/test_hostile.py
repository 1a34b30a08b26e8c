"""The HTTP API holds under hostile clients (issue 10, class 5).

Real server on 127.0.0.1, real sockets: an idle flood, half-sent headers, a body that
never finishes, a non-ASCII Authorization header, JSON nested 20,000 deep, a retried
request with an Idempotency-Key. Limits are small so each test takes a second or two.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from memory import Store
from mistakes import open_log
from sidecar import (
    MAX_DEPTH,
    ApiLimits,
    RateLimitFilter,
    count_by_state,
    create_app,
    json_depth,
    json_ok,
    serve,
)

TOKEN = "test-api-token-0123456789"

Server = Callable[..., Awaitable[tuple[web.Application, int]]]
RELEASE = web.AppKey("release", asyncio.Event)
ENTERED = web.AppKey("entered", list)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_log(tmp_path / "harness.db")


@pytest.fixture
async def server(store: Store) -> AsyncIterator[Server]:
    """Start the real app with the given limits; ``(app, port)``. Cleaned up after."""
    runners: list[web.AppRunner] = []

    async def start(**limits: Any) -> tuple[web.Application, int]:
        app = create_app(store=store, token=TOKEN, limits=ApiLimits(**limits))
        release = asyncio.Event()
        app[RELEASE] = release
        app[ENTERED] = entered = []

        async def slow(request: web.Request) -> web.Response:
            entered.append(1)
            await release.wait()
            return json_ok({"ok": True})

        async def nan(request: web.Request) -> web.Response:
            return json_ok({"loss": float("nan"), "best": float("-inf")})

        app.router.add_get("/slow", slow)
        app.router.add_get("/nan", nan)
        runner = await serve(app, port=0)
        runners.append(runner)
        return app, int(runner.addresses[0][1])

    try:
        yield start
    finally:
        for runner in runners:
            runner.app[RELEASE].set()
            await runner.cleanup()


async def call(port: int, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}", **kw.pop("headers", {})}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"http://127.0.0.1:{port}{path}", headers=headers, **kw) as r,
    ):
        return r.status, await r.json()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes; the server's answer (head and Content-Length body, or up to EOF)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            head, sep, body = answer.partition(b"\r\n\r\n")
            length = [
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if sep and length and len(body) >= length[0]:
                break
    return answer


def parse(answer: bytes) -> tuple[int, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def closed_by_server(sock: socket.socket) -> bool:
    """The peer closed (EOF, or reset); an open idle socket has nothing to read.

    ``sock`` must be non-blocking (:func:`open_many`; ``setblocking(False)``).
    """
    try:
        data = sock.recv(4096, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    if data:  # a 503 answer waiting: read it, then look for the EOF behind it
        sock.recv(65536)
        return closed_by_server(sock)
    return True


def count_closed(socks: list[socket.socket], expect: int, timeout: float) -> int:
    """How many of ``socks`` the server closed, waiting up to ``timeout`` to reach ``expect``."""
    deadline = time.monotonic() + timeout
    while True:
        closed = sum(closed_by_server(s) for s in socks)
        if closed >= expect or time.monotonic() > deadline:
            return closed
        time.sleep(0.05)


def open_many(port: int, n: int) -> list[socket.socket]:
    """``n`` connected, non-blocking client sockets that send nothing."""
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        socks.append(sock)
    return socks


@pytest.fixture
def many_files() -> None:
    """1,100 client sockets plus the server's side live in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if want < 2500:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for 1,100 sockets")
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def test_1100_idle_connections_do_not_lock_out_a_real_request(
    server: Server, many_files: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    _, port = await server(max_connections=50, idle_timeout_s=60)

    socks = await asyncio.to_thread(open_many, port, 1100)
    try:
        closed = await asyncio.to_thread(count_closed, socks, 1050, 10.0)
        status, body = await call(port, "GET", "/health")
        after = await asyncio.to_thread(count_closed, socks, 1051, 10.0)
    finally:
        for s in socks:
            s.close()

    assert closed == 1050  # the excess, oldest first; the newest 50 stay open
    assert (status, body["ok"]) == (200, True)
    assert after == 1051  # the real request took the place of the oldest idle one
    assert "connection limit (50) reached" in caplog.text


async def test_when_every_connection_is_busy_a_new_one_gets_503_at_once(server: Server) -> None:
    app, port = await server(max_connections=3, idle_timeout_s=60)
    slow = [asyncio.create_task(call(port, "GET", "/slow")) for _ in range(3)]
    async with asyncio.timeout(10):
        while len(app[ENTERED]) < 3:  # all three are inside the handler
            await asyncio.sleep(0.01)

    try:
        answer = await asyncio.to_thread(
            raw_exchange, port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        )
    finally:
        app[RELEASE].set()
    done = await asyncio.gather(*slow)

    assert parse(answer) == (503, {"error": "too many connections (limit 3); try again"})
    assert [status for status, _ in done] == [200, 200, 200]  # busy ones were never cut


async def test_a_half_sent_header_is_dropped_after_the_idle_timeout(server: Server) -> None:
    _, port = await server(idle_timeout_s=0.5)

    def trickle() -> tuple[float, bool]:
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            sock.setblocking(False)
            for _ in range(50):  # one header byte every 0.1 s, for up to 5 s
                try:
                    sock.sendall(b"X")
                except (BrokenPipeError, ConnectionResetError):
                    return time.monotonic() - start, True
                if closed_by_server(sock):
                    return time.monotonic() - start, True
                time.sleep(0.1)
        return time.monotonic() - start, False

    elapsed, closed = await asyncio.to_thread(trickle)

    assert closed, "the server kept a connection whose headers never finished"
    assert elapsed < 5.0


async def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(
    server: Server,
) -> None:
    _, port = await server(idle_timeout_s=0.5)
    [sock] = await asyncio.to_thread(open_many, port, 1)
    try:
        closed = await asyncio.to_thread(count_closed, [sock], 1, 5.0)
    finally:
        sock.close()
    assert closed == 1


async def test_a_body_that_never_finishes_is_answered_408(server: Server, store: Store) -> None:
    _, port = await server(body_timeout_s=0.5, idle_timeout_s=60)
    head = (
        "POST /send HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n"
    )

    answer = await asyncio.to_thread(raw_exchange, port, head.encode() + b'{"text": "')

    status, body = parse(answer)
    assert status == 408 and "did not arrive within 0.5 s" in body["error"]
    with store.read() as s:
        assert count_by_state(session=s)["pending"] == 0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"Bearer \xff\xfe\xfd", "malformed Authorization header"),
        ("Bearer tökén-0123456789abcdef".encode(), "malformed Authorization header"),
        (b"Basic dXNlcjpwYXNz", "malformed Authorization header"),
        (b"Bearer", "malformed Authorization header"),
        (f"Bearer {TOKEN}x".encode(), "wrong bearer token"),
    ],
)
async def test_a_bad_authorization_header_is_401_not_500(
    server: Server, value: bytes, reason: str
) -> None:
    _, port = await server()
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: " + value
    request += b"\r\nConnection: close\r\n\r\n"

    answer = await asyncio.to_thread(raw_exchange, port, request)

    status, body = parse(answer)
    assert status == 401
    assert reason in body["error"]


@pytest.mark.parametrize(
    "body",
    [
        "[" * 20_000 + "]" * 20_000,
        '{"text": "x", "embeds": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}",
    ],
)
async def test_json_nested_too_deep_is_400(server: Server, store: Store, body: str) -> None:
    _, port = await server()

    status, answer = await call(port, "POST", "/send", data=body)

    assert status == 400
    assert answer == {"error": f"the body is nested too deep (limit {MAX_DEPTH})"}


async def test_nan_in_a_body_is_refused_and_nan_out_is_null(server: Server) -> None:
    _, port = await server()

    status, answer = await call(port, "POST", "/send", data='{"text": NaN}')
    assert status == 400 and "NaN" in answer["error"]
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/nan", headers={"Authorization": f"Bearer {TOKEN}"}) as r,
    ):
        text = await r.text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "loss": None,
        "best": None,
    }


def test_json_depth_counts_levels_without_recursion() -> None:
    assert json_depth(1) == 0
    assert json_depth({"a": [1, {"b": []}]}) == 4
    deep: Any = []
    for _ in range(50_000):
        deep = [deep]
    assert json_depth(deep) == MAX_DEPTH + 1


async def test_the_same_idempotency_key_stores_once_and_returns_the_same_ids(
    server: Server, store: Store
) -> None:
    _, port = await server()
    body = json.dumps({"text": "only once"})
    key = {"Idempotency-Key": "harness-send-abc123"}

    first = await call(port, "POST", "/send", data=body, headers=key)
    again = await call(port, "POST", "/send", data=body, headers=key)
    other = await call(port, "POST", "/send", data=json.dumps({"text": "else"}), headers=key)

    assert first[0] == 202
    assert again == (200, {"ids": first[1]["ids"], "replayed": True})
    assert other[0] == 409 and "different message" in other[1]["error"]
    with store.read() as s:
        assert count_by_state(session=s)["pending"] == 1


async def test_concurrent_requests_with_one_key_store_one_message(
    server: Server, store: Store
) -> None:
    _, port = await server()
    body = json.dumps({"text": "raced"})
    key = {"Idempotency-Key": "race-key"}

    results = await asyncio.gather(
        *(call(port, "POST", "/send", data=body, headers=key) for _ in range(20))
    )

    assert sorted(status for status, _ in results) == [200] * 19 + [202]
    assert len({tuple(answer["ids"]) for _, answer in results}) == 1
    with store.read() as s:
        assert count_by_state(session=s)["pending"] == 1


@pytest.mark.parametrize("key", ["", " ", "x" * 201, "tab\there", "ключ"])
async def test_a_malformed_idempotency_key_is_400(server: Server, store: Store, key: str) -> None:
    _, port = await server()
    request = (
        b"POST /send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
        + b"\r\nIdempotency-Key: " + key.encode() + b"\r\nContent-Length: 13"
        + b"\r\nConnection: close\r\n\r\n" + b'{"text": "k"}'
    )  # fmt: skip

    status, body = parse(await asyncio.to_thread(raw_exchange, port, request))

    assert status == 400 and "Idempotency-Key" in body["error"]
    with store.read() as s:
        assert count_by_state(session=s)["pending"] == 0


def test_the_rate_limit_filter_lets_one_of_a_kind_through_and_counts_the_rest() -> None:
    now = [0.0]
    limiter = RateLimitFilter(10.0, clock=lambda: now[0])
    logger = logging.getLogger("tests.sidecar.ratelimit")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep()
    handler.addFilter(limiter)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        for i in range(1000):
            logger.error("GET %s failed", f"/runs/{i}")
        logger.warning("another kind")
        logger.info("below warning: always")
        logger.info("below warning: always")
        now[0] = 11.0
        logger.error("GET %s failed", "/runs/last")
    finally:
        logger.removeHandler(handler)

    assert records == [
        "GET /runs/0 failed",
        "another kind",
        "below warning: always",
        "below warning: always",
        "GET /runs/last failed [999 more like this in the last 11 s not shown]",
    ]


def test_limits_are_validated() -> None:
    for bad in ({"max_connections": 0}, {"idle_timeout_s": float("nan")}, {"body_timeout_s": 0}):
        with pytest.raises(ValueError, match="must be"):
            ApiLimits(**bad)
