"""Fit text and embeds to Discord's message limits, before anything is stored.

Limits (https://discord.com/developers/docs/resources/message#create-message and the
embed limits table): content 2,000 characters; 10 embeds per message; per embed a
title of 256, a description of 4,096, 25 fields with a name of 256 and a value of 1,024,
a footer of 2,048, an author name of 256, and 6,000 characters in total over all the
embeds of one message.

Long text is split on line boundaries into several messages (a single line longer
than the limit is cut hard); ``"".join(split_text(t)) == t`` whenever no chunk is
blank. Over-long embed strings are cut with an ellipsis, fields past the 25th or past
the total budget are dropped, and more than 10 embeds (or more than 6,000 characters of
them) spill into further messages. Wrong types, text that is not valid Unicode (a
lone surrogate, which no encoder accepts: such a message could never be delivered) and
non-finite numbers are refused with :class:`InvalidMessageError` naming the offending
path (``embeds[0].fields[2].value``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from memory import InvalidTextError, check_text, clip

from ._errors import InvalidMessageError

__all__ = [
    "CONTENT_LIMIT",
    "EMBEDS_PER_MESSAGE",
    "EMBED_TOTAL_LIMIT",
    "build_payloads",
    "check_value",
    "embed_size",
    "normalise_embed",
    "split_text",
]

CONTENT_LIMIT = 2000
EMBEDS_PER_MESSAGE = 10
EMBED_TOTAL_LIMIT = 6000
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELDS_LIMIT = 25
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
FOOTER_LIMIT = 2048
AUTHOR_LIMIT = 256
_ELLIPSIS = "…"
_EMBED_KEYS = frozenset(
    {
        "title",
        "description",
        "url",
        "timestamp",
        "color",
        "footer",
        "image",
        "thumbnail",
        "author",
        "fields",
    }
)


def split_text(text: str, limit: int = CONTENT_LIMIT) -> list[str]:
    """Cut ``text`` into chunks of at most ``limit`` characters, on line boundaries.

    Lines are kept whole where they fit (a chunk ends just after a newline); a line
    longer than ``limit`` is cut at exactly ``limit`` characters. Blank chunks are
    dropped, since Discord refuses an empty message.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    pieces = text.split("\n")
    lines = [p + "\n" for p in pieces[:-1]] + [pieces[-1]]
    chunks: list[str] = []
    current = ""
    for line in lines:
        while len(line) > limit:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:limit])
            line = line[limit:]
        if len(current) + len(line) > limit:
            chunks.append(current)
            current = line
        else:
            current += line
    if current:
        chunks.append(current)
    return [c for c in chunks if c.strip()]


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: max(limit - 1, 0)] + _ELLIPSIS


def _valid(text: str, path: str) -> str:
    try:
        return check_text(text, path)
    except InvalidTextError as exc:
        raise InvalidMessageError(str(exc)) from None


def _string(value: Any, path: str, *, required: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidMessageError(f"{path} must be a string")
    if required and not value.strip():
        raise InvalidMessageError(f"{path} must not be empty")
    return _valid(value, path)


def check_value(value: Any, path: str) -> None:
    """Refuse (:class:`InvalidMessageError`, naming the path) anything that is not JSON
    made of valid Unicode text and finite numbers, at any depth (walked without recursion).
    """
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, str):
            _valid(item, where)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidMessageError(f"{where} must be a finite number, not {item}")
        elif isinstance(item, Mapping):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise InvalidMessageError(f"{where} has a key that is not a string")
                _valid(key, f"a key of {where}")
                stack.append((sub, f"{where}.{clip(key, 40)}"))
        elif isinstance(item, list | tuple):
            stack.extend((sub, f"{where}[{i}]") for i, sub in enumerate(item))
        else:
            raise InvalidMessageError(f"{where} is not a JSON value ({type(item).__name__})")


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidMessageError(f"{path} must be an object")
    return dict(value)


def _url_object(value: Any, path: str) -> dict[str, Any]:
    obj = _object(value, path)
    _string(obj.get("url"), f"{path}.url", required=True)
    return obj


def normalise_embed(raw: Any, path: str = "embed") -> dict[str, Any]:
    """Check one embed's types and cut it to Discord's per-embed limits (a new dict)."""
    embed = _object(raw, path)
    check_value(embed, path)
    unknown = sorted(set(embed) - _EMBED_KEYS)
    if unknown:
        raise InvalidMessageError(f"{path} has an unknown key {unknown[0]!r}")
    if not embed:
        raise InvalidMessageError(f"{path} is empty")
    out: dict[str, Any] = {}
    if "title" in embed:
        out["title"] = _cut(_string(embed["title"], f"{path}.title"), TITLE_LIMIT)
    if "description" in embed:
        desc = _string(embed["description"], f"{path}.description")
        out["description"] = _cut(desc, DESCRIPTION_LIMIT)
    for key in ("url", "timestamp"):
        if key in embed:
            out[key] = _string(embed[key], f"{path}.{key}")
    if "color" in embed:
        color = embed["color"]
        if isinstance(color, bool) or not isinstance(color, int) or not 0 <= color <= 0xFFFFFF:
            raise InvalidMessageError(f"{path}.color must be an integer 0..16777215")
        out["color"] = color
    if "footer" in embed:
        footer = _object(embed["footer"], f"{path}.footer")
        text = _string(footer.get("text"), f"{path}.footer.text", required=True)
        out["footer"] = {**footer, "text": _cut(text, FOOTER_LIMIT)}
    if "author" in embed:
        author = _object(embed["author"], f"{path}.author")
        name = _string(author.get("name"), f"{path}.author.name", required=True)
        out["author"] = {**author, "name": _cut(name, AUTHOR_LIMIT)}
    for key in ("image", "thumbnail"):
        if key in embed:
            out[key] = _url_object(embed[key], f"{path}.{key}")
    if "fields" in embed:
        if not isinstance(embed["fields"], list):
            raise InvalidMessageError(f"{path}.fields must be a list")
        fields = []
        for i, raw_field in enumerate(embed["fields"]):
            fpath = f"{path}.fields[{i}]"
            fld = _object(raw_field, fpath)
            name = _string(fld.get("name"), f"{fpath}.name", required=True)
            value = _string(fld.get("value"), f"{fpath}.value", required=True)
            item: dict[str, Any] = {
                "name": _cut(name, FIELD_NAME_LIMIT),
                "value": _cut(value, FIELD_VALUE_LIMIT),
            }
            if "inline" in fld:
                if not isinstance(fld["inline"], bool):
                    raise InvalidMessageError(f"{fpath}.inline must be true or false")
                item["inline"] = fld["inline"]
            fields.append(item)
        out["fields"] = fields[:FIELDS_LIMIT]
    _fit_total(out)
    return out


