"""Incidents: record, filter, resolve, and many writers at once without loss."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mistakes as ml


def test_record_filter_and_resolve(tmp_path: Path) -> None:
    with ml.open_log(tmp_path / "h.db") as store:
        with store.write() as s:
            old = ml.record_incident(
                session=s,
                rule="stall",
                summary="no metrics for 130 s",
                run_id="a",
                mistake_id="M-037",
                severity="abort",
                ts=time.time() - 7200,
            )
            ml.record_incident(
                session=s,
                rule="utilisation",
                summary="CPU 6 %",
                run_id="b",
                mistake_id="M-015",
                severity="abort",
                evidence={"util": 0.06},
            )
            ml.record_incident(session=s, rule="gates", summary="gate failed", run_id="b")
        with store.read() as s:
            assert [i.rule for i in ml.list_incidents(session=s, run_id="b")] == [
                "gates",
                "utilisation",
            ]
            assert len(ml.list_incidents(session=s, mistake_id="m-15")) == 1
            assert len(ml.list_incidents(session=s, rule="stall")) == 1
            assert len(ml.list_incidents(session=s, since=time.time() - 3600)) == 2
        with store.write() as s:
            ml.resolve_incident(session=s, incident_id=old.id or 0, note="raised stall_s")
        with store.read() as s:
            assert len(ml.list_incidents(session=s, unresolved=True)) == 2
            got = ml.get_incident(session=s, incident_id=old.id or 0)
            assert got.resolved and got.resolution_note == "raised stall_s"
            with pytest.raises(ml.NotFoundError):
                ml.get_incident(session=s, incident_id=9999)


def test_bad_incidents_are_refused(tmp_path: Path) -> None:
    with ml.open_log(tmp_path / "h.db") as store, store.write() as s:
        with pytest.raises(ml.InvalidInputError, match="M-777"):
            ml.record_incident(session=s, rule="x", summary="y", mistake_id="M-777")
        with pytest.raises(ml.InvalidInputError, match="severity"):
            ml.record_incident(session=s, rule="x", summary="y", severity="fatal")


WRITER = textwrap.dedent(
    """
    import sys
    import mistakes as ml
    path, tag = sys.argv[1], sys.argv[2]
    store = ml.open_log(path)
    for n in range(200):
        with store.write() as s:
            # read-then-write inside one BEGIN IMMEDIATE transaction
            seen = len(ml.list_incidents(session=s, run_id=tag))
            ml.record_incident(session=s, rule="load", summary=f"{tag} {n} after {seen}",
                               run_id=tag, evidence={"n": n, "seen": seen})
    store.close()
    """
)


def test_four_processes_recording_concurrently_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    ml.open_log(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{k}"]) for k in range(4)]
    assert [p.wait(timeout=100) for p in procs] == [0, 0, 0, 0]
    with ml.open_log(path) as store, store.read() as s:
        rows = ml.list_incidents(session=s, rule="load")
        assert len(rows) == 800
        for k in range(4):
            mine = sorted(i.evidence["seen"] for i in rows if i.run_id == f"w{k}")
            assert mine == list(range(200))  # each read saw exactly its own earlier writes
        assert len(ml.search(session=s, query="w3", kinds=("incident",), limit=1000)) == 200
