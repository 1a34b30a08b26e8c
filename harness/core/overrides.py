"""What a person may change from chat, and the typed rules every front end shares.

Chat (Discord) may only pick a preset and set the keys in :data:`CHAT_OVERRIDES`; no
command line ever comes from chat. The same value rules apply to ``--set`` on the
command line (``args.steps=abc`` is refused in both places) and to live controls.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from harness.errors import OverrideError

__all__ = [
    "CHAT_OVERRIDES",
    "CONTROL_RULES",
    "TYPED_SPEC_KEYS",
    "OverrideError",
    "chat_overrides",
    "check_control",
]


def _positive_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected a positive integer")
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError(f"expected a positive integer, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"expected a positive integer, got {raw!r}")
    return value


def _non_negative_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected an integer >= 0")
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError(f"expected an integer >= 0, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"expected an integer >= 0, got {raw!r}")
    return value


def _positive_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a positive number")
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ValueError(f"expected a positive number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive number, got {raw!r}")
    return value


def _weights(raw: Any) -> dict[str, float]:
    data = raw
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError('expected a JSON object such as {"echo": 1, "not": 0.5}') from None
    if not isinstance(data, dict) or not data:
        raise ValueError('expected a JSON object such as {"echo": 1, "not": 0.5}')
    out = {}
    for task, weight in data.items():
        try:
            out[str(task)] = _positive_float(weight)
        except ValueError:
            raise ValueError(f"weight of {task!r} must be a positive number") from None
    return out


#: chat key -> (spec key it sets, value rule)
CHAT_OVERRIDES: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "steps": ("args.steps", _positive_int),
    "batch": ("args.batch", _positive_int),
    "lr": ("args.lr", _positive_float),
    "seed": ("args.seed", _non_negative_int),
    "eval_every": ("args.eval_every", _non_negative_int),  # 0 turns it off
    "checkpoint_every": ("args.checkpoint_every", _non_negative_int),
}

#: dotted spec key -> value rule, applied to ``--set`` as well
TYPED_SPEC_KEYS: dict[str, Callable[[Any], Any]] = {
    spec_key: rule for spec_key, rule in CHAT_OVERRIDES.values()
}

#: live controls a person may set on a running job, with their rules
CONTROL_RULES: dict[str, Callable[[Any], Any]] = {
    "lr": _positive_float,
    "eval_every": _non_negative_int,
    "checkpoint_every": _non_negative_int,
    "data_weights": _weights,
}


def chat_overrides(overrides: Mapping[str, str]) -> list[str]:
    """Validate chat overrides; returns ``--set`` items (``args.steps=200``)."""
    out = []
    for key, raw in overrides.items():
        if key not in CHAT_OVERRIDES:
            allowed = ", ".join(CHAT_OVERRIDES)
            raise OverrideError(f"unknown override key {key!r} (allowed: {allowed})")
        spec_key, rule = CHAT_OVERRIDES[key]
        try:
            value = rule(raw)
        except ValueError as exc:
            raise OverrideError(f"{key}: {exc}") from None
        out.append(f"{spec_key}={json.dumps(value)}")
    return out


def check_control(key: str, raw: Any) -> Any:
    """The validated value of one live control, or OverrideError naming the key."""
    if key not in CONTROL_RULES:
        allowed = ", ".join(CONTROL_RULES)
        raise OverrideError(f"unknown control {key!r} (allowed: {allowed})")
    try:
        return CONTROL_RULES[key](raw)
    except ValueError as exc:
        raise OverrideError(f"{key}: {exc}") from None
