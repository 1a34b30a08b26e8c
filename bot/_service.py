"""The service the bot needs, declared here so that ``bot`` never imports ``harness``.

The composition root (``harness``) hands the bot an object that satisfies
:class:`HarnessService`. Every method is a coroutine; every failure a user should see is
raised as :class:`CommandError` with a one-line message. Views are plain frozen
dataclasses, so embeds are built and tested without Discord.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "BriefView",
    "CommandError",
    "HarnessService",
    "HeartbeatView",
    "IncidentView",
    "MistakeView",
    "RunView",
    "SearchHitView",
]


class CommandError(Exception):
    """A user-facing refusal or bad input: shown to the user as-is (one line), ephemeral."""


@dataclass(frozen=True)
class RunView:
    id: str
    name: str
    status: str  # queued | preflight | starting | running | aborting | succeeded | failed | ...
    summary: str  # the verdict line for ended runs, "" while running
    line: str  # one-line progress: step/total, rate, ETA, loss, key metric, utilisation, RAM
    started_at: float | None = None
    ended_at: float | None = None
    controls: dict[str, Any] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)  # {"gate", "value", "passed"}
    diagnosis: list[str] = field(
        default_factory=list
    )  # the live diagnosis' findings, one line each


@dataclass(frozen=True)
class SearchHitView:
    kind: str  # "mistake" | "incident"
    id: str
    title: str
    snippet: str


@dataclass(frozen=True)
class MistakeView:
    id: str
    title: str
    category: str
    fields: list[tuple[str, str]]  # (name, value) in order: When, Symptom, Root cause, ...


@dataclass(frozen=True)
class IncidentView:
    id: int
    ts: float
    run_id: str | None
    rule: str
    mistake_id: str | None
    severity: str
    summary: str
    resolved: bool


@dataclass(frozen=True)
class DiagnosisView:
    """``harness diagnose RUN --json`` of one run: findings as that JSON has them."""

    run_id: str
    verdict: str  # healthy | unhealthy
    findings: list[
        dict[str, Any]
    ]  # {"symptom", "step", "severity", "evidence", "mistakes", "causes"}
    quick_wins: list[str]
    lines: int = 0


@dataclass(frozen=True)
class HeartbeatView:
    health: str  # ok | warn | bad | idle
    text: str
    embed: dict[str, Any]  # a ready Discord embed dict (within limits)


@dataclass(frozen=True)
class BriefView:
    text: str  # the whole briefing as text (markdown-ish)
    sections: dict[str, list[str]]  # section title -> lines


class HarnessService(Protocol):
    """What the bot may ask of Harness. ``by`` is "discord:<user id>" for the audit trail."""

    async def presets(self) -> list[str]: ...

    async def active_run_ids(self) -> list[str]: ...

    async def start_run(self, preset: str, overrides: dict[str, str], *, by: str) -> RunView: ...

    async def run_status(self, run: str | None) -> list[RunView]: ...

    async def list_runs(self, limit: int = 10) -> list[RunView]: ...

    async def abort_run(self, run: str, reason: str, *, by: str) -> RunView: ...

    async def set_control(self, run: str, key: str, value: str, *, by: str) -> dict[str, Any]: ...

    async def search_mistakes(self, query: str, limit: int = 8) -> list[SearchHitView]: ...

    async def show_mistake(self, mistake_id: str) -> MistakeView: ...

    async def incidents(self, run: str | None, limit: int = 10) -> list[IncidentView]: ...

    async def diagnose(self, run: str) -> DiagnosisView: ...

    async def heartbeat(self) -> HeartbeatView: ...

    async def brief(self) -> BriefView: ...

    async def tell(self, text: str, *, author: str) -> int: ...
