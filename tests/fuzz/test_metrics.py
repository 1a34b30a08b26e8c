"""Arbitrary metrics lines through the real tailer, machine and store (issue 10, class 2).

Whatever a job appends to ``metrics.jsonl`` (random bytes, JSON with huge, nested or
non-finite numbers, lone surrogates, ``1e999``, very long lines), the supervision path
(:class:`MetricsTail` -> :class:`RunMachine` -> the supervisor's own store writes in
``harness.runtime.records`` on a real SQLite file) raises nothing, a NaN or Inf loss still
ends in an abort verdict, and every row stored reads back as strict JSON.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mistakes as ml
from harness.core.machine import (
    Action,
    Exited,
    Finish,
    MetricLines,
    RecordIncident,
    RunMachine,
    Terminate,
)
from harness.core.spec import RunSpec
from harness.runtime.records import (
    finish_run,
    insert_run,
    progress_fields,
    record_finding,
    set_fields,
)
from harness.runtime.tail import MetricsTail
from memory import Run, Store

MAX_LINE = 4096  # small, so that "very long" lines are cheap to make
SPEC = RunSpec(name="fuzz", command=["python"], gates={"score": ">= 0.5"}, key_metric="loss")
KEYS = ("loss", "grad_norm", "step", "event", "t", "phase", "total_steps", "device", "score")
EVENTS = ("start", "phase", "checkpoint", "end", "controls")


def _strict(text: str) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


texts = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=12)
numbers = (
    st.integers()
    | st.floats()  # NaN and both infinities included
    | st.sampled_from([10**4000, -(10**400), 2**63, 2**64, 1e308, -0.0])
)
scalars = st.none() | st.booleans() | numbers | texts | st.sampled_from(EVENTS)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
records = st.dictionaries(st.sampled_from(KEYS) | texts, values, max_size=8)


@st.composite
def json_lines(draw: st.DrawFn) -> bytes:
    text = json.dumps(draw(records), ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")  # a raw surrogate is bad UTF-8: garbage


raw_lines = st.sampled_from(
    [
        b'{"step": 1, "loss": 0.5, "acc": 1e999}',
        b'{"step": 2, "note": "\\ud800", "\\udfff": 1}',
        b'{"step": 1e999, "total_steps": -1e999, "loss": 123' + b"4" * 5000 + b"}",
        b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        b'{"a": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}",
        b'{"v": "' + b"x" * (MAX_LINE * 2) + b'"}',
        b'{"event": "end", "score": NaN, "final": {"x": Infinity}}',
        b'{"event": "start", "total_steps": 99999999999999999999999, "device": 7}',
        b"\xff\xfe\x00\x00{",
        b"NaN",
        b"",
    ]
)
lines = st.binary(max_size=120) | json_lines() | raw_lines
bad_losses = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b'"nan"', b'"-inf"'])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = ml.open_log(tmp_path_factory.mktemp("fuzz") / "harness.db")
    try:
        yield s
    finally:
        s.close()


def _carry_out(
    store: Store, run_id: str, machine: RunMachine, event: Any, t: float
) -> list[Action]:
    """What the supervisor does with the machine's decisions, with its own write functions."""
    acts = machine.handle(event)
    for act in acts:
        if isinstance(act, RecordIncident):
            record_finding(store, run_id, act.finding, act.severity, act.action, ts=t)
        elif isinstance(act, Finish):
            result = {**act.result, "progress": machine.progress.snapshot()}
            finish_run(store, run_id, act.status, act.summary, result, 0, t)
    return acts


def _stored_json(store: Store, run_id: str) -> list[str]:
    with sqlite3.connect(store.path) as db:
        run = db.execute("SELECT spec, result, progress FROM run WHERE id = ?", (run_id,))
        found = list(run.fetchone())
        evidence = db.execute("SELECT evidence FROM incident WHERE run_id = ?", (run_id,))
        found += [row[0] for row in evidence.fetchall()]
    return found


@settings(max_examples=40, deadline=None)
@given(
    body=st.lists(lines, max_size=16),
    bad_loss=bad_losses,
    chunk=st.integers(64, 5000),
    batch_every=st.integers(1, 5),
)
def test_arbitrary_metrics_lines_never_stop_supervision_and_nan_still_aborts(
    store: Store,
    tmp_path_factory: pytest.TempPathFactory,
    body: list[bytes],
    bad_loss: bytes,
    chunk: int,
    batch_every: int,
) -> None:
    run_id = f"fuzz-{uuid.uuid4().hex[:8]}"
    run_dir = tmp_path_factory.mktemp(run_id)
    metrics = run_dir / "metrics.jsonl"
    metrics.touch()
    insert_run(store, Run(id=run_id, name="fuzz", status="running", run_dir=str(run_dir)))
    tail = MetricsTail(metrics, max_line_bytes=MAX_LINE, chunk_bytes=chunk, root=run_dir)
    machine = RunMachine(SPEC, started_at=0.0)
    decided: list[Action] = []
    t = 1.0

    def poll() -> None:
        batch = tail.read_new()
        event = MetricLines(
            t, batch.records, batch.garbage, batch.oversized, batch.first_garbage, batch.unreadable
        )
        decided.extend(_carry_out(store, run_id, machine, event, t))
        set_fields(store, run_id, progress_fields(machine, at=t))

    with metrics.open("ab") as f:
        for i, line in enumerate([*body, b'{"step": 7, "loss": ' + bad_loss + b"}"]):
            f.write(line + b"\n")
            f.flush()
            if i % batch_every == 0:
                poll()
            t += 0.1
    poll()

    terminated = [a for a in decided if isinstance(a, Terminate)]
    assert len(terminated) == 1  # the NaN/Inf loss (or an earlier one) aborts, once
    assert machine.status == "aborting"
    _carry_out(store, run_id, machine, Exited(t, 0, ""), t)
    assert machine.status == "aborted"
    for text in _stored_json(store, run_id):
        _strict(text)
    with store.read() as s:
        row = s.get(Run, run_id)
        assert row is not None and row.status == "aborted"
        assert row.summary.startswith("aborted: ")
        incidents = ml.list_incidents(session=s, run_id=run_id)
    assert any(i.rule == "nonfinite" and i.severity == "abort" for i in incidents)


@settings(max_examples=60, deadline=None)
@given(stream=st.lists(lines, max_size=12), cuts=st.lists(st.integers(0, 20_000), max_size=8))
def test_any_stream_cut_anywhere_yields_only_clean_records(
    tmp_path_factory: pytest.TempPathFactory, stream: list[bytes], cuts: list[int]
) -> None:
    data = b"\n".join(stream)
    metrics = Path(tmp_path_factory.mktemp("cut")) / "metrics.jsonl"
    tail = MetricsTail(metrics, max_line_bytes=MAX_LINE, chunk_bytes=333)
    got: list[dict[str, Any]] = []
    edges = sorted({min(c, len(data)) for c in cuts} | {len(data)})
    start = 0
    for edge in edges:
        with metrics.open("ab") as f:
            f.write(data[start:edge])
        start = edge
        batch = tail.read_new()
        assert batch.unreadable is None
        got += batch.records
    for record in got:
        assert isinstance(record, dict)
        json.dumps(record, ensure_ascii=False).encode("utf-8")  # no lone surrogate, keys too
