"""`harness send | messages | messages retry | messages drop`, in process, on a real store;
and the daemon client's safe retry against a real sidecar server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import mistakes as ml
from harness.cli.main import main
from harness.daemon.client import DaemonClient
from harness.daemon.serve import DaemonInfo
from harness.errors import DaemonError
from memory import Store
from sidecar import count_by_state, create_app, enqueue, list_messages, mark_dead, mark_sent, serve
from sidecar._outbox import store_prepared

TOKEN = "test-api-token-0123456789"


@pytest.fixture
def store(home: Path) -> Store:
    return ml.open_log(home / "harness.db")


def states(store: Store) -> dict[int, tuple[str, int, str | None]]:
    with store.read() as s:
        return {m.id or 0: (m.state, m.attempts, m.last_error) for m in list_messages(session=s)}


def queue(store: Store, *texts: str) -> list[int]:
    with store.write() as s:
        return [m.id or 0 for text in texts for m in enqueue(session=s, text=text)]


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("harness: error: "), err
    return err


def test_retry_puts_a_dead_message_back_with_its_attempts_reset(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    [dead, later] = queue(store, "dead one", "later")
    with store.write() as s:
        mark_dead(session=s, message_id=dead, error="Discord refused the message: 400")

    assert main(["messages", "retry", str(dead)]) == 0

    assert f"message {dead} queued again" in capsys.readouterr().out
    assert states(store)[dead] == ("pending", 0, None)
    assert states(store)[later][0] == "pending"


def test_drop_gives_up_on_pending_and_dead_messages_and_says_who(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    [pending, dead] = queue(store, "pending", "dead")
    with store.write() as s:
        mark_dead(session=s, message_id=dead, error="refused")

    assert main(["messages", "drop", str(pending), str(dead)]) == 0

    assert f"message {pending}, {dead} dropped" in capsys.readouterr().out
    assert states(store)[pending] == ("dead", 0, "dropped by terminal")
    assert states(store)[dead] == ("dead", 1, "dropped by terminal")


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["messages", "drop", "{sent}"], "was already sent; it cannot be dropped"),
        (["messages", "drop", "{pending}", "{sent}"], "was already sent"),
        (["messages", "drop", "999"], "no outbox message 999"),
        (["messages", "retry", "999"], "no outbox message 999"),
        (["messages", "retry", "{pending}"], "is pending, already queued"),
        (["messages", "retry", "{sent}"], "was already sent"),
    ],
)
def test_refused_changes_exit_1_with_one_line_and_change_nothing(
    store: Store, capsys: pytest.CaptureFixture[str], argv: list[str], reason: str
) -> None:
    [sent, pending] = queue(store, "sent", "pending")
    with store.write() as s:
        mark_sent(session=s, message_id=sent, discord_message_id="42")
    before = states(store)

    code = main([a.format(sent=sent, pending=pending) for a in argv])

    assert code == 1
    assert reason in one_line_error(capsys)
    assert states(store) == before


def test_messages_prints_a_stored_row_with_a_lone_surrogate(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row stored before validation existed must not crash the listing (stdout refuses
    lone surrogates): it is shown with U+FFFD, in text and in strict JSON."""
    with store.write() as s:
        store_prepared(session=s, messages=[("text", [{"content": "bad \ud800 text"}])])
        s.connection().exec_driver_sql(
            "UPDATE outbox_message SET state = 'dead', last_error = ?", ("dead \ufffd",)
        )

    assert main(["messages"]) == 0
    out = capsys.readouterr().out
    assert "bad \ufffd text" in out and "dead" in out
    out.encode("utf-8")  # printable as UTF-8

    assert main(["messages", "--json"]) == 0
    data = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c))
    assert data[0]["payload"]["content"] == "bad \ufffd text"


def test_send_from_stdin_that_is_not_utf8_is_exit_2_and_stores_nothing(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"bad \xff bytes")))

    assert main(["send", "-"]) == 2

    assert "stdin is not UTF-8 text: byte 0xff at offset 4" in one_line_error(capsys)
    assert states(store) == {}


def test_send_from_stdin_queues_the_text(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("héllo\n".encode())))

    assert main(["send", "-"]) == 0

    with store.read() as s:
        [row] = list_messages(session=s)
    assert row.payload == {"content": "héllo\n"}


class LoseFirstAnswer(httpx.HTTPTransport):
    """The real network; the first answer is lost after the server acted on the request."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.keys.append(request.headers.get("Idempotency-Key"))
        response = super().handle_request(request)
        if len(self.keys) == 1:
            response.read()
            response.close()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


@pytest.fixture
async def sidecar_port(store: Store) -> AsyncIterator[int]:
    runner = await serve(create_app(store=store, token=TOKEN), port=0)
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def send(port: int, transport: httpx.BaseTransport | None, text: str) -> list[int]:
    info = DaemonInfo(pid=0, port=port, started=time.time())
    with DaemonClient(info, TOKEN, timeout=10, transport=transport) as client:
        return client.send(text)


async def test_send_retries_a_lost_answer_with_the_same_key_and_stores_once(
    store: Store, sidecar_port: int
) -> None:
    transport = LoseFirstAnswer()

    ids = await asyncio.to_thread(send, sidecar_port, transport, "exactly once")

    assert len(transport.keys) == 2 and transport.keys[0] == transport.keys[1]
    assert transport.keys[0] is not None and len(transport.keys[0]) >= 16
    with store.read() as s:
        assert count_by_state(session=s)["pending"] == 1
        [row] = list_messages(session=s)
    assert ids == [row.id]


async def test_each_send_uses_its_own_key(store: Store, sidecar_port: int) -> None:
    first = await asyncio.to_thread(send, sidecar_port, None, "same text")
    second = await asyncio.to_thread(send, sidecar_port, None, "same text")

    assert first != second
    with store.read() as s:
        assert count_by_state(session=s)["pending"] == 2


def test_a_daemon_that_is_gone_is_one_daemon_error(store: Store) -> None:
    with pytest.raises(DaemonError, match="cannot reach harness serve"):
        send(1, None, "nobody listens on port 1")
