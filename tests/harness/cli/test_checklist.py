"""``harness checklist`` on the user's own 28-item checklist (their MISTAKES.md, copied
unchanged into tests/fixtures/user_MISTAKES.md): which items a machine keeps (a rule while
the job runs, a model check before it trains) and which are conduct, listed in the brief."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli.main import main

USER_FILE = Path(__file__).parents[2] / "fixtures" / "user_MISTAKES.md"

#: the user's items no machine can check: how they work, not what the job does
CONDUCT = {
    "Memory",
    "PTX",
    "Parsing",
    "Diagnostics first",
    "Edit main repo",
    "Post-compaction",
    "Clean build",
    "Meta recursion",
    "Vision questions",
    "No guessing metrics",
}
#: the items kept by a model check (harness.job.checks), with the check
CHECKED = {
    "Loss weights": "loss_weighting",
    "Padding": "padding_side",
    "seq_len": "truncation",
    "Backward pass": "gradient_check",
    "Training steps": "data_passes",
    "Truncation": "truncation",
    "Vocab match": "vocab_size",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_the_users_checklist_is_kept_by_rules_checks_and_the_brief(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "mistakes", "import", str(USER_FILE))[0] == 0
    code, out = run(capsys, "checklist", "--json")
    assert code == 0
    user_titles = [
        line.split("**")[1].rstrip(":")
        for line in USER_FILE.read_text().splitlines()
        if line.startswith("- [ ] **")
    ]
    assert len(user_titles) == 28
    items = {i["title"]: i for i in json.loads(out)}
    users = [items[t] for t in user_titles]
    kinds = {i["title"]: i["enforcement"] for i in users}

    assert {t for t, k in kinds.items() if k == "conduct"} == CONDUCT
    assert not [t for t, k in kinds.items() if k == "manual"]
    for title, check in CHECKED.items():
        assert check in items[title]["enforced_by"], title
    assert kinds["Loss weights"] == kinds["Vocab match"] == "check"
    # a supervisor rule, not only a check: the live grad_explosion detector
    assert kinds["Gradients"] == "rule" and "gradient_check" in items["Gradients"]["enforced_by"]
    assert items["Heartbeat first"]["enforced_by"] == ["heartbeat"]
    machine = [t for t, k in kinds.items() if k in ("rule", "check")]
    assert len(machine) == 18 and len(machine) + len(CONDUCT) == 28
    assert sum(k == "rule" for k in kinds.values()) == 11
    assert {t for t, k in kinds.items() if k == "check"} == set(CHECKED)

    code, text = run(capsys, "checklist")
    assert "- Vocab match (M-026) [checked before training by vocab_size]" in text
    assert "- PTX (M-005) [conduct: yours to follow, listed in the brief]" in text
    assert "10 conduct items (in the brief); 0 manual" in text

    # an agent that lost its context reads the conduct items again in the brief
    code, brief = run(capsys, "brief", "--format", "json", "--no-mark")
    assert code == 0
    assert {c["title"] for c in json.loads(brief)["conduct"]} == CONDUCT
    code, brief = run(capsys, "brief", "--no-mark")
    assert "== Conduct, yours to keep (10) ==" in brief
    assert "Post-compaction (M-013): Read MISTAKES.md first." in brief
