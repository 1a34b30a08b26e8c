"""``harness note``, ``notes``, ``orders``, ``inbox`` and ``brief``."""

from __future__ import annotations

import argparse
import sys

from harness.cli.common import emit_json, fmt_time, store_for
from harness.cli.exits import EXIT_OK
from harness.errors import UsageError
from memory import Note, add_note, dumps_strict, list_notes, mark_read, remove_note


def _text(args: argparse.Namespace) -> str:
    text = " ".join(args.text)
    return sys.stdin.read() if text == "-" else text


def _add(args: argparse.Namespace, kind: str) -> int:
    text = _text(args)
    with store_for(args) as store, store.write() as s:
        try:
            note = add_note(session=s, text=text, kind=kind)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(f"{'standing order' if kind == 'order' else 'note'} #{note.id} saved")
    return EXIT_OK


def _print_text(head: str, text: str) -> None:
    lines = text.splitlines() or [""]
    print(f"{head}: {lines[0]}")
    for line in lines[1:]:
        print(f"    {line}")


def _print_notes(notes: list[Note], *, empty: str) -> None:
    if not notes:
        print(empty)
    for n in notes:
        _print_text(f"#{n.id} {fmt_time(n.ts)}", n.text)


def cmd_note_add(args: argparse.Namespace) -> int:
    return _add(args, "note")


def cmd_notes(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    with store_for(args) as store, store.read() as s:
        notes = list_notes(session=s, kind="note", limit=args.limit)
    if args.json:
        emit_json([n.model_dump() for n in notes])
        return EXIT_OK
    _print_notes(notes, empty="no notes (add one with `harness note add TEXT`)")
    return EXIT_OK


def cmd_orders_add(args: argparse.Namespace) -> int:
    return _add(args, "order")


def cmd_orders_list(args: argparse.Namespace) -> int:
    with store_for(args) as store, store.read() as s:
        orders = list_notes(session=s, kind="order", limit=None)
    if args.json:
        emit_json([n.model_dump() for n in orders])
        return EXIT_OK
    _print_notes(orders, empty="no standing orders (add one with `harness orders add TEXT`)")
    return EXIT_OK


def cmd_orders_remove(args: argparse.Namespace) -> int:
    with store_for(args) as store, store.write() as s:
        note = remove_note(session=s, note_id=args.number, kind="order")
        print(f"removed standing order #{note.id}")
    return EXIT_OK


def cmd_inbox(args: argparse.Namespace) -> int:
    """Unread notes from Discord (``/tell``), marked read once shown; ``--all`` for the rest."""
    with store_for(args) as store, store.write() as s:
        notes = list_notes(
            session=s, kind="inbox", unread_only=not args.all, limit=200 if args.all else None
        )
        shown = [n.model_dump() for n in notes]  # as they were before this call read them
        mark_read(session=s, ids=[n.id for n in notes if n.id is not None and n.read_at is None])
    if args.json:
        emit_json(shown)
        return EXIT_OK
    if not notes:
        print("inbox: nothing unread" if not args.all else "inbox: empty")
        return EXIT_OK
    for d in shown:
        read = f" (read {fmt_time(d['read_at'])})" if d["read_at"] is not None else ""
        _print_text(f"#{d['id']} {fmt_time(d['ts'])} from {d['author']}{read}", str(d["text"]))
    return EXIT_OK


def cmd_brief(args: argparse.Namespace) -> int:
    from harness.daemon.brief import build_brief, render_hook, render_json, render_text

    with store_for(args) as store:
        brief = build_brief(store, mark=not args.no_mark)
    if args.format == "json":
        emit_json(render_json(brief))
    elif args.format == "hook":
        sys.stdout.write(dumps_strict(render_hook(brief)) + "\n")
    else:
        sys.stdout.write(render_text(brief))
    return EXIT_OK
