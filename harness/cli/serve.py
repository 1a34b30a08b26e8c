"""``harness serve | send | messages | heartbeat | token``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from harness.cli.common import emit_json, fmt_time, settings_for, store_for
from harness.cli.exits import EXIT_FAILURE, EXIT_OK
from harness.daemon.client import DaemonClient
from harness.daemon.serve import daemon_info, serve_forever
from harness.daemon.service import Service
from harness.errors import UsageError
from memory import one_line
from sidecar import enqueue, list_messages, load_or_create_token


def _echo(text: str, alert: bool) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"{stamp} {'!' if alert else '·'} {text}", flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
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


def cmd_send(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    text = " ".join(args.text)
    if text == "-":
        text = sys.stdin.read()
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


def cmd_messages(args: argparse.Namespace) -> int:
    state = "dead" if args.dead else args.state
    with store_for(args) as store, store.read() as s:
        rows = list_messages(session=s, state=state, limit=args.limit)
        data = [m.model_dump() for m in rows]
    if args.json:
        emit_json(data)
        return EXIT_OK
    if not data:
        print("no messages")
    for m in data:
        payload = m.get("payload") or {}
        text = payload.get("content") or ""
        if not text and payload.get("embeds"):
            embed = payload["embeds"][0]
            text = f"[embed] {embed.get('title', '')}: {embed.get('description', '')}"
        err = f"  ({m['last_error']})" if m.get("last_error") and m["state"] != "sent" else ""
        print(
            f"#{m['id']:<5} {fmt_time(m.get('created_at'))} {m['state']:<8} {m['kind']:<9} "
            f"{one_line(str(text), 90)}{err}"
        )
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
