"""Arbitrary bodies and headers against the real HTTP API (issue 10, classes 1, 3, 5).

The sidecar app with the harness run routes, served on 127.0.0.1 by a loop in a thread,
over a real SQLite file. Whatever a client sends: no 500, every answer is strict JSON
with an ``error`` when it is one, and nothing is lost or doubled: the outbox holds
exactly the messages whose ids were answered.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import mistakes as ml
from harness.daemon.api import add_run_routes
from harness.daemon.config import load_settings
from harness.daemon.service import Service
from memory import Run
from sidecar import count_by_state, create_app, serve

TOKEN = "fuzz-api-token-0123456789abcdef"
ALLOWED = {200, 201, 202, 400, 401, 404, 405, 408, 409, 413, 422}


def strict(text: str) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


class Api:
    """The real app on its own loop in a thread; ``url`` for httpx."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.store = ml.open_log(home / "harness.db")
        with self.store.write() as s:
            s.add(Run(id="live-1", name="live", status="running", run_dir=str(home / "r")))
            s.add(Run(id="done-1", name="done", status="succeeded", run_dir=str(home / "d")))
        (home / "r").mkdir()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the API did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        settings = load_settings({"HARNESS_HOME": str(self.home)})
        self.service = Service(settings, self.store)
        app = create_app(store=self.store, token=TOKEN)
        add_run_routes(app, self.service)
        self.runner = await serve(app, port=0)
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.store.close()

    def outbox_rows(self) -> int:
        with self.store.read() as s:
            return sum(count_by_state(session=s).values())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    a = Api(tmp_path_factory.mktemp("fuzz-api"))
    try:
        yield a
    finally:
        a.close()


@pytest.fixture(scope="module")
def client(api: Api) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=30) as c:
        yield c


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
send_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "text": st.one_of(st.text(max_size=300), json_values),
            "embeds": json_values,
            "kind": st.one_of(st.sampled_from(["text", "alert", "embed", "x"]), json_values),
        },
    ).map(lambda d: json.dumps(d).encode()),
    st.text(max_size=100).map(lambda t: json.dumps({"text": t}).encode("utf-8", "surrogatepass")),
)
header_bytes = st.binary(min_size=0, max_size=60).filter(
    lambda b: b"\r" not in b and b"\n" not in b
)


def _check(r: httpx.Response) -> Any:
    assert r.status_code in ALLOWED, (r.status_code, r.text)
    body = strict(r.text)
    if r.status_code >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), str), r.text
        assert "\n" not in body["error"]
    return body


fuzz = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@fuzz
@given(body=send_bodies, key=st.none() | st.text(max_size=20))
def test_send_bodies_never_500_and_nothing_is_lost(
    api: Api, client: httpx.Client, body: bytes, key: str | None
) -> None:
    before = api.outbox_rows()
    headers: dict[bytes, bytes] = {b"Authorization": f"Bearer {TOKEN}".encode()}
    if key is not None:
        headers[b"Idempotency-Key"] = key.encode("utf-8", "surrogatepass")
    try:
        r = client.post("/send", content=body, headers=headers)
    except httpx.LocalProtocolError:  # httpx will not send it (a blank header value)
        assume(False)
        return
    answer = _check(r)
    after = api.outbox_rows()
    if r.status_code == 202:
        assert after - before == len(answer["ids"]) > 0  # stored exactly what it answered
    else:
        assert after == before  # refused, or replayed under a used key: nothing stored


@fuzz
@given(auth=header_bytes, path=st.sampled_from(["/send", "/health", "/runs", "/messages"]))
def test_any_authorization_header_is_401_or_accepted(
    client: httpx.Client, auth: bytes, path: str
) -> None:
    try:
        r = client.request(
            "POST" if path == "/send" else "GET",
            path,
            headers={b"Authorization": auth},
            content=b'{"text": "x"}' if path == "/send" else None,
        )
    except httpx.LocalProtocolError:
        assume(False)
        return
    _check(r)
    if auth != f"Bearer {TOKEN}".encode():
        malformed = any((b < 0x20 and b != 0x09) or b == 0x7F for b in auth)  # not a header
        assert r.status_code == (400 if malformed else 401), (auth, r.text)


@fuzz
@given(
    ref=st.text(max_size=30),
    action=st.sampled_from(["", "/abort", "/controls"]),
    body=send_bodies,
)
def test_run_routes_with_any_id_and_body(
    api: Api, client: httpx.Client, ref: str, action: str, body: bytes
) -> None:
    """No id that is not a run's (blank, a prefix of nothing, odd text) reaches a run."""
    assume(not any(run.startswith(ref.strip()) for run in ("live-1", "done-1") if ref.strip()))
    path = "/runs/" + quote(ref, safe="") + action
    method = "POST" if action else "GET"
    r = client.request(
        method,
        path,
        content=body if method == "POST" else None,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    _check(r)
    assert r.status_code not in (200, 201, 202), (path, r.text)
    with api.store.read() as s:
        live = s.get(Run, "live-1")
    assert live is not None and live.abort_requested is None
    assert not (api.home / "r" / "controls.json").exists()
