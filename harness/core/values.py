"""Reading values that come from people and from jobs: pure functions, no I/O."""

from __future__ import annotations

import math
import tomllib
from typing import Any

__all__ = ["as_float", "toml_value"]

_NONFINITE = {
    "nan": math.nan,
    "+nan": math.nan,
    "-nan": math.nan,
    "inf": math.inf,
    "+inf": math.inf,
    "infinity": math.inf,
    "+infinity": math.inf,
    "-inf": -math.inf,
    "-infinity": -math.inf,
}


def as_float(v: Any) -> float | None:
    """``v`` as a float when it is a number or a non-finite marker string, else None.

    ``harness.job`` writes NaN/Inf as ``"nan"``, ``"inf"`` and ``"-inf"``; other writers
    use ``"NaN"`` or ``"Infinity"``, and Python's ``json`` parses bare ``NaN`` to a float.
    Booleans are not numbers here. An int too large for a float maps to +/-inf.
    """
    if isinstance(v, bool):
        return None
    if isinstance(v, float):
        return v
    if isinstance(v, int):
        try:
            return float(v)
        except OverflowError:
            return math.inf if v > 0 else -math.inf
    if isinstance(v, str):
        return _NONFINITE.get(v.strip().lower())
    return None


def toml_value(raw: str) -> Any:
    """``raw`` read as a TOML value (``0.5``, ``[1, 2]``, ``true``); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
