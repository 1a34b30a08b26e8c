"""Splitting text and trimming embeds to Discord's limits, before anything is stored."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar import InvalidMessageError, build_payloads, split_text
from sidecar._split import EMBED_TOTAL_LIMIT, embed_size


def test_a_long_multiline_text_becomes_three_messages_cut_at_line_ends() -> None:
    lines = [f"line {i:03d} " + "x" * 80 for i in range(50)]  # 50 lines of 89 chars + newline
    text = "\n".join(lines)
    assert len(text) > 4400

    chunks = split_text(text)

    assert len(chunks) == 3
    assert all(len(c) <= 2000 for c in chunks)
    assert "".join(chunks) == text  # nothing lost, nothing reordered
    for chunk in chunks[:-1]:
        assert chunk.endswith("\n")  # every cut is at a line end
    assert chunks[1].startswith("line ")


def test_a_single_line_longer_than_the_limit_is_cut_hard() -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(5000))

    chunks = split_text(text)

    assert [len(c) for c in chunks] == [2000, 2000, 1000]
    assert "".join(chunks) == text


def test_a_long_line_between_short_ones_keeps_order() -> None:
    text = "head\n" + "y" * 2500 + "\ntail"

    chunks = split_text(text)

    assert chunks == ["head\n", "y" * 2000, "y" * 500 + "\n" + "tail"]


@given(st.text(alphabet=st.sampled_from("ab \n"), max_size=6000))
def test_split_never_exceeds_the_limit_and_loses_nothing_but_blank_chunks(text: str) -> None:
    chunks = split_text(text, limit=100)

    assert all(0 < len(c) <= 100 and c.strip() for c in chunks)
    assert "".join(chunks).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace(
        "\n", ""
    )


def test_embed_strings_over_their_limits_are_cut_with_an_ellipsis() -> None:
    embed = {
        "title": "T" * 300,
        "description": "D" * 5000,
        "footer": {"text": "F" * 3000},
        "author": {"name": "A" * 300},
        "fields": [{"name": "N" * 300, "value": "V" * 2000, "inline": True} for _ in range(30)],
    }

    [payload] = build_payloads(embeds=[embed])
    [out] = payload["embeds"]

    assert len(out["title"]) == 256 and out["title"].endswith("…")
    assert len(out["footer"]["text"]) == 2048
    assert len(out["author"]["name"]) == 256
    assert len(out["fields"]) <= 25
    assert all(len(f["name"]) <= 256 and len(f["value"]) <= 1024 for f in out["fields"])
    assert embed_size(out) <= EMBED_TOTAL_LIMIT
    assert out["description"].startswith("DDD")  # the description is kept, only shortened


def test_more_than_ten_embeds_spill_into_another_message_after_the_text() -> None:
    embeds = [{"title": f"e{i}"} for i in range(13)]

    payloads = build_payloads(text="hello", embeds=embeds)

    assert [p.get("content") for p in payloads] == ["hello", None]
    assert [e["title"] for e in payloads[0]["embeds"]] == [f"e{i}" for i in range(10)]
    assert [e["title"] for e in payloads[1]["embeds"]] == ["e10", "e11", "e12"]


def test_embeds_over_6000_characters_together_are_sent_in_several_messages() -> None:
    embeds = [{"description": "d" * 4000} for _ in range(3)]

    payloads = build_payloads(embeds=embeds)

    assert len(payloads) == 3
    assert all(sum(embed_size(e) for e in p["embeds"]) <= 6000 for p in payloads)


@pytest.mark.parametrize(
    ("text", "embeds", "reason"),
    [
        (None, None, "nothing to send"),
        ("   \n ", None, "nothing to send"),
        (42, None, "text must be a string"),
        (None, {"title": "x"}, "embeds must be a list"),
        (None, ["x"], "embeds[0] must be an object"),
        (None, [{"title": 3}], "embeds[0].title must be a string"),
        (None, [{"fields": [{"name": "n", "value": ""}]}], "embeds[0].fields[0].value"),
        (None, [{"colour": 3}], "unknown key 'colour'"),
        (None, [{}], "embeds[0] is empty"),
    ],
)
def test_unsendable_input_is_refused_with_the_reason(text: Any, embeds: Any, reason: str) -> None:
    with pytest.raises(InvalidMessageError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        build_payloads(text, embeds)
