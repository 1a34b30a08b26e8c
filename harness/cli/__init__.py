"""The command line: argument parsing and handlers only (``harness = harness.cli:main``)."""

from harness.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
