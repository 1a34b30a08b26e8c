"""RunWriter: store writes that retry, degrade to a fallback file and never raise."""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.runtime.guard import GuardConfig, Outcome, RunWriter, describe_error

FAST = GuardConfig(retries=2, backoff_s=0.001, say_every_s=30.0, final_retry_s=5.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Flaky:
    """A write that raises ``failures`` times, then works; counts its calls."""

    def __init__(self, failures: int | float) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise sqlite3.OperationalError("database or disk is full")
        return "written"


def strict(line: str) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(token)

    return json.loads(line, parse_constant=refuse)


def writer(
    tmp_path: Path, said: list[str], clock: Callable[[], float] | None = None, **cfg: Any
) -> RunWriter:
    config = GuardConfig(**{**FAST.__dict__, **cfg})
    return RunWriter("r1", tmp_path / "fallback.jsonl", config, said.append, clock or Clock())


def kept(tmp_path: Path) -> list[Any]:
    path = tmp_path / "fallback.jsonl"
    if not path.exists():
        return []
    return [strict(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_a_write_that_fails_then_works_is_retried_and_nothing_is_said(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    w = writer(tmp_path, said)
    fn = Flaky(2)

    outcome = await w.submit("save progress", fn, {"step": 1})

    assert outcome == Outcome(True, "written")
    assert fn.calls == 3 and said == [] and kept(tmp_path) == []
    assert w.failing_for() == 0.0


async def test_a_write_that_keeps_failing_goes_to_the_fallback_file_as_strict_json(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    w = writer(tmp_path, said)
    record = {"metrics": {"loss": math.nan, "big": math.inf}, "note": "a \ud800 b"}

    outcome = await w.submit("record an incident", Flaky(math.inf), record)

    assert not outcome.ok
    assert outcome.error == "OperationalError: database or disk is full"
    (line,) = kept(tmp_path)
    assert line["run_id"] == "r1" and line["what"] == "record an incident"
    assert line["record"] == {"metrics": {"loss": None, "big": None}, "note": "a \ufffd b"}
    assert os.stat(tmp_path / "fallback.jsonl").st_mode & 0o777 == 0o600
    (text,) = said
    assert text.startswith("run r1: could not record an incident in the store: Operational")
    assert f"kept in {tmp_path / 'fallback.jsonl'}; supervision goes on" in text


async def test_stderr_is_rate_limited_and_recovery_is_said_once(tmp_path: Path) -> None:
    said: list[str] = []
    clock = Clock()
    w = writer(tmp_path, said, clock)
    for _ in range(5):
        await w.submit("save progress", Flaky(math.inf), {})
        clock.now += 1.0
    assert len(said) == 1
    assert w.failing_for() == 5.0
    clock.now += 30.0
    await w.submit("save progress", Flaky(math.inf), {})
    assert len(said) == 2 and "(4 more since the last line)" in said[1]

    assert (await w.submit("save progress", Flaky(0), {})).ok

    assert said[2] == (
        f"run r1: the store works again after 35 s (6 write(s) failed, "
        f"6 kept in {tmp_path / 'fallback.jsonl'})"
    )
    assert w.failing_for() == 0.0
    assert len(kept(tmp_path)) == 6


async def test_a_read_that_works_does_not_end_a_failure_of_writes(tmp_path: Path) -> None:
    said: list[str] = []
    clock = Clock()
    w = writer(tmp_path, said, clock)
    await w.submit("save progress", Flaky(math.inf), {})
    clock.now += 3.0

    assert (await w.call("read the abort request", lambda: None)).ok

    assert w.failing_for() == 3.0
    failed = await w.call("read the abort request", Flaky(math.inf))
    assert not failed.ok and kept(tmp_path) != []  # the write's record only


async def test_writes_run_in_order_and_queued_progress_is_coalesced(tmp_path: Path) -> None:
    w = writer(tmp_path, [])
    done: list[str] = []
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()

    def blocked() -> None:
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(5)
        done.append("first")

    first = w.submit("mark the run starting", blocked)
    progress = [
        w.submit("save progress", functools.partial(done.append, f"progress {i}"), key="progress")
        for i in range(3)
    ]
    last = w.submit("record how the run ended", lambda: done.append("finish"))
    gate.set()
    await asyncio.gather(first, *progress, last)

    assert done == ["first", "progress 2", "finish"]
    assert progress[0] is progress[1] is progress[2]


async def test_the_final_write_keeps_being_retried_until_the_store_is_back(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    w = writer(tmp_path, said, backoff_s=0.001)
    fn = Flaky(4)  # three attempts fail, then one background retry fails, then it works

    outcome = await w.submit("record how the run ended", fn, {"status": "aborted"}, persist=True)
    assert not outcome.ok  # the caller goes on with what it knows
    assert await w.drain(timeout=10.0)

    assert fn.calls == 5
    assert said[-1] == "run r1: record how the run ended: recorded after all"


async def test_a_symlink_in_place_of_the_fallback_file_is_not_written_through(
    tmp_path: Path,
) -> None:
    target = tmp_path / "bashrc"
    target.write_text("original\n")
    (tmp_path / "fallback.jsonl").symlink_to(target)
    said: list[str] = []
    w = writer(tmp_path, said)

    await w.submit("save progress", Flaky(math.inf), {"x": 1})

    assert target.read_text() == "original\n"
    assert any("cannot write" in s for s in said)


async def test_cancel_answers_every_queued_write(tmp_path: Path) -> None:
    w = writer(tmp_path, [])
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    first = w.submit("x", lambda: asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(5))
    second = w.submit("y", lambda: None)
    await asyncio.sleep(0)

    w.cancel()
    gate.set()

    assert (await second) == Outcome(False, None, "cancelled")
    assert first.done()


def test_describe_error_is_one_clean_line() -> None:
    exc = sqlite3.OperationalError("malformed JSON\n[SQL: INSERT INTO incident ...]\n\ud800")
    assert describe_error(exc) == "OperationalError: malformed JSON"


@pytest.mark.parametrize(
    ("key", "value"), [("give_up_s", math.nan), ("backoff_s", -1.0), ("retries", -1)]
)
def test_config_refuses_nonsense(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=key):
        GuardConfig(**{key: value})  # type: ignore[arg-type]
