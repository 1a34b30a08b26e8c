"""A job's own alerts (``Reporter.alert``, an ``alert`` line): checked, clipped, rate-limited.

The line comes from the job and is not trusted. Its text is made one printable line of at
most 300 characters; an unknown level is ``warn``; a ``check`` field links the incident to
the catalogue only when it names one of the model checks (``harness.job.checks``), so a
job cannot file an incident under a supervisor rule such as ``nonfinite``. A job that
raises alerts in a loop gets a burst of five, then one a minute; the next alert that goes
out says how many were held back, so nothing is lost silently and Discord is not flooded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from harness.core.rules import Finding
from harness.job.protocol import ALERT_LEVELS
from mistakes import MODEL_CHECKS

__all__ = ["ALERT_RULE", "JobAlerts"]

ALERT_RULE = "job_alert"
_TEXT_CHARS = 300
_EXTRA_FIELDS = 8  # further fields of the line kept as evidence
_EXTRA_CHARS = 120
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def _one_line(value: Any, limit: int) -> str:
    text = _UNPRINTABLE.sub(" ", str(value))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class JobAlerts:
    """Turns ``alert`` lines into findings, at most ``burst`` at once and one per ``every_s``."""

    def __init__(self, *, burst: int = 5, every_s: float = 60.0) -> None:
        self.burst = burst
        self.every_s = every_s
        self._tokens = float(burst)
        self._at: float | None = None
        self.held_back = 0  # alerts not sent since the last one that went out
        self.total = 0

    def _refill(self, t: float) -> None:
        if self._at is not None and t > self._at:
            self._tokens = min(float(self.burst), self._tokens + (t - self._at) / self.every_s)
        self._at = t if self._at is None else max(self._at, t)

    def take(self, rec: Mapping[str, Any], t: float) -> tuple[Finding, str] | None:
        """The finding and the incident's severity for this line, or None when held back."""
        self.total += 1
        self._refill(t)
        if self._tokens < 1.0:
            self.held_back += 1
            return None
        self._tokens -= 1.0
        level = rec.get("level")
        level = level if isinstance(level, str) and level in ALERT_LEVELS else "warn"
        raw = rec.get("text")
        text = _one_line(raw, _TEXT_CHARS) if isinstance(raw, str) and raw.strip() else ""
        text = text or "(an alert without text)"
        check = rec.get("check")
        rule = check if isinstance(check, str) and check in MODEL_CHECKS else ALERT_RULE
        evidence: dict[str, Any] = {"level": level, "text": text}
        for key, value in rec.items():
            if len(evidence) >= 2 + _EXTRA_FIELDS:
                break
            if key in ("event", "t", "level", "text") or not isinstance(key, str):
                continue
            name = _one_line(key, 40)
            if isinstance(value, bool) or (isinstance(value, float) and math.isfinite(value)):
                evidence[name] = value
            elif isinstance(value, int):
                evidence[name] = value if abs(value) < 2**53 else str(value)[:_EXTRA_CHARS]
            elif isinstance(value, str | float):  # a non-finite float is shown as text
                evidence[name] = _one_line(value, _EXTRA_CHARS)
        summary = f"job alert ({level}): {text}"
        if self.held_back:
            summary += f" ({self.held_back} more held back: over {self.burst} alerts a minute)"
            evidence["held_back"] = self.held_back
            self.held_back = 0
        return Finding(rule, "warn", summary, evidence), level
