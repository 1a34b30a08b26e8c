"""The daemon: the service (composition root), HTTP run routes, ``serve``, its client,
the bot adapter, heartbeats and the briefing. Names are imported on first use, so a
command that only reads the config does not load aiohttp or APScheduler.
"""

from typing import TYPE_CHECKING

from harness._lazy import exports

__all__ = [
    "DaemonClient",
    "DaemonInfo",
    "Service",
    "Settings",
    "build_brief",
    "daemon_info",
    "load_settings",
    "serve_forever",
]

if TYPE_CHECKING:
    from harness.daemon.brief import build_brief
    from harness.daemon.client import DaemonClient
    from harness.daemon.config import Settings, load_settings
    from harness.daemon.serve import DaemonInfo, daemon_info, serve_forever
    from harness.daemon.service import Service

__getattr__, __dir__ = exports(
    __name__,
    {
        "DaemonClient": "harness.daemon.client",
        "DaemonInfo": "harness.daemon.serve",
        "Service": "harness.daemon.service",
        "Settings": "harness.daemon.config",
        "build_brief": "harness.daemon.brief",
        "daemon_info": "harness.daemon.serve",
        "load_settings": "harness.daemon.config",
        "serve_forever": "harness.daemon.serve",
    },
)
