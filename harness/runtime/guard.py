"""Store writes that never stop supervision (issue 10, class 2).

Each watched run has one :class:`RunWriter`. The supervisor submits the run's writes to
it (the row's status, incidents, progress, the final row) and goes on watching at once;
one task per run carries them out in order, each in a worker thread, so a store that is
slow, locked or failing never holds up the rules or an abort. A write that fails is
retried ``retries`` times with a doubling backoff. If it still fails, nothing is raised:

- the record goes to ``<run_dir>/supervisor-fallback.jsonl``, one strict JSON object per
  line (``{"t", "run_id", "what", "error", "record"}``), opened without following a
  symlink, because the run dir belongs to the job;
- one line goes to stderr, at most one per ``say_every_s`` for the run (the next one says
  how many failed meanwhile), and one more when the store works again.

:meth:`RunWriter.failing_for` is how long the store has failed without a success in
between; the supervisor stops the job once that passes ``give_up_s``. A write submitted
with ``persist=True`` (the final row) keeps being retried in the background after its
caller was told it failed, for up to ``final_retry_s``, so the row is recorded if the store
comes back while this process lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memory import clean_text, dumps_strict, one_line

__all__ = [
    "FALLBACK_FILE",
    "GuardConfig",
    "Outcome",
    "RunWriter",
    "describe_error",
    "say_stderr",
    "settled",
]

FALLBACK_FILE = "supervisor-fallback.jsonl"
Say = Callable[[str], None]


@dataclass(frozen=True)
class GuardConfig:
    """How hard the supervisor tries the store before it degrades, and when it gives up."""

    retries: int = 3  # after the first attempt
    backoff_s: float = 0.05  # before the first retry; doubles each time
    give_up_s: float = 60.0  # the store failing this long (no success between) stops the job
    say_every_s: float = 30.0  # at most one stderr line per run in this time
    finish_wait_s: float = 10.0  # how long the end of a run waits for its final row
    final_retry_s: float = 600.0  # how long the final row is retried in the background

    def __post_init__(self) -> None:
        for name in ("backoff_s", "give_up_s", "say_every_s", "finish_wait_s", "final_retry_s"):
            value = getattr(self, name)
            if not value >= 0 or value == float("inf"):
                raise ValueError(f"GuardConfig.{name} must be a finite number >= 0, got {value}")
        if self.retries < 0:
            raise ValueError(f"GuardConfig.retries must be >= 0, got {self.retries}")


@dataclass(frozen=True)
class Outcome:
    """What became of one write: ``ok`` with the function's value, or the error's line."""

    ok: bool
    value: Any = None
    error: str = ""


def describe_error(exc: BaseException) -> str:
    """One clean line: the exception's type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return one_line(clean_text(text), 240)


async def settled(future: asyncio.Future[Outcome], timeout: float) -> Outcome:
    """The write's outcome, or a failure once ``timeout`` passes (the write goes on)."""
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout)
    except TimeoutError:
        return Outcome(False, None, f"no answer from the store within {timeout:g} s")


def say_stderr(text: str) -> None:
    """The default voice of a degraded supervisor: one line on stderr."""
    with contextlib.suppress(OSError, ValueError):
        print(f"harness: {text}", file=sys.stderr, flush=True)


def fallback_line(run_id: str, what: str, error: str, record: Any) -> str:
    """One strict JSON line for the fallback file; never raises, whatever ``record`` holds."""
    entry = {"t": time.time(), "run_id": run_id, "what": what, "error": error}
    try:
        return dumps_strict({**entry, "record": record})
    except (ValueError, TypeError, RecursionError) as exc:
        return dumps_strict({**entry, "record": None, "unwritable": describe_error(exc)})


