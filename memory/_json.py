"""JSON that every reader accepts: no NaN, no Infinity, no lone surrogates.

Python's ``json`` writes ``NaN`` and ``Infinity`` (not JSON; SQLite's JSON functions
and strict parsers refuse them) and keeps lone surrogates as ``"\\ud800"`` escapes.
Two forms:

- storage (:func:`storable`, the engine's ``json_serializer``): a non-finite number
  becomes its text, ``"nan"``, ``"inf"`` or ``"-inf"``, so the fact is kept and every
  reader of ours (``as_float``) still sees the number;
- output (:func:`dumps_strict`, every JSON the product prints or serves): a non-finite
  number becomes ``null``. Text is cleaned in both.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Literal

from ._text import clean_text

__all__ = ["MAX_DEPTH", "TOO_DEEP", "dumps_strict", "json_safe", "storable"]

MAX_DEPTH = 64
TOO_DEEP = "…(nested too deeply)"


def _nonfinite_text(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def json_safe(value: Any, *, nonfinite: Literal["text", "null"] = "null", _depth: int = 0) -> Any:
    """A copy of ``value`` that strict JSON can hold (see the module docstring).

    Tuples and sets become lists, mapping keys become (clean) strings, numpy and torch
    scalars become numbers; anything else unknown becomes its ``str``. Containers nested
    deeper than :data:`MAX_DEPTH` are replaced by the text :data:`TOO_DEEP` (so no input
    can exhaust the stack here, or in ``json.dumps`` after).
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return None if nonfinite == "null" else _nonfinite_text(value)
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset) and _depth >= MAX_DEPTH:
        return TOO_DEEP
    deeper = _depth + 1
    if isinstance(value, Mapping):
        return {
            clean_text(str(k)): json_safe(v, nonfinite=nonfinite, _depth=deeper)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, nonfinite=nonfinite, _depth=deeper) for v in value]
    item = getattr(value, "item", None)
    if callable(item):  # numpy / torch scalars
        return json_safe(item(), nonfinite=nonfinite, _depth=deeper)
    return clean_text(str(value))


def storable(value: Any) -> str:
    """``value`` as JSON text for a database column (non-finite numbers kept as text)."""
    return json.dumps(json_safe(value, nonfinite="text"), allow_nan=False)


def dumps_strict(value: Any, *, indent: int | None = None) -> str:
    """``value`` as strict JSON for people and programs (non-finite numbers as null)."""
    return json.dumps(
        json_safe(value, nonfinite="null"), allow_nan=False, ensure_ascii=False, indent=indent
    )
