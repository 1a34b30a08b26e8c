"""The supervisor's reader of a job's ``metrics.jsonl`` (DESIGN section 3).

A job appends one JSON object per line; the supervisor calls :meth:`MetricsTail.read_new`
on every poll and gets whatever complete lines were appended since the last call. The
reader never raises on content, because the file is written by arbitrary user code:

- a half-written last line (no newline yet) is left for a later call;
- a line that is not UTF-8, not JSON, or not a JSON object is counted as garbage;
- a line longer than ``max_line_bytes`` is skipped and counted without ever holding more
  than ``max_line_bytes + chunk_bytes`` of it in memory, however many calls it spans;
- a file that shrank, was rewritten in place, deleted or replaced (new inode) is read
  again from the start, and the batch says so with ``truncated=True``;
- strings in a record (keys too) are cleaned of lone surrogates (``"\\ud800"`` escapes),
  which no store or chat accepts; a record nested deeper than ``MAX_DEPTH`` is garbage.

The file and its directory are the job's, so they are not trusted either. Only a regular
file inside the run directory is read: it is checked with ``lstat`` before it is opened
(a FIFO, socket or device is never opened, so nothing can block), opened with
``O_NONBLOCK | O_NOFOLLOW`` and checked again with ``fstat``. Anything else (a FIFO, a
symlink, a directory, a file whose directory resolves outside the run directory, an I/O
error) reads as no lines, and the batch names what was found in ``unreadable``.

:attr:`MetricsTail.offset` is the end of the last complete line consumed, so a restarted
supervisor can resume with ``MetricsTail(path, offset=saved)``. While an oversized line is
being skipped the offset stays at its start; resuming there skips (and counts) it again.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memory import clean_text, clip

__all__ = [
    "MAX_DEPTH",
    "MetricsTail",
    "RankRate",
    "TailBatch",
    "rank_metric_files",
    "rank_rates",
    "read_tail",
]

EXCERPT_CHARS = 120
MAX_DEPTH = 32  # nesting of a record's values; deeper is garbage (metrics are flat)
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # the only way one gets into a str
_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
)


@dataclass
class TailBatch:
    """What one :meth:`MetricsTail.read_new` call found."""

    records: list[dict[str, Any]] = field(default_factory=list)
    garbage: int = 0
    oversized: int = 0
    first_garbage: str | None = None
    truncated: bool = False
    # what stands where the file should be when it is not a regular file in the run dir:
    # "a FIFO", "a symlink to /etc/passwd", "unreadable: Permission denied", ...
    unreadable: str | None = None


def _excerpt(line: bytes) -> str:
    """A short printable excerpt of a bad line, safe to put in a log or a chat message."""
    text = line[: EXCERPT_CHARS * 4].decode("utf-8", errors="backslashreplace")
    printable = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return clip(printable, EXCERPT_CHARS)


def _shown(path: str) -> str:
    """A path for a message: surrogate-escaped bytes replaced, clipped."""
    return clip(clean_text(path), 200)


def _kind(mode: int) -> str | None:
    """What a file of this mode is, for a message; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


class _TooDeep(Exception):
    pass


