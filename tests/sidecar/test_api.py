"""The sidecar HTTP API over a real socket on 127.0.0.1, and its token file."""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from memory import Store
from mistakes import open_log
from sidecar import (
    TokenFileError,
    create_app,
    json_error,
    list_messages,
    load_or_create_token,
    serve,
    token_file,
)

TOKEN = "test-api-token-0123456789"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_log(tmp_path / "harness.db")


@pytest.fixture
def woken() -> list[int]:
    return []


@pytest.fixture
async def base_url(store: Store, woken: list[int]) -> AsyncIterator[str]:
    app = create_app(store=store, token=TOKEN, wake=lambda: woken.append(1))

    async def extra(request: web.Request) -> web.Response:  # a route the lead adds later
        return json_error(409, "run is already finished")

    app.router.add_get("/runs/{id}", extra)
    runner = await serve(app, port=0)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def call(
    base_url: str,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    data: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base_url + path, data=data, headers=hdrs) as response,
    ):
        assert response.content_type == "application/json"
        return response.status, await response.json()


def stored(store: Store) -> list[str]:
    with store.read() as s:
        return [m.payload.get("content", "") for m in reversed(list_messages(session=s))]


async def test_send_stores_the_message_before_answering_202_and_wakes_the_worker(
    base_url: str, store: Store, woken: list[int]
) -> None:
    status, body = await call(base_url, "POST", "/send", data=json.dumps({"text": "hello"}))

    assert status == 202
    assert stored(store) == ["hello"]
    with store.read() as s:
        [row] = list_messages(session=s)
    assert body == {"ids": [row.id]}
    assert woken  # the delivery worker was told at once


async def test_send_with_text_and_embeds_and_a_kind(base_url: str, store: Store) -> None:
    payload = {"text": "x" * 2500, "embeds": [{"title": "loss", "description": "0.1"}]}
    payload["kind"] = "alert"

    status, body = await call(base_url, "POST", "/send", data=json.dumps(payload))

    assert status == 202 and len(body["ids"]) == 2
    with store.read() as s:
        rows = list(reversed(list_messages(session=s)))
    assert [r.kind for r in rows] == ["alert", "alert"]
    assert rows[1].payload["embeds"] == [{"title": "loss", "description": "0.1"}]


@pytest.mark.parametrize(
    ("token", "reason"), [(None, "missing bearer token"), ("nope" * 6, "wrong bearer token")]
)
@pytest.mark.parametrize(("method", "path"), [("POST", "/send"), ("GET", "/health")])
async def test_every_route_needs_the_bearer_token(
    base_url: str, store: Store, token: str | None, reason: str, method: str, path: str
) -> None:
    status, body = await call(base_url, method, path, token=token, data='{"text": "x"}')

    assert (status, body) == (401, {"error": reason})
    assert stored(store) == []


async def test_routes_added_later_are_behind_the_token_too(base_url: str) -> None:
    assert (await call(base_url, "GET", "/runs/7", token=None))[0] == 401
    assert await call(base_url, "GET", "/runs/7") == (409, {"error": "run is already finished"})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("", "the body is empty"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"text": 5}', "text must be a string"),
        ('{"text": "  "}', "nothing to send"),
        ("{}", "nothing to send"),
        ('{"embeds": "x"}', "embeds must be a list"),
        ('{"text": "x", "kind": "shout"}', "kind must be one of"),
        ('{"txt": "x"}', "unknown key 'txt'"),
    ],
)
async def test_bad_bodies_are_refused_with_the_reason(
    base_url: str, store: Store, data: str, reason: str
) -> None:
    status, body = await call(base_url, "POST", "/send", data=data)

    assert status == 400
    assert reason in body["error"]
    assert stored(store) == []


async def test_unknown_route_wrong_method_and_oversized_body(base_url: str) -> None:
    assert await call(base_url, "GET", "/nope") == (404, {"error": "no route GET /nope"})
    # a path that decodes to a new line is shown as sent: the error stays one line
    assert await call(base_url, "GET", "/runs/%0A%7B") == (
        404,
        {"error": "no route GET /runs/%0A%7B"},
    )
    status, body = await call(base_url, "GET", "/send")
    assert status == 405 and "not allowed" in body["error"]
    big = json.dumps({"text": "y" * (70 * 1024)})
    status, body = await call(base_url, "POST", "/send", data=big)
    assert status == 413 and "too large" in body["error"]


async def test_health_and_messages_show_the_outbox(base_url: str) -> None:
    for text in ("one", "two", "three"):
        await call(base_url, "POST", "/send", data=json.dumps({"text": text}))

    assert await call(base_url, "GET", "/health") == (
        200,
        {"ok": True, "outbox": {"pending": 3, "sending": 0, "sent": 0, "dead": 0}},
    )
    status, body = await call(base_url, "GET", "/messages?state=pending&limit=2")
    assert status == 200
    assert [m["payload"]["content"] for m in body["messages"]] == ["three", "two"]
    assert (await call(base_url, "GET", "/messages?state=lost"))[0] == 400
    assert (await call(base_url, "GET", "/messages?limit=0"))[0] == 400


async def test_concurrent_sends_are_each_stored_once(base_url: str, store: Store) -> None:
    results = await asyncio.gather(
        *(call(base_url, "POST", "/send", data=json.dumps({"text": f"c{i}"})) for i in range(50))
    )

    ids = [i for status, body in results for i in body["ids"]]
    assert {status for status, _ in results} == {202}
    assert len(set(ids)) == 50
    assert sorted(stored(store)) == sorted(f"c{i}" for i in range(50))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_the_documented_curl_line_works(base_url: str, store: Store) -> None:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "-X", "POST", f"{base_url}/send",
        "-H", f"Authorization: Bearer {TOKEN}",
        "-d", '{"text": "hello"}',
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()

    assert proc.returncode == 0
    assert "ids" in json.loads(out)
    assert stored(store) == ["hello"]


async def test_serve_refuses_a_non_loopback_address(store: Store) -> None:
    with pytest.raises(ValueError, match="loopback"):
        await serve(create_app(store=store, token=TOKEN), host="0.0.0.0", port=0)


def test_token_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    first = load_or_create_token(tmp_path)

    path = token_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == first and len(first) >= 32
    assert load_or_create_token(tmp_path) == first


def test_a_token_file_others_can_read_is_replaced(tmp_path: Path) -> None:
    path = token_file(tmp_path)
    path.write_text("leaked-token-abcdefghijklmnop\n")
    path.chmod(0o644)

    token = load_or_create_token(tmp_path)

    assert token != "leaked-token-abcdefghijklmnop"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token


def test_a_token_path_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    token_file(tmp_path).mkdir()
    with pytest.raises(TokenFileError, match="not a regular file"):
        load_or_create_token(tmp_path)
