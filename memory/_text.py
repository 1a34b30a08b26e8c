"""Text for people and for storage: checked, cleaned, clipped, folded onto one line.

Every package stores and prints text written by someone else (job output, chat, a
MISTAKES.md file, a shell argument). A Python ``str`` can hold what no encoder accepts:
lone surrogates (``"\\ud800"`` from a JSON escape, or ``"\\udcff"`` from a byte that was
not UTF-8 in ``sys.argv``). SQLite, Discord and a UTF-8 terminal all refuse them, so
text that enters from outside is either refused with one line (:func:`check_text`, at
the entry points: API, CLI, chat, files) or cleaned (:func:`clean_text`, where refusing
is not an option: a job's metrics, its stderr). The ``bot`` package, which imports
nothing of ours, keeps its own copy of ``clip`` for Discord's limits.
"""

from __future__ import annotations

import re

__all__ = ["InvalidTextError", "check_text", "clean_text", "clip", "one_line"]

ELLIPSIS = "…"
REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidTextError(ValueError):
    """Text that no encoder accepts; the message names what it was and where it breaks."""


def check_text(text: str, what: str = "text") -> str:
    """``text`` unchanged when it is valid Unicode; InvalidTextError naming ``what`` if not."""
    bad = _SURROGATE.search(text)
    if bad is None:
        return text
    raise InvalidTextError(
        f"{what} is not valid Unicode: U+{ord(bad.group()):04X} (a lone surrogate) at "
        f"character {bad.start() + 1}; was it meant to be UTF-8?"
    )


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (what a decoder would show)."""
    return _SURROGATE.sub(REPLACEMENT, text)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    if limit <= 0:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with every run of whitespace folded to one space, then clipped."""
    return clip(" ".join(text.split()), limit)