def _clean(value: Any, depth: int = 0) -> Any:
    """``value`` with every string (keys too) cleaned; _TooDeep past ``MAX_DEPTH``."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            raise _TooDeep
        if isinstance(value, list):
            return [_clean(v, depth + 1) for v in value]
        return {clean_text(k): _clean(v, depth + 1) for k, v in value.items()}
    return value


def _needs_cleaning(line: bytes) -> bool:
    """Whether a parsed line may hold a lone surrogate or nest too deep (cheap, no parse)."""
    deep = line.count(b"[") + line.count(b"{") > MAX_DEPTH
    return deep or _SURROGATE_ESCAPE.search(line) is not None


class MetricsTail:
    """Incremental, restartable reader of one JSON-lines file."""

    def __init__(
        self,
        path: Path,
        *,
        max_line_bytes: int = 1 << 20,
        chunk_bytes: int = 1 << 16,
        offset: int = 0,
        root: Path | None = None,
    ) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be >= 1, got {max_line_bytes}")
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self.path = Path(path)
        # the run dir: the file's directory must still resolve here when it is read
        self._root = os.path.realpath(self.path.parent if root is None else root)
        self._max = max_line_bytes
        self._chunk = chunk_bytes
        self._offset = offset  # end of the last complete line consumed
        self._read_pos = offset  # end of the bytes read so far (offset + partial line)
        self._pending = bytearray()  # bytes of the current partial line, <= max_line_bytes
        self._skipping = False  # inside an oversized line: drop bytes until its newline
        self._file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file read

    @property
    def offset(self) -> int:
        """Byte offset just past the last complete line consumed (persist this to resume)."""
        return self._offset

    def read_new(self) -> TailBatch:
        """Read the complete lines appended since the last call; never raises.

        A missing file gives an empty batch. Anything but a regular file inside the run
        directory, or an I/O error, gives an empty batch whose ``unreadable`` says what
        was found; once a regular file is back it is read from its start.
        """
        batch = TailBatch()
        try:
            fd = self._open(batch)
            if fd is None:
                self._lost(batch)
                return batch
            try:
                self._read(fd, batch)
            finally:
                os.close(fd)
        except OSError as exc:
            batch.unreadable = f"unreadable: {exc.strerror or exc}"
            self._lost(batch)
        return batch

    # -- internals -------------------------------------------------------------------

    def _open(self, batch: TailBatch) -> int | None:
        """A descriptor on the file when it is a regular file in the run dir, else None."""
        try:
            st = os.lstat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            batch.unreadable = f"a symlink to {_shown(os.readlink(self.path))}"
            return None
        batch.unreadable = _kind(st.st_mode)
        if batch.unreadable is None:
            where = os.path.realpath(self.path.parent)
            if where != self._root:
                batch.unreadable = (
                    f"outside the run directory (its folder resolves to {_shown(where)})"
                )
        if batch.unreadable is not None:
            return None
        try:
            fd = os.open(self.path, _OPEN_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno != errno.ELOOP:  # a symlink put there since the lstat
                raise
            batch.unreadable = "a symlink"
            return None
        batch.unreadable = _kind(os.fstat(fd).st_mode)  # replaced since the lstat
        if batch.unreadable is not None:
            os.close(fd)
            return None
        return fd

    def _lost(self, batch: TailBatch) -> None:
        """The file is not there to read: whatever comes next is a new file."""
        if self._file_id is not None:
            if self._read_pos:
                self._restart(batch)
            self._file_id = None

    def _read(self, fd: int, batch: TailBatch) -> None:
        st = os.fstat(fd)
        file_id = (st.st_dev, st.st_ino)
        if self._replaced(fd, file_id, st.st_size):
            self._restart(batch)
        self._file_id = file_id
        end = st.st_size  # bound the work of one call even if the job keeps writing
        while self._read_pos < end:
            data = os.pread(fd, min(self._chunk, end - self._read_pos), self._read_pos)
            if not data:
                break
            self._consume(data, batch)

    def _replaced(self, fd: int, file_id: tuple[int, int], size: int) -> bool:
        """Whether the file is no longer the one (or the version) read so far."""
        if self._read_pos == 0:
            return False
        if self._file_id is not None and file_id != self._file_id:
            return True
        if size < self._read_pos:
            return True
        # Same inode, not smaller: it may still have been truncated and rewritten past our
        # position. Appends never change bytes already written, so the byte before the
        # offset must still end a line.
        return self._offset > 0 and os.pread(fd, 1, self._offset - 1) != b"\n"

    def _restart(self, batch: TailBatch) -> None:
        batch.truncated = True
        self._offset = 0
        self._read_pos = 0
        self._pending.clear()
        self._skipping = False

    def _consume(self, data: bytes, batch: TailBatch) -> None:
        parts = data.split(b"\n")
        tail = parts.pop()  # the bytes after the last newline: the start of a partial line
        pos = self._read_pos
        for part in parts:
            pos += len(part) + 1
            if self._skipping:
                self._skipping = False  # the end of an oversized line, already counted
            elif self._pending:
                if len(self._pending) + len(part) > self._max:
                    batch.oversized += 1
                else:
                    self._pending += part
                    self._parse(bytes(self._pending), batch)
                self._pending.clear()
            elif len(part) > self._max:
                batch.oversized += 1
            else:
                self._parse(part, batch)
            self._offset = pos
        self._read_pos = pos + len(tail)
        if tail and not self._skipping:
            if len(self._pending) + len(tail) > self._max:
                batch.oversized += 1
                self._pending.clear()
                self._skipping = True
            else:
                self._pending += tail

    def _parse(self, line: bytes, batch: TailBatch) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return
        try:
            obj = json.loads(line.decode("utf-8").lstrip("\ufeff"))
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            obj = None
        if isinstance(obj, dict):
            try:
                batch.records.append(_clean(obj) if _needs_cleaning(line) else obj)
                return
            except _TooDeep:
                pass
        batch.garbage += 1
        if batch.first_garbage is None:
            batch.first_garbage = _excerpt(line)


# -- the end of a file, and the ranks' own metric files ------------------------------------

#: ``metrics.rank<R>.jsonl``: what a rank other than 0 of a multi-process job reports
_RANK_FILE = re.compile(r"metrics\.rank(\d{1,6})\.jsonl")


def _tail_bytes(path: Path, limit: int) -> tuple[bytes, bool]:
    """(the last ``limit`` bytes of a regular file, whether its start was cut off)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return b"", False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return b"", False
        start = max(st.st_size - limit, 0)
        return os.pread(fd, limit, start), start > 0
    except OSError:
        return b"", False
    finally:
        os.close(fd)


