"""The bot's view of Harness: ``bot.HarnessService`` implemented over the real service.

Every blocking call runs in a thread. Chat may only start presets with allow-listed
overrides (``harness.core.overrides``) and set allow-listed live controls; every failure a
person should read is a ``bot.CommandError`` with one line.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import mistakes as ml
from bot import (
    BriefView,
    CommandError,
    DiagnosisView,
    HeartbeatView,
    IncidentView,
    MistakeView,
    RunView,
    SearchHitView,
)
from harness._atomic import read_json
from harness.core.diagnose import gated_up
from harness.core.format import key_metric_of, progress_line
from harness.core.overrides import chat_overrides, check_control
from harness.core.spec import apply_overrides
from harness.daemon.service import Service
from harness.errors import HarnessError, LaunchRefused
from harness.job.protocol import CONTROLS_FILE, METRICS_FILE
from harness.runtime.controls import update_controls
from harness.runtime.diagnose import diagnose_file
from harness.runtime.specs import list_presets, load_preset
from memory import TERMINAL, Run, RunNotFoundError, active_runs, find_run, list_runs

__all__ = ["BotService", "run_view"]


def run_view(run: Run) -> RunView:
    line = progress_line(run.name, run.status, run.progress or {}, key_metric_of(run.spec or {}))
    controls: dict[str, Any] = {}
    try:
        controls = read_json(Path(run.run_dir) / CONTROLS_FILE)
    except (OSError, ValueError):
        pass
    return RunView(
        id=run.id,
        name=run.name,
        status=run.status,
        summary=run.summary,
        line=line,
        started_at=run.started_at,
        ended_at=run.ended_at,
        controls=controls,
        gates=list((run.result or {}).get("gates", [])),
        diagnosis=[d for d in (run.progress or {}).get("diagnosis") or [] if isinstance(d, str)],
    )


class BotService:
    """Implements ``bot.HarnessService`` over a running :class:`harness.daemon.service.Service`."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.store = service.store

    def _find(self, ref: str) -> Run:
        with self.store.read() as s:
            try:
                return find_run(session=s, ref=ref)
            except RunNotFoundError as exc:
                raise CommandError(str(exc)) from None

    async def presets(self) -> list[str]:
        return list(list_presets(self.service.settings.paths.presets_dir))

    async def active_run_ids(self) -> list[str]:
        def ids() -> list[str]:
            with self.store.read() as s:
                return [r.id for r in active_runs(session=s)]

        return await asyncio.to_thread(ids)

    async def start_run(self, preset: str, overrides: dict[str, str], *, by: str) -> RunView:
        presets = self.service.settings.paths.presets_dir
        if preset not in list_presets(presets):
            known = ", ".join(list_presets(presets))
            raise CommandError(f"no preset {preset!r} (presets: {known})")
        try:
            items = chat_overrides(overrides)
            spec, source = load_preset(preset, presets_dir=presets)
            spec = apply_overrides(spec, items, source="override")
            run_id = await self.service.supervisor.launch(spec, source=f"{source} ({by})")
        except LaunchRefused as exc:
            raise CommandError(f"launch refused: {exc}") from None
        except HarnessError as exc:
            raise CommandError(str(exc)) from None
        return run_view(await asyncio.to_thread(self._find, run_id))

    async def diagnose(self, run: str) -> DiagnosisView:
        """``harness diagnose RUN``: the run's metrics file read by the detectors."""
        row = await asyncio.to_thread(self._find, run)
        path = Path(row.run_dir) / METRICS_FILE
        gated = gated_up((row.spec or {}).get("gates") or {})
        try:
            result, _ = await asyncio.to_thread(diagnose_file, path, gated=gated)
        except HarnessError as exc:
            raise CommandError(str(exc)) from None
        data = result.to_json()
        return DiagnosisView(
            row.id, data["verdict"], data["findings"], data["quick_wins"], result.lines
        )

    async def run_status(self, run: str | None) -> list[RunView]:
        if run:
            return [run_view(await asyncio.to_thread(self._find, run))]

        def rows() -> list[RunView]:
            with self.store.read() as s:
                return [run_view(r) for r in active_runs(session=s)]

        return await asyncio.to_thread(rows)

    async def list_runs(self, limit: int = 10) -> list[RunView]:
        def rows() -> list[RunView]:
            with self.store.read() as s:
                return [run_view(r) for r in list_runs(session=s, limit=limit)]

        return await asyncio.to_thread(rows)

    async def abort_run(self, run: str, reason: str, *, by: str) -> RunView:
        row = await asyncio.to_thread(self._find, run)
        if row.status in TERMINAL:
            raise CommandError(f"run {row.id} is already {row.status}; nothing to abort")
        await self.service.supervisor.request_abort(row.id, reason or "from Discord", by=by)
        row = await asyncio.to_thread(self._find, row.id)
        return run_view(row)

    async def set_control(self, run: str, key: str, value: str, *, by: str) -> dict[str, Any]:
        row = await asyncio.to_thread(self._find, run)
        if row.status in TERMINAL:
            raise CommandError(f"run {row.id} is already {row.status}; controls are closed")
        try:
            checked = check_control(key, value)
            return await asyncio.to_thread(update_controls, row.run_dir, {key: checked})
        except HarnessError as exc:
            raise CommandError(str(exc)) from None

    async def search_mistakes(self, query: str, limit: int = 8) -> list[SearchHitView]:
        def hits() -> list[SearchHitView]:
            with self.store.read() as s:
                return [
                    SearchHitView(h.kind, h.id, h.title, h.snippet)
                    for h in ml.search(session=s, query=query, limit=limit)
                ]

        return await asyncio.to_thread(hits)

    async def show_mistake(self, mistake_id: str) -> MistakeView:
        def one() -> MistakeView:
            with self.store.read() as s:
                m = ml.get_mistake(session=s, mistake_id=mistake_id)
                return MistakeView(m.id, m.title, m.category, m.fields())

        try:
            return await asyncio.to_thread(one)
        except ml.MistakesError as exc:
            raise CommandError(str(exc)) from None

    async def incidents(self, run: str | None, limit: int = 10) -> list[IncidentView]:
        run_id = (await asyncio.to_thread(self._find, run)).id if run else None

        def rows() -> list[IncidentView]:
            with self.store.read() as s:
                return [
                    IncidentView(
                        i.id or 0,
                        i.ts,
                        i.run_id,
                        i.rule,
                        i.mistake_id,
                        i.severity,
                        i.summary,
                        i.resolved,
                    )
                    for i in ml.list_incidents(session=s, run_id=run_id, limit=limit)
                ]

        return await asyncio.to_thread(rows)

    async def heartbeat(self) -> HeartbeatView:
        view = await self.service.heartbeat()
        return HeartbeatView(view.health, view.text, view.embed)

    async def brief(self) -> BriefView:
        from harness.daemon.brief import brief_sections, build_brief, render_text

        brief = await asyncio.to_thread(build_brief, self.store, now=time.time(), mark=False)
        return BriefView(render_text(brief), brief_sections(brief))

    async def tell(self, text: str, *, author: str) -> int:
        from memory import add_note

        def add() -> int:
            with self.store.write() as s:
                return add_note(session=s, text=text, kind="inbox", author=author).id or 0

        try:
            return await asyncio.to_thread(add)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
