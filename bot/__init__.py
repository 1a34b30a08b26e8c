"""bot: the Discord slash commands, a thin adapter over a service it declares itself.

- :class:`HarnessService` is what the bot asks of Harness (``harness`` implements it and
  hands it over; ``bot`` never imports ``harness``); views are plain dataclasses and
  :class:`CommandError` is a one-line refusal shown to the user.
- :class:`BotConfig` says who may run which command.
- :func:`run_bot` runs the bot on the caller's loop until cancelled; :func:`sync_commands`
  registers the commands with Discord, explicitly; :func:`build_tree` builds the command
  tree (tests walk it).
"""

from ._auth import MUTATING_COMMANDS, BotConfig
from ._client import BotError, HarnessClient, run_bot, sync_commands
from ._commands import HarnessTree, build_tree, parse_overrides
from ._service import (
    BriefView,
    CommandError,
    DiagnosisView,
    HarnessService,
    HeartbeatView,
    IncidentView,
    MistakeView,
    RunView,
    SearchHitView,
)

__all__ = [
    "MUTATING_COMMANDS",
    "BotConfig",
    "BotError",
    "BriefView",
    "CommandError",
    "DiagnosisView",
    "HarnessClient",
    "HarnessService",
    "HarnessTree",
    "HeartbeatView",
    "IncidentView",
    "MistakeView",
    "RunView",
    "SearchHitView",
    "build_tree",
    "parse_overrides",
    "run_bot",
    "sync_commands",
]
