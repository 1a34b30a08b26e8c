"""A logging filter that keeps a storm of one error from filling the log.

A hostile or broken client can make the server log the same failure thousands of times
a second (asyncio's "socket.accept() out of system resource", one traceback per bad
request). :class:`RateLimitFilter` lets the first record of each kind through, drops the
same kind for ``interval_s`` seconds, and says on the next one it lets through how many
it dropped. A kind is the logger's name, the level and the unformatted message template
(``"%s %s failed"``), so one error with changing arguments still counts as one.
Records below WARNING always pass. ``harness serve`` puts one on the root handler, so it
sees what every logger (aiohttp, asyncio, ours) sends there.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["RateLimitFilter"]

_MAX_KINDS = 1024


class RateLimitFilter(logging.Filter):
    """At most one record of a kind per ``interval_s``; the next says how many were dropped.

    ``clock`` returns seconds (monotonic); tests pass their own.
    """

    def __init__(self, interval_s: float = 60.0, *, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        if not interval_s > 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self._clock = clock
        # kind -> (time it was last let through, records dropped since)
        self._seen: OrderedDict[tuple[str, int, str], tuple[float, int]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        last = self._seen.get(kind)
        if last is not None and now - last[0] < self.interval_s:
            self._seen[kind] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            suppressed = last[1]
            record.msg = (
                f"{record.msg} [{suppressed} more like this in the last "
                f"{now - last[0]:.0f} s not shown]"
            )
        self._seen[kind] = (now, 0)
        self._seen.move_to_end(kind)
        while len(self._seen) > _MAX_KINDS:
            self._seen.popitem(last=False)
        return True
