"""A walk over the command tree: every command of DESIGN section 8, named and described
within Discord's limits, so a sync is not refused."""

from __future__ import annotations

import json
import re
from typing import Any

import discord
from discord import app_commands

NAME = re.compile(r"^[-_a-z0-9]{1,32}$")

# command -> its options as (name, required)
EXPECTED = {
    "run start": [("preset", True), ("overrides", False)],
    "run status": [("run", False)],
    "run list": [],
    "run abort": [("run", True), ("reason", False)],
    "controls set": [("run", True), ("key", True), ("value", True)],
    "mistakes search": [("query", True)],
    "mistakes show": [("id", True)],
    "incidents": [("run", False)],
    "diagnose": [("run", True)],
    "heartbeat": [],
    "brief": [],
    "tell": [("text", True)],
}


def _leaves(tree: app_commands.CommandTree[Any]) -> dict[str, app_commands.Command[Any, ..., Any]]:
    return {
        c.qualified_name: c for c in tree.walk_commands() if isinstance(c, app_commands.Command)
    }


def test_the_tree_holds_exactly_the_designed_commands(
    tree: app_commands.CommandTree[Any],
) -> None:
    options = {
        name: [(p.display_name, p.required) for p in cmd.parameters]
        for name, cmd in _leaves(tree).items()
    }
    assert options == EXPECTED


def test_names_and_descriptions_fit_discord_limits(tree: app_commands.CommandTree[Any]) -> None:
    seen: set[str] = set()
    every = list(tree.walk_commands())
    assert {c.qualified_name for c in every if isinstance(c, app_commands.Group)} == {
        "run",
        "controls",
        "mistakes",
    }
    for cmd in every:
        assert cmd.qualified_name not in seen, cmd.qualified_name
        seen.add(cmd.qualified_name)
        assert NAME.match(cmd.name), cmd.name
        assert 1 <= len(cmd.description) <= 100, cmd.qualified_name
        for p in getattr(cmd, "parameters", []):
            assert NAME.match(p.display_name), (cmd.qualified_name, p.display_name)
            assert 1 <= len(p.description) <= 100, (cmd.qualified_name, p.display_name)
            assert p.description != "…", (cmd.qualified_name, p.display_name)  # no default
    top = [c.name for c in tree.get_commands()]
    assert len(top) == len(set(top)) <= 100


def test_the_sync_payload_is_well_formed(tree: app_commands.CommandTree[Any]) -> None:
    payload = [c.to_dict(tree) for c in tree.get_commands()]
    json.dumps(payload)
    for command in payload:
        options = command.get("options", [])
        for sub in options:
            names = [o["name"] for o in sub.get("options", [])]
            assert len(names) == len(set(names))
            required = [o.get("required", False) for o in sub.get("options", [])]
            assert required == sorted(required, reverse=True)  # required options first
    by_name = {c["name"]: c for c in payload}
    (start,) = [o for o in by_name["run"]["options"] if o["name"] == "start"]
    preset = start["options"][0]
    assert preset["autocomplete"] is True
    assert preset["type"] == discord.AppCommandOptionType.string.value


def test_mutating_commands_are_guild_only_and_admin_by_default(
    tree: app_commands.CommandTree[Any],
) -> None:
    """Discord applies permissions to top-level commands: each one holding a mutating
    command is guild-only, shown by default to admins only (``default_member_permissions``
    "0"); the read-only ones stay visible to everyone, in DMs too."""
    from bot import MUTATING_COMMANDS

    guarded = {name.split()[0] for name in MUTATING_COMMANDS}
    assert guarded == {"run", "controls", "heartbeat"}
    for cmd in tree.get_commands():
        payload = cmd.to_dict(tree)
        if cmd.name in guarded:
            assert cmd.guild_only, cmd.name
            assert payload["default_member_permissions"] in (0, "0"), cmd.name
            assert payload["dm_permission"] is False, cmd.name  # no DMs
        else:
            assert not cmd.guild_only, cmd.name
            assert payload["default_member_permissions"] is None, cmd.name
            assert payload["dm_permission"] is True, cmd.name
