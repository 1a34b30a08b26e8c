"""Every JSON the CLI prints is strict JSON, even over a state dir that holds NaN.

A run aborted for a NaN loss keeps that NaN in its progress snapshot and its incident's
evidence; a database written by an older Harness even holds the bare ``NaN`` token in
its JSON columns. Every ``--json`` (and ``brief --format json|hook``) output must still
parse with a parser that refuses ``NaN`` and ``Infinity``.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import mistakes as ml
from harness.cli.main import main
from memory import Run, add_note

OLD_RUN_ID = "old-nan-1"  # written by "an older Harness": bare NaN in its JSON columns
NEW_RUN_ID = "new-nan-1"  # written through the store today


def _refuse(token: str) -> Any:
    raise ValueError(f"not strict JSON: {token}")


def strict_loads(text: str) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity (as every other parser does)."""
    return json.loads(text, parse_constant=_refuse)


@pytest.fixture
def nan_world(home: Path) -> Path:
    """A state dir with NaN-aborted runs (old and new rows), an incident and notes."""
    run_dir = home / "runs" / NEW_RUN_ID
    run_dir.mkdir(parents=True)
    (run_dir / "controls.json").write_text('{"lr": 0.001}')
    nan, inf = math.nan, math.inf
    with ml.open_log(home / "harness.db") as store, store.write() as s:
        s.add(
            Run(
                id=NEW_RUN_ID,
                name="new",
                status="aborted",
                run_dir=str(run_dir),
                summary="aborted: loss is NaN at step 120",
                progress={"step": 120, "loss": nan, "grad_norm": inf},
                result={"gates": [{"gate": "loss < 1", "value": nan, "passed": False}]},
            )
        )
        s.add(Run(id="live-1", name="live", status="running", progress={"loss": -inf}))
        ml.record_incident(
            session=s,
            rule="nonfinite",
            summary="loss is NaN at step 120",
            run_id=NEW_RUN_ID,
            mistake_id=ml.NONFINITE_ID,
            severity="abort",
            evidence={"loss": nan, "grad_norm": inf, "step": 120},
        )
        add_note(session=s, text="look at the NaN", kind="note")
        add_note(session=s, text="never two jobs on one GPU", kind="order")
        add_note(session=s, text="is it NaN again?", kind="inbox", author="ann")
    raw = sqlite3.connect(home / "harness.db")
    raw.execute(
        "INSERT INTO run (id, name, source, spec, status, created_at, run_dir, summary, "
        "result, progress) VALUES (?, 'old', '', '{}', 'aborted', 1.0, '', ?, ?, ?)",
        (
            OLD_RUN_ID,
            "aborted: loss is NaN",
            '{"gates": [{"gate": "loss < 1", "value": NaN, "passed": false}]}',
            '{"step": 7, "loss": NaN, "lr": Infinity}',
        ),
    )
    raw.commit()
    raw.close()
    return home


COMMANDS = [
    ["runs", "--json"],
    ["status", "--json"],
    ["status", OLD_RUN_ID, "--json"],
    ["status", NEW_RUN_ID, "--json"],
    ["status", "live-1", "--json"],
    ["incidents", "--json"],
    ["incidents", "show", "1", "--json"],
    ["mistakes", "list", "--json"],
    ["mistakes", "show", ml.NONFINITE_ID, "--json"],
    ["mistakes", "search", "NaN", "--json"],
    ["checklist", "--json"],
    ["notes", "--json"],
    ["orders", "list", "--json"],
    ["inbox", "--all", "--json"],
    ["brief", "--format", "json", "--no-mark"],
    ["brief", "--format", "hook", "--no-mark"],
    ["config", "--json"],
    ["controls", "show", NEW_RUN_ID, "--json"],
    ["presets", "--json"],
    ["check", "--json"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_every_json_output_is_strict_json(
    nan_world: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code in (0, 1), err  # `check` may fail a check on a busy machine; never crash
    assert "Traceback" not in err
    strict_loads(out)


def test_non_finite_numbers_come_out_as_null(
    nan_world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", OLD_RUN_ID, "--json"]) == 0
    old = strict_loads(capsys.readouterr().out)
    assert old["progress"] == {"step": 7, "loss": None, "lr": None}
    assert old["result"]["gates"][0]["value"] is None
    assert main(["runs", "--json"]) == 0
    runs = {r["id"]: r for r in strict_loads(capsys.readouterr().out)}
    # what the store kept today is the text of the number ("nan"), so the fact survives
    assert runs[NEW_RUN_ID]["progress"] == {"step": 120, "loss": "nan", "grad_norm": "inf"}
    assert runs["live-1"]["progress"] == {"loss": "-inf"}
    assert main(["incidents", "show", "1", "--json"]) == 0
    evidence = strict_loads(capsys.readouterr().out)["evidence"]
    assert evidence == {"loss": "nan", "grad_norm": "inf", "step": 120}


def test_the_text_view_of_an_old_nan_row_still_prints(
    nan_world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", OLD_RUN_ID]) == 0
    assert OLD_RUN_ID in capsys.readouterr().out
