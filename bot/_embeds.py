"""Embeds and texts for the bot's answers, built from the service's views.

Plain functions, no Discord I/O: each returns a :class:`discord.Embed` (or a string) that
is already within Discord's limits (title 256, description 4096, 25 fields of 256/1024,
footer 2048, 6000 characters in all), so the commands only send what these return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import discord

from ._service import (
    BriefView,
    DiagnosisView,
    HeartbeatView,
    IncidentView,
    MistakeView,
    RunView,
    SearchHitView,
)

__all__ = [
    "DESCRIPTION_MAX",
    "FIELDS_MAX",
    "FIELD_NAME_MAX",
    "FIELD_VALUE_MAX",
    "FOOTER_MAX",
    "TITLE_MAX",
    "TOTAL_MAX",
    "brief_embed",
    "clip",
    "controls_embed",
    "diagnosis_embed",
    "fit_embed",
    "heartbeat_embed",
    "incidents_embed",
    "mistake_embed",
    "one_line",
    "run_embed",
    "runs_embed",
    "search_embed",
    "status_colour",
    "tell_text",
]

TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
TOTAL_MAX = 6000

GREEN, YELLOW, ORANGE, RED = 0x2ECC71, 0xF1C40F, 0xE67E22, 0xE74C3C
BLUE, GREY, BLURPLE = 0x3498DB, 0x95A5A6, 0x5865F2

STATUS_COLOURS = {
    "queued": GREY,
    "preflight": BLUE,
    "starting": BLUE,
    "running": BLUE,
    "aborting": ORANGE,
    "succeeded": GREEN,
    "aborted": ORANGE,
    "failed": RED,
    "lost": RED,
}
HEALTH_COLOURS = {"ok": GREEN, "warn": YELLOW, "bad": RED, "idle": GREY}
SEVERITY_RANK = {"info": 0, "warn": 1, "warning": 1, "abort": 2, "error": 2, "critical": 2}
SEVERITY_COLOURS = {0: GREY, 1: YELLOW, 2: RED}
EMPTY = "—"  # Discord refuses empty field names and values


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marking the cut with an ellipsis."""
    if limit <= 0:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(text: str, limit: int = 300) -> str:
    """The text on one line (whitespace runs folded), clipped: for ephemeral error answers."""
    return clip(" ".join(text.split()), limit)


def status_colour(status: str) -> int:
    return STATUS_COLOURS.get(status, GREY)


def _total(d: Mapping[str, Any]) -> int:
    fields = d.get("fields", [])
    footer = d.get("footer", {}).get("text", "")
    author = d.get("author", {}).get("name", "")
    body = sum(len(f["name"]) + len(f["value"]) for f in fields)
    return (
        len(d.get("title", "")) + len(d.get("description", "")) + body + len(footer) + len(author)
    )


def fit_embed(data: Mapping[str, Any]) -> discord.Embed:
    """An embed from a dict, every part clipped to Discord's limits.

    Over the 6000-character total, fields are dropped from the end, then the description
    is shortened, so the title and the first fields always survive.
    """
    d: dict[str, Any] = {k: v for k, v in data.items() if k not in ("fields", "footer", "author")}
    if "title" in d:
        d["title"] = clip(str(d["title"]), TITLE_MAX)
    if "description" in d:
        d["description"] = clip(str(d["description"]), DESCRIPTION_MAX)
    if data.get("footer", {}).get("text"):
        d["footer"] = {"text": clip(str(data["footer"]["text"]), FOOTER_MAX)}
    if data.get("author", {}).get("name"):
        d["author"] = {"name": clip(str(data["author"]["name"]), TITLE_MAX)}
    d["fields"] = [
        {
            "name": clip(str(f.get("name", "")).strip(), FIELD_NAME_MAX) or EMPTY,
            "value": clip(str(f.get("value", "")).strip(), FIELD_VALUE_MAX) or EMPTY,
            "inline": bool(f.get("inline", False)),
        }
        for f in data.get("fields", [])[:FIELDS_MAX]
    ]
    while _total(d) > TOTAL_MAX and d["fields"]:
        d["fields"].pop()
    excess = _total(d) - TOTAL_MAX
    if excess > 0:
        description = d.get("description", "")
        d["description"] = clip(description, len(description) - excess)
    return discord.Embed.from_dict(d)