def embed_size(embed: Mapping[str, Any]) -> int:
    """Characters that count towards the 6,000 total of a message."""
    size = len(embed.get("title", "")) + len(embed.get("description", ""))
    size += len(embed.get("footer", {}).get("text", ""))
    size += len(embed.get("author", {}).get("name", ""))
    for fld in embed.get("fields", []):
        size += len(fld["name"]) + len(fld["value"])
    return size


def _fit_total(embed: dict[str, Any]) -> None:
    """Cut the description, then drop (or cut) trailing fields, to fit 6,000 characters."""
    if embed_size(embed) <= EMBED_TOTAL_LIMIT:
        return
    fixed = len(embed.get("title", ""))
    fixed += len(embed.get("footer", {}).get("text", ""))
    fixed += len(embed.get("author", {}).get("name", ""))
    room = EMBED_TOTAL_LIMIT - fixed  # >= 3,440: the fixed parts are at most 2,560
    if "description" in embed:
        embed["description"] = _cut(embed["description"], room)
        room -= len(embed["description"])
    kept = []
    for fld in embed.get("fields", []):
        need = len(fld["name"]) + len(fld["value"])
        if need <= room:
            kept.append(fld)
            room -= need
            continue
        if room - len(fld["name"]) >= 2:
            kept.append({**fld, "value": _cut(fld["value"], room - len(fld["name"]))})
        break
    if "fields" in embed:
        embed["fields"] = kept


def _group_embeds(embeds: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: list[list[dict[str, Any]]] = []
    size = 0
    for embed in embeds:
        n = embed_size(embed)
        if not groups or len(groups[-1]) >= EMBEDS_PER_MESSAGE or size + n > EMBED_TOTAL_LIMIT:
            groups.append([])
            size = 0
        groups[-1].append(embed)
        size += n
    return groups


def build_payloads(
    text: Any = None, embeds: Any = None, files: list[str] | None = None
) -> list[dict[str, Any]]:
    """The Discord message bodies (``content`` and/or ``embeds``) for one request, in order.

    Text chunks come first; the first group of embeds rides on the last text chunk.
    ``files`` (names of files to upload) go with that same message: the last text chunk,
    or the first message when there is no text; it gets ``attachments: [{"id": i,
    "filename": name}]``. An embed's image or thumbnail ``attachment://<name>`` must
    name one of the files and sit in that message. Raises :class:`InvalidMessageError`
    when the input is not text and/or a list of embed objects, or when there is nothing
    to send (files alone are something: they go with an empty content).
    """
    contents: list[str] = []
    if text is not None:
        contents = split_text(_string(text, "text"))
    groups: list[list[dict[str, Any]]] = []
    if embeds is not None:
        if not isinstance(embeds, list):
            raise InvalidMessageError("embeds must be a list of objects")
        groups = _group_embeds([normalise_embed(e, f"embeds[{i}]") for i, e in enumerate(embeds)])
    payloads: list[dict[str, Any]] = [{"content": c} for c in contents]
    if groups and payloads:
        payloads[-1]["embeds"] = groups.pop(0)
    payloads += [{"embeds": g} for g in groups]
    if not payloads and files:
        payloads = [{"content": ""}]
    if not payloads:
        raise InvalidMessageError("nothing to send: text is empty and there are no embeds")
    if files:
        carrier = len(contents) - 1 if contents else 0
        payloads[carrier]["attachments"] = [{"id": i, "filename": n} for i, n in enumerate(files)]
    _check_references(payloads, files or [])
    return payloads


_ATTACHMENT = "attachment://"


def _check_references(payloads: list[dict[str, Any]], files: list[str]) -> None:
    """Every ``attachment://name`` in an embed names a file of its own message."""
    for n, payload in enumerate(payloads):
        mine = {a["filename"] for a in payload.get("attachments", [])}
        for embed in payload.get("embeds", []):
            for key in ("image", "thumbnail"):
                url = embed.get(key, {}).get("url", "")
                if not url.startswith(_ATTACHMENT):
                    continue
                name = url[len(_ATTACHMENT) :]
                if name not in files:
                    raise InvalidMessageError(f"embed {key} {url!r} names no attached file")
                if name not in mine:
                    raise InvalidMessageError(
                        f"embed {key} {url!r} is in message {n + 1} of the split, but the "
                        "files go with the one that carries the first embeds"
                    )
