"""Errors raised by the mistake log.

MistakesError             base; the message is one line a user can act on
 ├── NotFoundError        no mistake / incident with that id
 ├── InvalidInputError    a value a user gave is wrong (bad id, empty title, bad time)
 └── ImportRejectedError  a MISTAKES.md file has problems; nothing was written
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._markdown import Problem

__all__ = ["ImportRejectedError", "InvalidInputError", "MistakesError", "NotFoundError"]


class MistakesError(Exception):
    """Anything the mistake log refuses, with a one-line message."""


class NotFoundError(MistakesError):
    pass


class InvalidInputError(MistakesError):
    pass


class ImportRejectedError(MistakesError):
    """Carries every problem (with its line) so the CLI can list them."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        n = len(self.problems)
        first = self.problems[0] if self.problems else "no detail"
        super().__init__(
            f"{source}: {n} problem{'s' if n != 1 else ''}, nothing imported "
            f"(first: {first}); use --partial to import the valid entries"
        )
