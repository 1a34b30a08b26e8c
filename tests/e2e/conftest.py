"""End-to-end fixtures: a real store in tmp_path, a supervisor on the test's loop, and a
reaper that kills every process a test started, whatever happened.

Every process a test starts (jobs through the supervisor, `harness` subprocesses, decoys)
inherits ``E2E_TOKEN=<unique>`` from the environment; at teardown every live process with
this test's token is killed, so a failing test leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

import mistakes as ml
from harness.core.spec import RunSpec
from harness.daemon.config import Settings, load_settings
from harness.runtime.supervisor import Supervisor
from memory import Run, Store

JOBS = Path(__file__).parent / "jobs"
TOKEN_ENV = "E2E_TOKEN"

# Short thresholds so every scenario takes seconds; a test sets what it exercises.
FAST_WATCH: dict[str, Any] = {
    "sample_every_s": 0.25,
    "util_grace_s": 600.0,  # the utilisation rule stays quiet unless a test turns it on
    "util_window_s": 2.0,
    "min_ram_free_gb": 0.05,
    "stall_s": 60.0,
    "int_grace_s": 2.0,
    "term_grace_s": 1.0,
}


def job(script: str, *args: object) -> list[str]:
    return [sys.executable, str(JOBS / script), *(str(a) for a in args)]


def make_spec(command: Sequence[str], *, name: str = "e2e", **fields: Any) -> RunSpec:
    watch = {**FAST_WATCH, **fields.pop("watch", {})}
    data = {"name": name, "command": list(command), "device": "cpu", "watch": watch, **fields}
    return RunSpec.model_validate(data)


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its parent counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(
    predicate: Callable[[], bool],
    timeout: float = 30.0,
    what: str = "",
    *,
    while_alive: subprocess.Popen[bytes] | None = None,
    output: Path | None = None,
) -> None:
    """Poll ``predicate``. With ``while_alive``, wait on the event itself: fail at once when
    that process exits first (showing ``output``), and allow a slow machine 4x the time."""
    if while_alive is not None:
        timeout *= 4
    deadline = time.monotonic() + timeout
    while not predicate():
        if while_alive is not None and while_alive.poll() is not None:
            shown = output.read_text(errors="replace") if output is not None else ""
            raise AssertionError(
                f"{what}: the process exited ({while_alive.returncode}) first:\n{shown}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {what}")
        time.sleep(0.05)


async def await_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """:func:`wait_for` for async tests: the supervisor keeps running on the loop meanwhile."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {what}")
        await asyncio.sleep(0.05)


def incidents(store: Store, run_id: str) -> list[ml.Incident]:
    with store.read() as s:
        return ml.list_incidents(session=s, run_id=run_id)


def get_run(store: Store, run_id: str) -> Run:
    with store.read() as s:
        row = s.get(Run, run_id)
    assert row is not None, run_id
    return row


def _ours(token: str) -> list[psutil.Process]:
    me = os.getpid()
    found = []
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(TOKEN_ENV) == token:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@dataclass
class Reaper:
    """Tracks what a test started; :meth:`cleanup` kills and reaps all of it."""

    token: str
    popens: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_DISCORD")}
        return {**env, TOKEN_ENV: self.token, **extra}

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
        kw.setdefault("env", self.env())
        proc = subprocess.Popen(list(argv), **kw)
        self.popens.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in _ours(self.token):
            try:
                proc.kill()
            except psutil.Error:
                pass
        for popen in self.popens:
            if popen.poll() is None:
                popen.kill()
            popen.wait(timeout=10)
        left = [p for p in _ours(self.token) if not gone(p.pid)]
        psutil.wait_procs(left, timeout=5)


@pytest.fixture
def reaper(monkeypatch: pytest.MonkeyPatch) -> Iterator[Reaper]:
    token = uuid.uuid4().hex
    monkeypatch.setenv(TOKEN_ENV, token)  # the in-process supervisor copies os.environ
    r = Reaper(token)
    try:
        yield r
    finally:
        r.cleanup()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"HARNESS_HOME": str(tmp_path / "state")})


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    settings.paths.home.mkdir(parents=True, exist_ok=True)
    s = ml.open_log(settings.paths.db_path)
    try:
        yield s
    finally:
        s.close()


@dataclass
class Notes:
    """What the supervisor announced: (text, alert) in order."""

    items: list[tuple[str, bool]] = field(default_factory=list)

    def __call__(self, text: str, alert: bool) -> None:
        self.items.append((text, alert))

    def texts(self) -> list[str]:
        return [t for t, _ in self.items]


@pytest.fixture
def notes() -> Notes:
    return Notes()


@pytest.fixture
async def sup(
    store: Store, settings: Settings, notes: Notes, reaper: Reaper
) -> AsyncIterator[Supervisor]:
    s = Supervisor(store, settings.paths.runs_dir, notify=notes)
    try:
        yield s
    finally:
        reaper.cleanup()
        await s.close()
        for j in list(s._jobs.values()):
            popen = getattr(j.handle, "popen", None)  # the local launcher's child
            if popen is not None:
                await asyncio.to_thread(popen.wait, 10)


async def finish(sup: Supervisor, run_id: str, timeout: float = 60.0) -> Run:
    return await asyncio.wait_for(sup.wait(run_id), timeout)
