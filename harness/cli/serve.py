"""``harness serve | send | messages [retry|drop] | heartbeat | token``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from harness.cli.common import emit_json, fmt_time, settings_for, store_for
from harness.cli.exits import EXIT_FAILURE, EXIT_OK
from harness.daemon.client import DaemonClient
from harness.daemon.serve import daemon_info, serve_forever
from harness.daemon.service import Service
from harness.errors import UsageError
from memory import InvalidTextError, check_text, clean_text, one_line
from sidecar import (
    RateLimitFilter,
    drop_messages,
    enqueue,
    file_summaries,
    list_messages,
    load_or_create_token,
    retry_messages,
)

#: a storm of one server error is logged once per this many seconds, with a count
LOG_EVERY_S = 60.0


def _echo(text: str, alert: bool) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"{stamp} {'!' if alert else '·'} {text}", flush=True)


@contextlib.contextmanager
def _daemon_log() -> Iterator[None]:
    """The daemon's log on stderr while it serves: INFO and up, one line per record, the
    same warning at most once a minute (with a count). Only our own handler is touched,
    and everything is put back afterwards, so an in-process serve leaves no trace."""
    root, scheduler = logging.getLogger(), logging.getLogger("apscheduler")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RateLimitFilter(LOG_EVERY_S))
    levels = root.level, scheduler.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    scheduler.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        scheduler.setLevel(levels[1])


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    try:
        with _daemon_log():
            return asyncio.run(serve_forever(settings, echo=_echo))
    except OSError as exc:
        print(
            f"harness: error: cannot serve on port {settings.sidecar.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return EXIT_FAILURE


def cmd_token(args: argparse.Namespace) -> int:
    print(load_or_create_token(settings_for(args).paths.home))
    return EXIT_OK


def _stdin_text() -> str:
    """All of stdin as text; InvalidTextError (exit 2) when it is not UTF-8."""
    raw = sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidTextError(
            f"stdin is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start}"
        ) from None


def cmd_send(args: argparse.Namespace) -> int:
    """Queue text for Discord, through the daemon when one runs (retried safely), else
    straight into the outbox. Text that is not valid Unicode is refused (exit 2)."""
    settings = settings_for(args)
    text = " ".join(args.text)
    if text == "-":
        text = _stdin_text()
    check_text(text, "the message")
    if not text.strip():
        raise UsageError("nothing to send: the text is empty")
    info = daemon_info(settings.paths.home)
    if info is not None:
        with DaemonClient(info, load_or_create_token(settings.paths.home), timeout=30) as client:
            ids = client.send(text)
        print(f"queued as message {', '.join(map(str, ids))}")
        return EXIT_OK
    with store_for(args) as store, store.write() as s:
        rows = enqueue(session=s, text=text, kind="text")
        ids = [r.id or 0 for r in rows]
    print(
        f"queued as message {', '.join(map(str, ids))}; no daemon is running, so it goes out "
        "when `harness serve` (or a foreground `harness run`) next runs"
    )
    return EXIT_OK


def _shown(text: Any, limit: int) -> str:
    """Stored text as one printable line: never a lone surrogate (stdout would refuse it)."""
    return one_line(clean_text(str(text)), limit)


def _message_line(m: dict[str, Any]) -> str:
    """One row of `harness messages`, whatever the stored row holds."""
    raw = m.get("payload")
    payload: dict[str, Any] = raw if isinstance(raw, dict) else {}
    text = payload.get("content") or ""
    embeds = payload.get("embeds")
    if not text and isinstance(embeds, list) and embeds and isinstance(embeds[0], dict):
        text = f"[embed] {embeds[0].get('title', '')}: {embeds[0].get('description', '')}"
    files = m.get("files") or []
    if files:
        shown = ", ".join(f"{f['filename']} {max(int(f['size']) // 1024, 1)} KB" for f in files)
        text = f"[+{_shown(shown, 120)}] {text}"
    err = ""
    if m.get("last_error") and m.get("state") != "sent":
        err = f"  ({_shown(m['last_error'], 200)})"
    return (
        f"#{m.get('id')!s:<5} {fmt_time(m.get('created_at'))} {_shown(m.get('state'), 8):<8} "
        f"{_shown(m.get('kind'), 9):<9} {_shown(text, 90)}{err}"
    )


def cmd_messages(args: argparse.Namespace) -> int:
    state = "dead" if args.dead else args.state
    with store_for(args) as store, store.read() as s:
        rows = list_messages(session=s, state=state, limit=args.limit)
        files = file_summaries(session=s, ids=[m.id for m in rows if m.id is not None])
        data = [{**m.model_dump(), "files": files.get(m.id or 0, [])} for m in rows]
    if args.json:
        emit_json(data)  # strict JSON: cleaned and made finite by emit_json
        return EXIT_OK
    if not data:
        print("no messages")
    for m in data:
        print(_message_line(m))
    return EXIT_OK


def cmd_messages_retry(args: argparse.Namespace) -> int:
    """Dead messages back to pending, attempts reset; each keeps its place by id (it goes
    out before every message queued after it). A running daemon picks them up on its
    next poll. Unknown id, or a message that is not dead: exit 1, nothing changed."""
    with store_for(args) as store, store.write() as s:
        ids = retry_messages(session=s, ids=args.ids)
    print(f"message {', '.join(map(str, ids))} queued again")
    return EXIT_OK


def cmd_messages_drop(args: argparse.Namespace) -> int:
    """Give up on pending or dead messages (dead, "dropped by terminal"). A sent one, one
    being sent, or an unknown id: exit 1, nothing changed."""
    with store_for(args) as store, store.write() as s:
        ids = drop_messages(session=s, ids=args.ids, by="terminal")
    print(f"message {', '.join(map(str, ids))} dropped")
    return EXIT_OK


async def _heartbeat_local(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    store = store_for(args)
    try:
        service = Service(settings, store, echo=_echo)
        await service.heartbeat()
    finally:
        store.close()
    return EXIT_OK


def cmd_heartbeat(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    info = daemon_info(settings.paths.home)
    if info is None:
        return asyncio.run(_heartbeat_local(args))
    with DaemonClient(info, load_or_create_token(settings.paths.home), timeout=60) as client:
        print(client.heartbeat()["text"])
    return EXIT_OK


def cmd_bot_sync(args: argparse.Namespace) -> int:
    """Register the slash commands with Discord: globally, or in one guild (instant)."""
    from bot import BotError, sync_commands

    settings = settings_for(args)
    token = settings.discord.token
    if token is None:
        raise UsageError("set HARNESS_DISCORD_TOKEN to the bot's token first")
    try:
        names = asyncio.run(sync_commands(token.get_secret_value(), guild_id=args.guild))
    except BotError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    where = f"guild {args.guild}" if args.guild else "globally (may take up to an hour to show)"
    print(f"synced {len(names)} commands {where}: {', '.join(sorted(names))}")
    return EXIT_OK
