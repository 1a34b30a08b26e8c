"""``harness config``: the effective settings, secrets masked, each with where it came from."""

from __future__ import annotations

import argparse

from harness.cli.common import emit_json, settings_for
from harness.cli.exits import EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    rows = settings.effective()
    if args.json:
        emit_json({key: {"value": value, "source": source} for key, value, source in rows})
        return EXIT_OK
    width = max(len(f"{key} = {value}") for key, value, _ in rows if value is not None)
    for key, value, source in rows:
        shown = "-" if value is None else value
        print(f"{f'{key} = {shown}':<{width}}  ({source})")
    return EXIT_OK