def _lines_within(lines: Sequence[str], limit: int, *, more: str = "… and {n} more") -> str:
    """Whole lines joined while they fit in ``limit``, then a line saying how many were left."""
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        line = clip(line, limit // 2)
        tail = len(more) + 8 if i + 1 < len(lines) else 0
        if used + len(line) + 1 + tail > limit:
            out.append(more.format(n=len(lines) - i))
            break
        out.append(line)
        used += len(line) + 1
    return "\n".join(out)


def _when(ts: float | None) -> str:
    """A Discord timestamp that each reader sees in their own time zone, relative."""
    return EMPTY if ts is None else f"<t:{int(ts)}:R>"


def _gate_line(gate: Mapping[str, Any]) -> str:
    passed = gate.get("passed")
    mark = "✅" if passed is True else "❌" if passed is False else "⏳"
    value = gate.get("value")
    shown = "missing" if value is None else str(value)
    return f"{mark} {gate.get('gate', '?')}: {shown}"


def _controls_text(controls: Mapping[str, Any]) -> str:
    return "\n".join(f"`{k}` = `{v}`" for k, v in controls.items())


def run_embed(view: RunView, *, heading: str | None = None) -> discord.Embed:
    """One run: status, progress line or verdict, times, controls and gates."""
    title = f"{view.name} · {view.id}"
    lines = [f"**{view.status}**"]
    if view.line:
        lines.append(view.line)
    if view.summary:
        lines.append(view.summary)
    fields: list[dict[str, Any]] = [
        {"name": "started", "value": _when(view.started_at), "inline": True},
    ]
    if view.ended_at is not None:
        fields.append({"name": "ended", "value": _when(view.ended_at), "inline": True})
    if view.controls:
        fields.append({"name": "controls", "value": _controls_text(view.controls)})
    if view.gates:
        gates = [_gate_line(g) for g in view.gates]
        fields.append({"name": "gates", "value": _lines_within(gates, FIELD_VALUE_MAX)})
    if view.diagnosis:
        found = [f"⚠ {d}" for d in view.diagnosis]
        fields.append({"name": "diagnosis", "value": _lines_within(found, FIELD_VALUE_MAX)})
    return fit_embed(
        {
            "title": f"{heading}: {title}" if heading else title,
            "description": "\n".join(lines),
            "color": status_colour(view.status),
            "fields": fields,
        }
    )


def runs_embed(views: Sequence[RunView], *, title: str, empty: str) -> discord.Embed:
    """Several runs, one line each (phones show a description better than many fields)."""
    if not views:
        return fit_embed({"title": title, "description": empty, "color": GREY})
    lines = []
    for v in views:
        detail = v.summary or v.line  # the verdict once a run has ended
        lines.append(f"`{v.id}` **{v.name}** {v.status}" + (f" · {detail}" if detail else ""))
    active = [v for v in views if v.status in ("preflight", "starting", "running", "aborting")]
    colour = status_colour(active[0].status if active else views[0].status)
    return fit_embed(
        {
            "title": title,
            "description": _lines_within(lines, DESCRIPTION_MAX),
            "color": colour,
            "footer": {"text": f"{len(views)} run(s)"},
        }
    )


def controls_embed(run: str, key: str, value: str, controls: Mapping[str, Any]) -> discord.Embed:
    """The controls of ``run`` after ``key`` was set (the job applies them on its next read)."""
    shown = [{"name": str(k), "value": f"`{v}`", "inline": True} for k, v in controls.items()]
    return fit_embed(
        {
            "title": f"Controls · {run}",
            "description": f"set `{key}` = `{value}`; the job applies it when it next reads "
            "controls.json",
            "color": BLUE,
            "fields": shown[:FIELDS_MAX],
        }
    )


def search_embed(query: str, hits: Sequence[SearchHitView]) -> discord.Embed:
    """Search results, one field per hit: id and title, then the matching snippet."""
    title = f"Mistake log: {query}"
    if not hits:
        return fit_embed({"title": title, "description": "No matches.", "color": GREY})
    fields = [{"name": f"{h.kind} {h.id} · {h.title}", "value": h.snippet or h.title} for h in hits]
    return fit_embed(
        {
            "title": title,
            "description": f"{len(hits)} match(es); `/mistakes show` for the whole entry",
            "color": BLURPLE,
            "fields": fields,
        }
    )


def mistake_embed(view: MistakeView) -> discord.Embed:
    """One mistake-log entry, its fields in their own order."""
    return fit_embed(
        {
            "title": f"{view.id}: {view.title}",
            "description": f"category: {view.category}" if view.category else "",
            "color": BLURPLE,
            "fields": [{"name": name, "value": value} for name, value in view.fields],
        }
    )


def _severity_rank(severity: str) -> int:
    return SEVERITY_RANK.get(severity.lower(), 0)


def incidents_embed(incidents: Sequence[IncidentView], *, run: str | None) -> discord.Embed:
    """Incidents, newest first as given, one line each; coloured by the worst unresolved one."""
    title = f"Incidents · {run}" if run else "Incidents"
    if not incidents:
        return fit_embed({"title": title, "description": "No incidents.", "color": GREEN})
    lines = []
    for inc in incidents:
        mistake = f" {inc.mistake_id}" if inc.mistake_id else ""
        where = f" {inc.run_id}" if inc.run_id and not run else ""
        done = " (resolved)" if inc.resolved else ""
        lines.append(
            f"#{inc.id} {_when(inc.ts)} **{inc.severity}** {inc.rule}{mistake}{where}: "
            f"{one_line(inc.summary, 400)}{done}"
        )
    worst = max((_severity_rank(i.severity) for i in incidents if not i.resolved), default=-1)
    return fit_embed(
        {
            "title": title,
            "description": _lines_within(lines, DESCRIPTION_MAX),
            "color": SEVERITY_COLOURS.get(worst, GREEN),
            "footer": {"text": f"{len(incidents)} incident(s)"},
        }
    )


def heartbeat_embed(view: HeartbeatView) -> discord.Embed:
    """The heartbeat's own embed, re-fitted, coloured by health when it carries no colour."""
    data: dict[str, Any] = dict(view.embed) if view.embed else {"title": "Harness heartbeat"}
    if not data.get("description") and not data.get("fields"):
        data["description"] = view.text
    data.setdefault("color", HEALTH_COLOURS.get(view.health, GREY))
    return fit_embed(data)


def brief_embed(view: BriefView) -> discord.Embed:
    """The briefing, one field per section (empty sections say so)."""
    fields = [
        {"name": name, "value": _lines_within(lines, FIELD_VALUE_MAX) if lines else "none"}
        for name, lines in view.sections.items()
    ]
    description = "" if fields else view.text
    return fit_embed(
        {"title": "Harness brief", "description": description, "color": BLURPLE, "fields": fields}
    )


def tell_text(note_id: int) -> str:
    return f"Noted as #{note_id}; whoever works at the terminal sees it with `harness inbox`."


_SEVERITY_COLOUR = {"critical": RED, "warn": ORANGE, "info": GREY}


def diagnosis_embed(view: DiagnosisView) -> discord.Embed:
    """The diagnosis card: each finding with its evidence and ranked causes, quick wins."""
    if not view.findings:
        return fit_embed(
            {
                "title": f"Diagnosis · {view.run_id}",
                "description": f"**healthy**: no symptom in {view.lines} lines",
                "color": GREEN,
            }
        )
    worst = view.findings[0].get("severity", "warn")
    fields: list[dict[str, Any]] = []
    for f in view.findings[:10]:
        step = f" at step {f['step']}" if f.get("step") is not None else ""
        lines = [f"- {e}" for e in f.get("evidence", [])[:2]]
        for c in f.get("causes", [])[:3]:
            lines.append(f"{c['rank']}) **{c['cause']}** ({c['confidence']:.0%}): {c['fix']}")
        if f.get("mistakes"):
            lines.append("see " + ", ".join(f["mistakes"]))
        fields.append(
            {
                "name": f"{f['symptom']}{step} ({f.get('severity', '')})",
                "value": _lines_within(lines, FIELD_VALUE_MAX),
            }
        )
    wins = [f"• {w}" for w in view.quick_wins]
    return fit_embed(
        {
            "title": f"Diagnosis · {view.run_id}",
            "description": "**unhealthy**\n" + ("Quick wins:\n" + "\n".join(wins) if wins else ""),
            "color": _SEVERITY_COLOUR.get(worst, ORANGE),
            "fields": fields,
        }
    )
