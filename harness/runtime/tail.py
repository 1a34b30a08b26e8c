"""The supervisor's reader of a job's ``metrics.jsonl`` (DESIGN section 3).

A job appends one JSON object per line; the supervisor calls :meth:`MetricsTail.read_new`
on every poll and gets whatever complete lines were appended since the last call. The
reader never raises on content, because the file is written by arbitrary user code:

- a half-written last line (no newline yet) is left for a later call;
- a line that is not UTF-8, not JSON, or not a JSON object is counted as garbage;
- a line longer than ``max_line_bytes`` is skipped and counted without ever holding more
  than ``max_line_bytes + chunk_bytes`` of it in memory, however many calls it spans;
- a file that shrank, was rewritten in place, deleted or replaced (new inode) is read
  again from the start, and the batch says so with ``truncated=True``.

:attr:`MetricsTail.offset` is the end of the last complete line consumed, so a restarted
supervisor can resume with ``MetricsTail(path, offset=saved)``. While an oversized line is
being skipped the offset stays at its start; resuming there skips (and counts) it again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memory import clip

__all__ = ["MetricsTail", "TailBatch"]

EXCERPT_CHARS = 120


@dataclass
class TailBatch:
    """What one :meth:`MetricsTail.read_new` call found."""

    records: list[dict[str, Any]] = field(default_factory=list)
    garbage: int = 0
    oversized: int = 0
    first_garbage: str | None = None
    truncated: bool = False


def _excerpt(line: bytes) -> str:
    """A short printable excerpt of a bad line, safe to put in a log or a chat message."""
    text = line[: EXCERPT_CHARS * 4].decode("utf-8", errors="backslashreplace")
    printable = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return clip(printable, EXCERPT_CHARS)


class MetricsTail:
    """Incremental, restartable reader of one JSON-lines file."""

    def __init__(
        self,
        path: Path,
        *,
        max_line_bytes: int = 1 << 20,
        chunk_bytes: int = 1 << 16,
        offset: int = 0,
    ) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be >= 1, got {max_line_bytes}")
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self.path = Path(path)
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
        """Read the complete lines appended since the last call.

        A missing file gives an empty batch. Raises OSError only for I/O errors other than
        a missing file (for example a permission error); never for the file's content.
        """
        batch = TailBatch()
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            if self._file_id is not None:  # it was there: whatever comes next is a new file
                if self._read_pos:
                    self._restart(batch)
                self._file_id = None
            return batch
        try:
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
        finally:
            os.close(fd)
        return batch

    # -- internals -------------------------------------------------------------------

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
            batch.records.append(obj)
            return
        batch.garbage += 1
        if batch.first_garbage is None:
            batch.first_garbage = _excerpt(line)
