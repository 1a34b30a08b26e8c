"""Text for people: clipped to a limit, or folded onto one line.

Every package stores and prints text written by someone else (job output, chat, a
MISTAKES.md file); these are the one place it is cut. The ``bot`` package, which imports
nothing of ours, keeps its own copy for Discord's limits.
"""

from __future__ import annotations

__all__ = ["clip", "one_line"]

ELLIPSIS = "…"


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    if limit <= 0:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with every run of whitespace folded to one space, then clipped."""
    return clip(" ".join(text.split()), limit)
