"""``harness mcp``: serve the Model Context Protocol over stdio (``harness.daemon.mcp``).

The ``mcp`` package is an extra (``pip install 'harness[mcp]'``); without it the command
is refused with one line and exit 2.
"""

from __future__ import annotations

import argparse

from harness.cli.common import settings_for
from harness.errors import UsageError

__all__ = ["cmd_mcp"]

MISSING = "the MCP server needs the mcp package: pip install 'harness[mcp]'"


def cmd_mcp(args: argparse.Namespace) -> int:
    try:
        import mcp.server  # noqa: F401
    except ImportError as exc:
        missing = isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "mcp"
        raise UsageError(MISSING if missing else f"{MISSING} (it failed to load: {exc})") from None
    from harness.daemon.mcp import serve_mcp

    settings = settings_for(args)
    return serve_mcp(settings.paths, port=settings.sidecar.port)
