"""The mistake-log CLI: exit codes, one-line errors, --json shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli.main import main
from mistakes._catalogue import BUILTIN_MISTAKES

FIXTURE = Path(__file__).parents[2] / "fixtures" / "MISTAKES.md"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_is_fast_to_import() -> None:
    # No timing assertion (that is bench/'s job): --help must not import the heavy stack.
    code = (
        "import sys; from harness.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('sqlalchemy', 'sqlmodel', 'psutil', 'aiohttp', 'torch', 'pydantic', "
        "'discord', 'httpx', 'apscheduler') "
        "if m in sys.modules]\nprint(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_list_show_and_json_shapes(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "mistakes", "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert {"M-015", "M-030"} <= {r["id"] for r in rows}
    assert set(rows[0]) >= {"id", "title", "category", "symptom", "root_cause", "fix", "extra"}
    code, out, _ = run(capsys, "mistakes", "show", "m-15", "--json")
    assert code == 0 and json.loads(out)["id"] == "M-015"
    code, out, _ = run(capsys, "mistakes", "list", "--category", "devices")
    assert code == 0 and "M-015" in out and "M-030" not in out


def test_errors_are_one_line_with_the_right_exit_code(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "mistakes", "show", "M-999")
    assert code == 1 and err.count("\n") == 1 and "M-999" in err
    code, _, err = run(capsys, "mistakes", "show", "banana")
    assert code == 2 and "not a mistake id" in err
    code, _, err = run(capsys, "incidents", "--since", "yesterday")
    assert code == 2 and "--since" in err
    code, _, err = run(capsys, "mistakes", "import", str(home / "missing.md"))
    assert code == 1 and "missing.md: no such file" in err  # not found is a failure
    with pytest.raises(SystemExit) as info:
        main(["mistakes", "frobnicate"])
    assert info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_import_export_and_search(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "mistakes", "import", str(FIXTURE), "--json")
    assert code == 0
    report = json.loads(out)
    assert len(report["added"]) + len(report["updated"]) >= 30 and report["skipped"] == []
    target = tmp_path / "out.md"
    code, _, _ = run(capsys, "mistakes", "export", str(target))
    assert code == 0 and "## Prevention Checklist" in target.read_text()
    code, out, _ = run(capsys, "mistakes", "search", "util", "AND", "(", "--json")
    assert code == 0
    hits = json.loads(out)
    assert hits and {"kind", "id", "title", "snippet", "score"} <= set(hits[0])


def test_bad_import_exits_2_and_lists_lines(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.md"
    bad.write_text("## Category: X\n\n### no id here\n\n**Fix:** y\n")
    code, _, err = run(capsys, "mistakes", "import", str(bad))
    assert code == 2
    assert "line 3" in err and "nothing imported" in err
    code, out, _ = run(capsys, "mistakes", "list", "--json")
    assert len(json.loads(out)) == len(BUILTIN_MISTAKES)


def test_add_incidents_resolve_checklist(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "mistakes",
        "add",
        "--title",
        "Disk full",
        "--fix",
        "prune",
        "--field",
        "Cost=2h",
        "--json",
    )
    assert code == 0 and json.loads(out)["extra"] == {"Cost": "2h"}
    code, _, err = run(capsys, "mistakes", "add", "--title", "x", "--field", "novalue")
    assert code == 2 and "NAME=VALUE" in err

    import mistakes as ml
    from harness.daemon.config import load_settings

    with ml.open_log(load_settings().paths.db_path) as store, store.write() as s:
        ml.record_incident(
            session=s,
            rule="nonfinite",
            summary="loss nan at step 80",
            run_id="r1",
            mistake_id="M-045",
            severity="abort",
        )
    code, out, _ = run(capsys, "incidents", "--run", "r1", "--json")
    rows = json.loads(out)
    assert code == 0 and rows[0]["mistake_id"] == "M-045" and rows[0]["resolved"] is False
    code, _, _ = run(capsys, "incidents", "resolve", str(rows[0]["id"]), "--note", "lowered lr")
    assert code == 0
    code, out, _ = run(capsys, "incidents", "show", str(rows[0]["id"]), "--json")
    assert json.loads(out)["resolution_note"] == "lowered lr"
    code, _, err = run(capsys, "incidents", "resolve", "999", "--note", "x")
    assert code == 1 and "999" in err
    code, out, _ = run(capsys, "checklist", "--json")
    items = json.loads(out)
    assert code == 0 and any(i["enforced_by"] == ["utilisation", "gpu_probe"] for i in items)


def test_console_script_exit_code(home: Path) -> None:
    exe = Path(sys.executable).with_name("harness")
    proc = subprocess.run([str(exe), "mistakes", "show", "M-404"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "harness: error: no mistake M-404 (see `harness mistakes list`)"
