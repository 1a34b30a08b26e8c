"""A job's own alerts as the machine sees them: levels, links, clipping, the rate limit."""

from __future__ import annotations

import math
from typing import Any

from harness.core.alerts import ALERT_RULE, JobAlerts
from harness.core.machine import MetricLines, Notify, RecordIncident, RunMachine
from harness.core.spec import RunSpec

SPEC = RunSpec.model_validate({"name": "a", "command": ["python"], "device": "cpu"})


def alert(text: Any = "x", **extra: Any) -> dict[str, Any]:
    return {"event": "alert", "t": 1.0, "text": text, **extra}


def test_levels_checks_and_untrusted_fields() -> None:
    alerts = JobAlerts()
    finding, level = alerts.take(alert("disk almost full", level="info"), 0.0) or (None, "")
    assert finding is not None and level == "info" and finding.rule == ALERT_RULE
    assert finding.summary == "job alert (info): disk almost full"
    # an unknown level is a warning; a check name links the finding; others do not
    got = alerts.take(alert("FAIL vocab_size: 259 > 256", level="panic", check="vocab_size"), 0)
    assert got is not None and got[1] == "warn" and got[0].rule == "vocab_size"
    assert got[0].mistake_ids == ("M-026",)
    got = alerts.take(alert("nan!", check="nonfinite", n=math.inf, big=2**80, ok=True), 0)
    assert got is not None and got[0].rule == ALERT_RULE
    assert got[0].evidence["n"] == "inf" and got[0].evidence["big"] == str(2**80)
    assert got[0].evidence["ok"] is True and got[0].evidence["check"] == "nonfinite"
    got = alerts.take(alert(None), 0)
    assert got is not None and got[0].evidence["text"] == "(an alert without text)"


def test_a_flood_is_held_back_and_counted_in_the_next_alert() -> None:
    alerts = JobAlerts(burst=5, every_s=60.0)
    sent = [alerts.take(alert(f"n{i}"), 0.0) for i in range(20)]
    assert sum(s is not None for s in sent) == 5 and alerts.held_back == 15
    assert alerts.take(alert("later"), 30.0) is None  # half a token back: still held
    got = alerts.take(alert("much later"), 90.0)
    assert got is not None
    assert got[0].summary == (
        "job alert (warn): much later (16 more held back: over 5 alerts a minute)"
    )
    assert got[0].evidence["held_back"] == 16 and alerts.held_back == 0


def test_the_machine_records_and_sends_each_alert_at_once() -> None:
    m = RunMachine(SPEC, started_at=0.0)
    text = "line one\nline two\t" + "é" * 400
    acts = m.handle(MetricLines(1.0, [alert(text, level="error")]))
    (record,) = [a for a in acts if isinstance(a, RecordIncident)]
    (notify,) = [a for a in acts if isinstance(a, Notify)]
    assert record.severity == "error" and notify.alert
    shown = record.finding.evidence["text"]
    assert len(shown) == 300 and shown.startswith("line one line two éé") and shown[-1] == "…"
    assert notify.text == f"a: {record.finding.summary}" and m.status == "running"
