"""``harness diagnose RUN|METRICS_FILE [--json]`` through the real command line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import mistakes as ml
from harness.cli.main import main
from memory import Run

CORPUS = Path(__file__).parents[2] / "diagnosis" / "corpus"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def healthy(n: int = 300) -> list[dict[str, Any]]:
    return [
        {"step": s, "loss": 2 * math.exp(-s / 80) + 0.2, "grad_norm": 0.5 + 0.01 * (s % 7), "t": s}
        for s in range(1, n + 1)
    ]


def test_a_real_fault_reads_as_a_report_and_as_the_documented_json(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = CORPUS / "real_lr_change.jsonl"
    code, out, _ = run(capsys, "diagnose", str(path))
    assert code == 0
    assert out.startswith(f"{path}: unhealthy: ")
    assert "likely lr_change" in out and "Quick wins:" in out
    code, out, _ = run(capsys, "diagnose", str(path), "--json")
    data = json.loads(out)
    assert code == 0 and data["verdict"] == "unhealthy" and data["skipped"] == 0
    assert set(data) == {"verdict", "findings", "quick_wins", "lines", "skipped"}
    for f in data["findings"]:
        assert set(f) == {"symptom", "step", "severity", "evidence", "mistakes", "causes"}
        assert f["severity"] in ("info", "warn", "critical")
        for c in f["causes"]:
            assert set(c) == {"rank", "cause", "confidence", "evidence", "fix"}
    symptoms = {f["symptom"]: f for f in data["findings"]}
    assert symptoms["metric_collapse"]["causes"][0]["cause"] == "lr_change"


def test_a_healthy_file_with_garbage_lines_says_so_and_skips_them(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[Any] = healthy()
    lines[100:100] = ["not json", '{"step": 1},{"step": 2}', "[1, 2]", ""]
    path = write(tmp_path / "m.jsonl", lines)
    code, out, _ = run(capsys, "diagnose", str(path))
    assert code == 0
    assert out.splitlines()[0] == f"{path}: healthy: no symptom in 300 lines"
    assert "(3 line(s) were not JSON objects and were skipped)" in out


def test_a_run_is_found_by_id_and_its_gated_metric_is_judged_as_an_accuracy(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "runs" / "r-1"
    run_dir.mkdir(parents=True)
    lines: list[Any] = healthy()
    for step in range(20, 301, 20):  # "score" falls from 0.9 to 0.5 at step 200 and stays
        score = (0.9 if step < 200 else 0.5) + step * 1e-4
        lines.append({"step": step, "score": score, "t": step})
    write(run_dir / "metrics.jsonl", sorted(lines, key=lambda r: (r["t"], "score" in r)))
    from harness.daemon.config import load_settings

    with ml.open_log(load_settings().paths.db_path) as store, store.write() as session:
        spec = {"name": "g", "command": ["x"], "gates": {"score": ">= 0.8"}}
        session.add(Run(id="r-1", name="g", spec=spec, status="failed", run_dir=str(run_dir)))
    code, out, _ = run(capsys, "diagnose", "r-1", "--json")
    assert code == 0
    assert [f["symptom"] for f in json.loads(out)["findings"]] == ["metric_collapse"]


def test_what_is_not_there_is_one_line(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "diagnose", str(tmp_path / "none.jsonl"))
    assert code == 1 and err.strip() == f"harness: error: {tmp_path / 'none.jsonl'}: no such file"
    code, _, err = run(capsys, "diagnose", str(tmp_path) + "/")
    assert code == 2 and "is a directory" in err and err.count("\n") == 1
    code, _, err = run(capsys, "diagnose", "no-such-run")
    assert code == 1 and "no-such-run" in err
