"""The ``harness`` command line: the parser, and ``main``.

Only argparse is imported here: each subcommand names its handler as ``module:function``
and the module is imported when the command runs, so ``harness --help`` stays instant.
Exit codes and error lines: ``harness.cli.exits``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from harness._version import __version__
from harness.cli.exits import EXIT_USAGE, run_handler

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def _cmd(sub: Any, name: str, handler: str, help_text: str, **kw: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text, **kw)
    p.set_defaults(handler=handler)
    return p


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="harness",
        description="Launch, watch and abort training runs by a checklist of past mistakes.",
    )
    parser.add_argument("--config", metavar="FILE", help="harness.toml to use")
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # mistakes ----------------------------------------------------------------------
    m = sub.add_parser("mistakes", help="the mistake log", description="The mistake log.")
    msub = m.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    mod = "harness.cli.mistakes"
    p = _cmd(msub, "list", f"{mod}:cmd_list", "list mistakes")
    p.add_argument("--category", metavar="C", help="only this category")
    _json(p)
    p = _cmd(msub, "show", f"{mod}:cmd_show", "show one mistake")
    p.add_argument("id", metavar="ID")
    _json(p)
    p = _cmd(msub, "search", f"{mod}:cmd_search", "full-text search of mistakes and incidents")
    p.add_argument("query", metavar="QUERY", nargs="+")
    p.add_argument("--limit", type=int, default=20)
    _json(p)
    p = _cmd(msub, "add", f"{mod}:cmd_add", "add a mistake")
    p.add_argument("--id", help="M-NNN (default: the next free id)")
    p.add_argument("--title", required=True)
    p.add_argument("--category", default="General")
    for name in ("when", "symptom", "root-cause", "fix", "prevention"):
        p.add_argument(f"--{name}", default="")
    p.add_argument(
        "--field", action="append", default=[], metavar="NAME=VALUE", help="an extra field"
    )
    _json(p)
    p = _cmd(msub, "import", f"{mod}:cmd_import", "import a MISTAKES.md file (upsert by id)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--partial", action="store_true", help="import the valid entries anyway")
    _json(p)
    p = _cmd(msub, "export", f"{mod}:cmd_export", "export the log as MISTAKES.md")
    p.add_argument("file", metavar="FILE", nargs="?", help="default: standard output")

    # incidents -----------------------------------------------------------------------
    i = _cmd(sub, "incidents", f"{mod}:cmd_incidents", "list incidents")
    i.add_argument("--run", metavar="R")
    i.add_argument("--rule")
    i.add_argument("--mistake", metavar="M")
    i.add_argument("--since", metavar="T", help="e.g. 2h, 3d, 2026-11-01, 2026-11-01T12:00")
    i.add_argument("--unresolved", action="store_true")
    i.add_argument("--limit", type=int, default=50)
    _json(i)
    isub = i.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    p = _cmd(isub, "show", f"{mod}:cmd_incident_show", "show one incident")
    p.add_argument("number", type=int, metavar="N")
    _json(p)
    p = _cmd(isub, "resolve", f"{mod}:cmd_incident_resolve", "mark an incident resolved")
    p.add_argument("number", type=int, metavar="N")
    p.add_argument("--note", required=True, help="what was done about it")

    # runs ----------------------------------------------------------------------------
    runs = "harness.cli.runs"
    status = "harness.cli.status"
    p = _cmd(sub, "run", f"{runs}:cmd_run", "launch a run and watch it in the foreground")
    p.add_argument("spec", metavar="SPEC|PRESET", help="a .toml spec file or a preset name")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key, e.g. watch.min_util=0.5 or args.steps=200",
    )
    p.add_argument(
        "--foreground",
        action="store_true",
        help="supervise in this process even when harness serve is running",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        metavar="SECONDS",
        help="heartbeat interval of a foreground run (default: harness.toml, else 300)",
    )
    p = _cmd(sub, "status", f"{status}:cmd_status", "active runs, or one run in detail")
    p.add_argument("run", nargs="?", metavar="RUN", help="run id, unique prefix, or 'last'")
    _json(p)
    p = _cmd(sub, "runs", f"{status}:cmd_runs", "recent runs with their verdicts")
    p.add_argument("--limit", type=int, default=20)
    _json(p)
    p = _cmd(sub, "abort", f"{status}:cmd_abort", "abort a run (SIGINT, SIGTERM, SIGKILL)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--reason", metavar="TEXT")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the end")
    p = _cmd(sub, "logs", f"{status}:cmd_logs", "a run's stdout (or --stderr)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("-f", "--follow", action="store_true", help="follow until the run ends")
    p.add_argument("--stderr", action="store_true")
    p.add_argument(
        "--rank",
        type=int,
        metavar="R",
        help="one rank's own output (launcher torchrun), every restart of it in order",
    )
    p.add_argument(
        "--script", action="store_true", help="the batch script submitted (launcher slurm)"
    )
    c = sub.add_parser(
        "controls", help="live controls of a run", description="Live controls of a run."
    )
    csub = c.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    p = _cmd(csub, "set", f"{status}:cmd_controls_set", "change live controls of a running job")
    p.add_argument("run", metavar="RUN")
    p.add_argument("changes", nargs="+", metavar="KEY=VALUE", help="e.g. lr=0.0005 eval_every=50")
    _json(p)
    p = _cmd(csub, "show", f"{status}:cmd_controls_show", "the controls a run's job reads now")
    p.add_argument("run", metavar="RUN")
    _json(p)
    p = _cmd(sub, "check", f"{runs}:cmd_check", "run the pre-launch checklist, launch nothing")
    p.add_argument("spec", nargs="?", metavar="SPEC|PRESET")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _json(p)
    p = _cmd(
        sub,
        "diagnose",
        "harness.cli.diagnose:cmd_diagnose",
        "what went wrong in training, why, and what to do (a run or a metrics file)",
    )
    p.add_argument("target", metavar="RUN|METRICS_FILE")
    _json(p)
    p = _cmd(
        sub,
        "plot",
        "harness.cli.plot:cmd_plot",
        "a run's chart as PNG: loss and key metric, utilisation per device, incidents",
    )
    p.add_argument("run", metavar="RUN")
    p.add_argument("-o", "--output", metavar="FILE", help="default: <run>.png here")
    _cmd(sub, "adopt", f"{runs}:cmd_adopt", "re-adopt runs whose supervisor died and watch them")
    p = _cmd(sub, "presets", f"{runs}:cmd_presets", "list the presets")
    _json(p)

    # daemon and messages ------------------------------------------------------------------
    srv = "harness.cli.serve"
    p = _cmd(sub, "serve", f"{srv}:cmd_serve", "run the daemon: supervisor, heartbeats, API")
    p.add_argument("--port", type=int, help="API port on 127.0.0.1 (default 7777)")
    p.add_argument("--heartbeat", type=float, metavar="SECONDS", help="heartbeat interval")
    _cmd(
        sub,
        "mcp",
        "harness.cli.mcp:cmd_mcp",
        "serve the Model Context Protocol over stdio (for coding agents)",
    )
    p = _cmd(sub, "send", f"{srv}:cmd_send", "queue a message for Discord ('-' reads stdin)")
    p.add_argument("text", nargs="+", metavar="TEXT")
    p = _cmd(sub, "messages", f"{srv}:cmd_messages", "the outbox: queued, sent, dead messages")
    p.add_argument("--dead", action="store_true", help="only dead-lettered messages")
    p.add_argument("--state", choices=["pending", "sending", "sent", "dead"])
    p.add_argument("--limit", type=int, default=50)
    _json(p)
    msub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    q = _cmd(msub, "retry", f"{srv}:cmd_messages_retry", "send a dead-lettered message again")
    q.add_argument("ids", type=int, nargs="+", metavar="ID")
    q = _cmd(msub, "drop", f"{srv}:cmd_messages_drop", "give up on a queued message")
    q.add_argument("ids", type=int, nargs="+", metavar="ID")
    _cmd(sub, "heartbeat", f"{srv}:cmd_heartbeat", "send a heartbeat now")
    _cmd(sub, "token", f"{srv}:cmd_token", "print the API bearer token (created on first use)")
    b = sub.add_parser("bot", help="the Discord bot", description="The Discord bot.")
    bsub = b.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    p = _cmd(bsub, "sync", f"{srv}:cmd_bot_sync", "register the slash commands with Discord")
    p.add_argument("--guild", type=int, metavar="ID", help="sync to one guild (instant)")

    # memory: notes, standing orders, the inbox, the briefing ---------------------------------
    mem = "harness.cli.memory"
    n = sub.add_parser("note", help="write a note for later", description="Notes for later.")
    nsub = n.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    p = _cmd(nsub, "add", f"{mem}:cmd_note_add", "add a note ('-' reads stdin)")
    p.add_argument("text", nargs="+", metavar="TEXT")
    p = _cmd(sub, "notes", f"{mem}:cmd_notes", "the latest notes")
    p.add_argument("--limit", type=int, default=20)
    _json(p)
    o = sub.add_parser(
        "orders",
        help="standing orders (shown at the top of every brief)",
        description="Standing orders: shown at the top of every brief until removed.",
    )
    osub = o.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    p = _cmd(osub, "add", f"{mem}:cmd_orders_add", "add a standing order ('-' reads stdin)")
    p.add_argument("text", nargs="+", metavar="TEXT")
    p = _cmd(osub, "list", f"{mem}:cmd_orders_list", "list the standing orders")
    _json(p)
    p = _cmd(osub, "remove", f"{mem}:cmd_orders_remove", "remove a standing order")
    p.add_argument("number", type=int, metavar="N")
    p = _cmd(sub, "inbox", f"{mem}:cmd_inbox", "unread notes from Discord (/tell); marks them read")
    p.add_argument("--all", action="store_true", help="also the notes read before")
    _json(p)
    p = _cmd(sub, "brief", f"{mem}:cmd_brief", "what to know before touching anything")
    p.add_argument("--format", choices=["text", "json", "hook"], default="text")
    p.add_argument(
        "--no-mark", action="store_true", help="do not move the 'since the last brief' mark"
    )

    p = _cmd(sub, "checklist", f"{mod}:cmd_checklist", "the prevention checklist")
    _json(p)
    _cmd(sub, "tour", "harness.cli.tour:cmd_tour", "a guided tour of the mistake log")
    p = _cmd(
        sub,
        "config",
        "harness.cli.settings:cmd_config",
        "the effective configuration: each value and where it came from",
    )
    _json(p)
    return parser


def _resolve(spec: str) -> Callable[..., int]:
    module, _, func = spec.partition(":")
    handler: Callable[..., int] = getattr(importlib.import_module(module), func)
    return handler


def _check_arguments(argv: Sequence[str]) -> None:
    """Every argument is valid text: a byte that is not UTF-8 arrives as a lone surrogate
    (``sys.argv`` uses surrogateescape) and could never be stored, sent or printed."""
    for n, arg in enumerate(argv, 1):
        bad = next((c for c in arg if "\ud800" <= c <= "\udfff"), None)
        if bad is not None:
            try:  # the bytes as typed (sys.argv), else the code points
                raw = arg.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raw = arg.encode("utf-8", "backslashreplace")
            shown = raw.decode("utf-8", "backslashreplace")
            sys.stderr.write(f"harness: error: argument {n} is not valid UTF-8: {shown!r}\n")
            raise SystemExit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    _check_arguments(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    return run_handler(_resolve(args.handler), args)


if __name__ == "__main__":
    raise SystemExit(main())
