"""A coding agent's view of Harness: what the MCP server (``harness.daemon.mcp``) offers.

The same operations as Discord's commands (``harness.daemon.botservice``), with the same
rules: a run is started from a preset with allow-listed overrides only
(``harness.core.overrides``), never from a command line; live controls are allow-listed.
What changes a run (start, abort, controls) goes to ``harness serve`` through its HTTP
API and fails with :class:`DaemonDownError` when no daemon runs; what the store can answer
(runs, diagnoses, mistakes, incidents, the brief, notes) is read from it directly, so it
works without the daemon and for foreground runs too.

Every method blocks (the MCP layer runs it in a thread) and returns plain JSON data.
A refusal is one of our errors with one line (:data:`REFUSALS`).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mistakes as ml
from harness.core.diagnose import gated_up
from harness.core.overrides import chat_overrides, check_control
from harness.daemon.botservice import run_view
from harness.daemon.client import DaemonClient
from harness.daemon.config import Paths
from harness.daemon.serve import daemon_info
from harness.errors import ConflictError, DaemonError, HarnessError, InputError, LaunchRefused
from harness.job.protocol import METRICS_FILE
from harness.runtime.diagnose import diagnose_file
from harness.runtime.specs import list_presets
from memory import (
    TERMINAL,
    InvalidTextError,
    NoteNotFoundError,
    Run,
    RunNotFoundError,
    Store,
    StoreError,
    add_note,
    find_run,
    json_safe,
    list_runs,
)
from sidecar import SidecarError, load_or_create_token

__all__ = ["REFUSALS", "AgentService", "DaemonDownError"]

AUTHOR = "mcp"  # who did it, in the audit trail (abort_by, a note's author)
NOTE_KINDS = ("note", "inbox")  # a note for later, or a message for the terminal (/tell)
MAX_LIMIT = 100


class DaemonDownError(DaemonError):
    """No ``harness serve`` runs for this state dir."""


#: the errors whose one-line message is the answer (anything else is a bug)
REFUSALS: tuple[type[Exception], ...] = (
    HarnessError,
    ml.MistakesError,
    StoreError,
    RunNotFoundError,
    NoteNotFoundError,
    InvalidTextError,
    SidecarError,  # the API token file cannot be used
)


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def _view(run: Run) -> dict[str, Any]:
    """What Discord shows of a run: status, the progress line, controls, gates, findings."""
    return dict(json_safe(asdict(run_view(run))))


class AgentService:
    """The operations over the store at ``paths`` and the daemon of that state dir.

    ``port`` is the configured API port, named when the daemon is not running;
    ``timeout_s`` bounds one call to the daemon (a launch waits for the preflight).
    """

    def __init__(self, paths: Paths, *, port: int, timeout_s: float = 120.0) -> None:
        self.paths = paths
        self.port = port
        self.timeout_s = timeout_s
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        """Opened on first use: the server answers ``initialize`` even with a broken store."""
        if self._store is None:
            self._store = ml.open_log(self.paths.db_path)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _daemon(self) -> DaemonClient:
        info = daemon_info(self.paths.home)
        if info is None:
            raise DaemonDownError(
                f"no harness daemon on 127.0.0.1:{self.port}: start it with `harness serve`"
            )
        token = load_or_create_token(self.paths.home)
        return DaemonClient(info, token, timeout=self.timeout_s)

    def _find(self, ref: str) -> Run:
        with self.store.read() as s:
            return find_run(session=s, ref=ref)

    def _live(self, ref: str, doing: str) -> Run:
        run = self._find(ref)
        if run.status in TERMINAL:
            raise ConflictError(f"run {run.id} is already {run.status}; {doing}")
        return run

    # -- runs -------------------------------------------------------------------------

    def presets(self) -> dict[str, str]:
        """Preset name -> where it comes from (``built-in`` or the user's file)."""
        return list_presets(self.paths.presets_dir)

    def start_run(self, preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """Discord's ``/run start``: a preset by name and allow-listed overrides only."""
        known = self.presets()
        if preset not in known:
            raise InputError(f"no preset {preset!r} (presets: {', '.join(known)})")
        items = chat_overrides(overrides)  # checked here, so bad input never needs the daemon
        with self._daemon() as client:
            try:
                run_id = client.launch_preset(preset, items)
            except DaemonError as exc:
                if exc.status == 422:  # a pre-launch check failed; the run is recorded
                    raise LaunchRefused(f"launch refused: {exc}") from None
                raise
        return _view(self._find(run_id))

    def status(self, ref: str | None) -> list[dict[str, Any]]:
        """One run (id, unique prefix or ``last``), or every active run."""
        if ref is not None:
            return [_view(self._find(ref))]
        with self.store.read() as s:
            return [_view(r) for r in list_runs(session=s, limit=MAX_LIMIT, active_only=True)]

    def runs(self, limit: int) -> list[dict[str, Any]]:
        """The latest runs, newest first, with their verdicts."""
        with self.store.read() as s:
            return [_view(r) for r in list_runs(session=s, limit=_limit(limit))]

    def abort(self, ref: str, reason: str) -> dict[str, Any]:
        """Ask the daemon to abort a run (SIGINT, then SIGTERM, SIGKILL); it ends soon after."""
        run = self._live(ref, "nothing to abort")
        reason = reason.strip() or "requested by a coding agent (MCP)"
        with self._daemon() as client:
            client.abort(run.id, reason, by=AUTHOR)
        return {"id": run.id, "status": "aborting", "reason": reason}

    def set_controls(self, ref: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change live controls of a running job; the controls it reads now."""
        if not changes:
            raise InputError('no controls given, e.g. {"lr": 0.0005}')
        checked = {key: check_control(key, value) for key, value in changes.items()}
        run = self._live(ref, "controls are closed")
        with self._daemon() as client:
            return {"id": run.id, "controls": client.set_controls(run.id, checked)}

    def diagnose(self, ref: str) -> dict[str, Any]:
        """``harness diagnose RUN --json``: the run's metrics read by the detectors."""
        run = self._find(ref)
        gated = gated_up((run.spec or {}).get("gates") or {})
        result, skipped = diagnose_file(Path(run.run_dir) / METRICS_FILE, gated=gated)
        data = {"run": run.id, **result.to_json(), "lines": result.lines, "skipped": skipped}
        return dict(json_safe(data))

    # -- the mistake log, incidents, memory -----------------------------------------------

    def search_mistakes(self, query: str, limit: int) -> list[dict[str, Any]]:
        if not query.strip():
            raise InputError("the search needs some words, e.g. 'nan loss'")
        with self.store.read() as s:
            hits = ml.search(session=s, query=query, limit=_limit(limit))
            return [{k: v for k, v in h.as_dict().items() if k != "score"} for h in hits]

    def show_mistake(self, mistake_id: str) -> dict[str, Any]:
        with self.store.read() as s:
            return dict(json_safe(ml.get_mistake(session=s, mistake_id=mistake_id).as_dict()))

    def incidents(self, ref: str | None, limit: int) -> list[dict[str, Any]]:
        """The latest incidents, newest first; of one run when ``ref`` is given."""
        run_id = self._find(ref).id if ref is not None else None
        with self.store.read() as s:
            rows = ml.list_incidents(session=s, run_id=run_id, limit=_limit(limit))
            return [dict(json_safe(i.model_dump())) for i in rows]

    def brief(self) -> str:
        """``harness brief`` as text; like Discord's, it does not move the "last brief" mark."""
        from harness.daemon.brief import build_brief, render_text

        return render_text(build_brief(self.store, now=time.time(), mark=False))

    def add_note(self, text: str, kind: str) -> dict[str, Any]:
        if kind not in NOTE_KINDS:
            raise InputError(f"kind must be one of {', '.join(NOTE_KINDS)}, got {kind!r}")
        try:
            with self.store.write() as s:
                note = add_note(session=s, text=text, kind=kind, author=AUTHOR)
                return {"id": note.id, "kind": note.kind}
        except InvalidTextError:
            raise
        except ValueError as exc:  # empty or too long
            raise InputError(str(exc)) from None