def read_tail(path: Path, limit: int = 4096) -> str:
    """The last ``limit`` bytes of a regular file as clean text; "" for anything else.

    Never opens a FIFO or follows a symlink (the file is in the job's run dir).
    """
    return clean_text(_tail_bytes(path, limit)[0].decode("utf-8", "replace"))


def rank_metric_files(run_dir: Path) -> dict[int, Path]:
    """The ranks' metric files in a run dir, by rank (``metrics.rank<R>.jsonl``)."""
    found = {}
    try:
        names = os.listdir(run_dir)
    except OSError:
        return {}
    for name in names:
        m = _RANK_FILE.fullmatch(name)
        if m is not None:
            found[int(m[1])] = run_dir / name
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class RankRate:
    """One rank's recent progress, from the last step lines of its metrics file."""

    rank: int
    step: int | None
    steps_per_s: float | None  # over the last step lines read
    metrics: dict[str, float]  # the latest number of each key (samples_per_s, fwd_ms, ...)
    t: float | None  # when the last step line was written (unix seconds)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def _rank_rate(rank: int, path: Path, limit: int) -> RankRate:
    steps: list[tuple[float, int, dict[str, Any]]] = []
    data, cut = _tail_bytes(path, limit)
    for line in data.splitlines()[1 if cut else 0 :]:  # a cut first line is not a record
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(rec, dict) or rec.get("event") is not None:
            continue
        step, t = rec.get("step"), _number(rec.get("t"))
        if type(step) is int and t is not None:
            steps.append((t, step, rec))
    if not steps:
        return RankRate(rank, None, None, {}, None)
    (t0, s0, _), (t1, s1, _) = steps[0], steps[-1]
    t1 = min(t for t, s, _ in steps if s == s1)  # an eval line repeats its step, later
    rate = (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None
    numbers: dict[str, float] = {}  # the latest value of each (an eval line has no rate)
    for _, _, rec in steps:
        numbers.update(
            (k, n)
            for k, v in rec.items()
            if k not in ("t", "step") and (n := _number(v)) is not None
        )
    return RankRate(rank, s1, rate, numbers, t1)


def rank_rates(run_dir: Path, metrics: Path | None = None, *, limit: int = 8192) -> list[RankRate]:
    """Each rank's step, step rate and last numbers: rank 0 from ``metrics`` (the run's
    ``metrics.jsonl``, when given), the others from their own files. Reads only the last
    ``limit`` bytes of each file, so it is cheap enough for every status call; a rank
    much slower than the others (a straggler) shows in its figures."""
    files = rank_metric_files(run_dir)
    if metrics is not None and files:
        files = {0: metrics, **files}
    return [_rank_rate(rank, path, limit) for rank, path in sorted(files.items())]
