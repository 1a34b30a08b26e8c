"""``harness tour``: a guided tour of the mistake log in a throw-away state dir.

The main demo is `make demo` (a supervised training run); this tour shows the
mistake log on its own, end to end. Its example MISTAKES.md ships inside the package,
so the tour works from an installed wheel as well as from a checkout.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from importlib import resources

from harness.cli.exits import EXIT_OK
from harness.cli.main import main

EXAMPLE = resources.files("harness.cli").joinpath("data", "MISTAKES.example.md")


def _step(title: str, argv: list[str]) -> None:
    print(f"\n$ harness {' '.join(argv)}    # {title}", flush=True)
    code = main(argv)
    if code != EXIT_OK:
        raise SystemExit(code)


def cmd_tour(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="harness-demo-") as home:
        os.environ["HARNESS_HOME"] = home
        print(f"state dir for this tour: {home}")
        _step("the built-in catalogue every rule links to", ["mistakes", "list"])
        with resources.as_file(EXAMPLE) as example:
            _step(
                "import a team's MISTAKES.md (upsert by id)", ["mistakes", "import", str(example)]
            )
        _step("full-text search, hostile input is fine", ["mistakes", "search", "gpu util AND ("])
        _step("one entry", ["mistakes", "show", "M-015"])
        _step("the checklist the supervisor enforces", ["checklist"])
        _step(
            "what the supervisor records when it aborts a run",
            ["incidents", "--json"],
        )
    return EXIT_OK
