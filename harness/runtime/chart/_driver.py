"""Rendering a chart in a child process, off the event loop and out of the daemon.

``python -m harness.runtime.chart`` reads the chart's description (JSON) on stdin and
writes the PNG on stdout. :class:`ChartRenderer` drives it with asyncio's subprocess
support: the loop never waits on it, and a child that takes longer than ``timeout_s`` is
killed. Whatever goes wrong (the child fails, times out, prints something that is not a
PNG, or cannot start) :meth:`ChartRenderer.render` answers None and the caller sends its
text without the chart; the failure is logged once (one line), and again only after a
render has worked in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from harness.errors import HarnessError
from memory import clean_text, one_line

__all__ = ["CHART_COMMAND", "PNG_SIGNATURE", "ChartError", "ChartRenderer"]

log = logging.getLogger("harness.charts")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# -P: a harness/ folder in the working directory never stands in for ours
CHART_COMMAND = (sys.executable, "-P", "-m", "harness.runtime.chart")
MAX_PNG_BYTES = 8 * 1024 * 1024  # a child that prints more than this is broken


class ChartError(HarnessError):
    """A chart could not be drawn; the message is one line."""


class ChartRenderer:
    """Draws charts in child processes, at most ``concurrency`` at a time."""

    def __init__(
        self,
        *,
        timeout_s: float = 20.0,
        command: Sequence[str] = CHART_COMMAND,
        concurrency: int = 2,
    ) -> None:
        if timeout_s <= 0 or concurrency < 1:
            raise ValueError("timeout_s must be positive and concurrency at least 1")
        self.timeout_s = timeout_s
        self.command = tuple(command)
        self._slots = asyncio.Semaphore(concurrency)
        self._failing = False

    async def render(self, desc: Mapping[str, Any]) -> bytes | None:
        """The PNG, or None (logged once) when it could not be drawn."""
        try:
            png = await self.render_or_raise(desc)
        except ChartError as exc:
            if not self._failing:
                log.warning("charts: %s; messages go without charts until one works", exc)
            else:
                log.debug("charts: %s", exc)
            self._failing = True
            return None
        if self._failing:
            log.info("charts: drawing works again")
            self._failing = False
        return png

    async def render_or_raise(self, desc: Mapping[str, Any]) -> bytes:
        """The PNG; :class:`ChartError` (one line) when the child fails or times out."""
        body = json.dumps(desc, allow_nan=False).encode("utf-8")
        async with self._slots:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.command,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            except OSError as exc:
                raise ChartError(f"the renderer could not start: {exc.strerror or exc}") from None
            try:
                async with asyncio.timeout(self.timeout_s):
                    out, err = await proc.communicate(body)
            except TimeoutError:
                raise ChartError(f"the renderer took longer than {self.timeout_s:g} s") from None
            finally:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    with contextlib.suppress(Exception):
                        await proc.wait()
        if proc.returncode != 0:
            lines = clean_text(err.decode("utf-8", "replace")).strip().splitlines()
            reason = one_line(lines[-1], 200) if lines else "no message"
            raise ChartError(f"the renderer failed (exit {proc.returncode}): {reason}")
        if not out.startswith(PNG_SIGNATURE) or len(out) > MAX_PNG_BYTES:
            raise ChartError(f"the renderer wrote {len(out)} bytes that are not a PNG")
        return out
