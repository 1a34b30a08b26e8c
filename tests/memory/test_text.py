"""Text and JSON that came from outside: checked, cleaned, strict."""

from __future__ import annotations

import json
import math

import pytest

from memory import InvalidTextError, check_text, clean_text, dumps_strict, json_safe, storable


def strict_loads(text: str) -> object:
    def refuse(token: str) -> object:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_check_text_refuses_lone_surrogates_with_where() -> None:
    assert check_text("héllo ✓ 😀") == "héllo ✓ 😀"
    with pytest.raises(InvalidTextError, match=r"message is not valid Unicode: U\+D800 .* 5"):
        check_text("bad \ud800", "message")
    with pytest.raises(InvalidTextError, match=r"U\+DCFF"):
        check_text("bad \udcff")  # a byte 0xff from sys.argv (surrogateescape)


def test_clean_text_replaces_only_surrogates() -> None:
    assert clean_text("a\ud800b\udfffc 😀") == "a\ufffdb\ufffdc 😀"
    clean_text("x\ud800").encode("utf-8")  # encodable now


def test_strict_and_storable_json() -> None:
    value = {"loss": math.nan, "up": math.inf, "down": -math.inf, "t": ("a\ud800", 1), 2: True}
    out = strict_loads(dumps_strict(value))
    assert out == {"loss": None, "up": None, "down": None, "t": ["a\ufffd", 1], "2": True}
    stored = strict_loads(storable(value))
    assert stored == {"loss": "nan", "up": "inf", "down": "-inf", "t": ["a\ufffd", 1], "2": True}
    assert json_safe({1e999}) == [None]


def test_json_safe_never_recurses_without_bound() -> None:
    deep: list[object] = []
    node = deep
    for _ in range(5000):  # deeper than the interpreter's recursion limit
        node.append([])
        node = node[0]  # type: ignore[assignment]
    out = strict_loads(storable({"evidence": deep}))
    depth, cur = 0, out["evidence"]  # type: ignore[index]
    while isinstance(cur, list):
        depth, cur = depth + 1, cur[0]
    assert cur == "…(nested too deeply)" and depth == 63
