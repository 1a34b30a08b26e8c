"""Who may run what: the pure decision and the config's validation."""

from __future__ import annotations

import pytest

from bot import MUTATING_COMMANDS, BotConfig
from bot._auth import refusal

READS = ["run status", "run list", "mistakes search", "mistakes show", "incidents", "brief", "tell"]


def ask(config: BotConfig, command: str, user: int, roles: tuple[int, ...] = ()) -> bool:
    reason = refusal(config, command=command, user_id=user, role_ids=roles, guild_id=None)
    return reason is None


def test_mutating_commands_are_the_four_of_the_design() -> None:
    assert {"run start", "run abort", "controls set", "heartbeat"} == MUTATING_COMMANDS


@pytest.mark.parametrize("command", sorted(MUTATING_COMMANDS))
def test_mutating_needs_user_or_role_on_the_allow_list(command: str) -> None:
    config = BotConfig(frozenset({1}), frozenset({10}))
    assert ask(config, command, 1)
    assert ask(config, command, 2, (5, 10))
    assert not ask(config, command, 2, (5, 11))
    assert not ask(config, command, 2)
    empty = BotConfig(frozenset(), frozenset())
    assert not ask(empty, command, 1, (10,))


@pytest.mark.parametrize("command", READS)
def test_reads_are_open_unless_a_read_list_is_set(command: str) -> None:
    assert ask(BotConfig(frozenset(), frozenset()), command, 99)
    config = BotConfig(frozenset({1}), frozenset({10}), read_users=frozenset({2}))
    assert ask(config, command, 2)
    assert ask(config, command, 1)  # allow-list implies read
    assert ask(config, command, 3, (10,))
    assert not ask(config, command, 3, (11,))
    by_role = BotConfig(frozenset(), frozenset(), read_roles=frozenset({20}))
    assert ask(by_role, command, 3, (20,))
    assert not ask(by_role, command, 3)
    nobody = BotConfig(frozenset(), frozenset(), read_users=frozenset())
    assert not ask(nobody, command, 3)  # an empty read-list closes reads


def test_the_guild_pin() -> None:
    config = BotConfig(frozenset({1}), frozenset(), guild_id=7)

    def in_guild(guild_id: int | None) -> str | None:
        return refusal(config, command="run list", user_id=1, role_ids=(), guild_id=guild_id)

    assert in_guild(7) is None
    assert in_guild(8) == "This bot only answers in its own server."
    assert in_guild(None) == "This bot only answers in its own server."  # DMs


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"allow_users": {1}}, "allow_users"),  # a set, not a frozenset
        ({"allow_users": frozenset({"1"})}, "allow_users"),
        ({"allow_roles": frozenset({0})}, "allow_roles"),
        ({"read_users": [1]}, "read_users"),
        ({"read_roles": frozenset({True})}, "read_roles"),
        ({"guild_id": -3}, "guild_id"),
    ],
)
def test_bad_config_names_the_key(kwargs: dict[str, object], key: str) -> None:
    base: dict[str, object] = {"allow_users": frozenset(), "allow_roles": frozenset()}
    base.update(kwargs)
    with pytest.raises(ValueError, match=key):
        BotConfig(**base)  # type: ignore[arg-type]