def append_private(path: Path, line: str) -> None:
    """Append ``line`` to a regular file (created 0600); a symlink or FIFO there is refused."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.write(fd, (line + "\n").encode("utf-8"))
    finally:
        os.close(fd)


@dataclass
class _Item:
    what: str
    fn: Callable[[], Any]
    record: Any
    key: str | None
    persist: bool
    future: asyncio.Future[Outcome]


@dataclass
class RunWriter:
    """One run's store writes, in submission order, off the watch loop; never raises."""

    run_id: str
    fallback: Path | None  # None when there is no run dir to write to
    cfg: GuardConfig = field(default_factory=GuardConfig)
    say: Say = say_stderr
    clock: Callable[[], float] = time.monotonic
    _queue: deque[_Item] = field(default_factory=deque, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _failing_since: float | None = field(default=None, init=False)
    _failures: int = field(default=0, init=False)  # writes failed since the last success
    _kept: int = field(default=0, init=False)  # fallback lines since the last success
    _last_said: float | None = field(default=None, init=False)
    _unsaid: int = field(default=0, init=False)

    # -- the public side --------------------------------------------------------------

    def submit(
        self,
        what: str,
        fn: Callable[[], Any],
        record: Any = None,
        *,
        key: str | None = None,
        persist: bool = False,
    ) -> asyncio.Future[Outcome]:
        """Queue ``fn`` (run in a thread); the future says how it went and never fails.

        ``what`` completes "could not ..." in messages; ``record`` is what the fallback
        file keeps if the write fails. A write with a ``key`` replaces a queued, not yet
        started write with the same key (progress: only the latest matters).
        """
        if key is not None:
            for item in self._queue:
                if item.key == key:
                    item.fn, item.record = fn, record
                    return item.future
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(what, fn, record, key, persist, future))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._work(), name=f"store writes {self.run_id}"
            )
        return future

    async def call(self, what: str, fn: Callable[[], Any], *, retries: int = 0) -> Outcome:
        """Run ``fn`` now, outside the queue (a read, or a write whose record is elsewhere).

        A failure counts as the store failing; a success does not end a failure, because
        a read that works says nothing of writes (a full disk still serves reads).
        """
        return await self._attempts(what, fn, None, retries, heals=False)

    def failing_for(self) -> float:
        """Seconds the store has failed without a success in between (0 when it works)."""
        return 0.0 if self._failing_since is None else self.clock() - self._failing_since

    async def report(self, what: str, error: str, record: Any = None, *, always: bool) -> None:
        """Keep a line about the supervision itself in the fallback file and say it."""
        await self._keep(what, error, record)
        if always:
            self.say(f"run {self.run_id}: {what}: {error}")
        else:
            self._say_limited(f"{what}: {error}")

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the queue to empty; whether it did."""
        task = self._task
        if task is None or task.done():
            return True
        done, _ = await asyncio.wait([task], timeout=timeout)
        return bool(done)

    def cancel(self) -> None:
        """Stop writing (the process is going away); queued futures are told so."""
        if self._task is not None:
            self._task.cancel()
        for item in self._queue:
            if not item.future.done():
                item.future.set_result(Outcome(False, None, "cancelled"))
        self._queue.clear()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being written."""
        return not self._queue and (self._task is None or self._task.done())

    # -- internals --------------------------------------------------------------------

    async def _work(self) -> None:
        while self._queue:
            item = self._queue[0]
            item.key = None  # started: a later write with its key queues behind it
            outcome = await self._attempts(item.what, item.fn, item.record, self.cfg.retries)
            if not item.future.done():
                item.future.set_result(outcome)
            if not outcome.ok and item.persist:
                await self._persist(item)
            if self._queue and self._queue[0] is item:
                self._queue.popleft()

    async def _attempts(
        self, what: str, fn: Callable[[], Any], record: Any, retries: int, *, heals: bool = True
    ) -> Outcome:
        delay = self.cfg.backoff_s
        for attempt in range(retries + 1):
            try:
                value = await asyncio.to_thread(fn)
            except Exception as exc:  # whatever the store raises, supervision goes on
                error = describe_error(exc)
                if attempt < retries:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                await self._failed(what, record, error)
                return Outcome(False, None, error)
            if heals:
                self._succeeded()
            return Outcome(True, value)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _persist(self, item: _Item) -> None:
        deadline = self.clock() + self.cfg.final_retry_s
        delay = max(self.cfg.backoff_s, 0.5)
        while self.clock() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            try:
                await asyncio.to_thread(item.fn)
            except Exception:  # still failing; the fallback file has the record
                continue
            self._succeeded()
            self.say(f"run {self.run_id}: {item.what}: recorded after all")
            return

    async def _failed(self, what: str, record: Any, error: str) -> None:
        if self._failing_since is None:
            self._failing_since = self.clock()
        self._failures += 1
        if record is not None:
            await self._keep(what, error, record)
        where = f"kept in {self.fallback}" if record is not None and self.fallback else ""
        self._say_limited(
            f"could not {what} in the store: {error}" + (f"; {where}" if where else "")
        )

    async def _keep(self, what: str, error: str, record: Any) -> None:
        if self.fallback is None:
            return
        line = fallback_line(self.run_id, what, error, record)
        try:
            await asyncio.to_thread(append_private, self.fallback, line)
        except OSError as exc:
            self._say_limited(f"cannot write {self.fallback} either: {describe_error(exc)}")
            return
        self._kept += 1

    def _say_limited(self, text: str) -> None:
        now = self.clock()
        self._unsaid += 1
        if self._last_said is not None and now - self._last_said < self.cfg.say_every_s:
            return
        more = self._unsaid - 1
        extra = f" ({more} more since the last line)" if more else ""
        self.say(f"run {self.run_id}: {text}{extra}; supervision goes on")
        self._last_said, self._unsaid = now, 0

    def _succeeded(self) -> None:
        if self._failing_since is None:
            return
        lasted = self.clock() - self._failing_since
        kept = f", {self._kept} kept in {self.fallback}" if self._kept and self.fallback else ""
        self.say(
            f"run {self.run_id}: the store works again after {lasted:.0f} s "
            f"({self._failures} write(s) failed{kept})"
        )
        self._failing_since, self._failures, self._kept = None, 0, 0
        self._last_said, self._unsaid = None, 0
