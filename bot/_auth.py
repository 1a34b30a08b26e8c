"""Who may use which command: the bot's config and one pure decision function.

Mutating commands (``run start``, ``run abort``, ``controls set``, ``heartbeat``) need the
user's id or one of their role ids on the allow-list; an empty allow-list refuses them all.
Read commands are open unless a read-list is configured, in which case they need the
read-list or the allow-list. With ``guild_id`` set, interactions from any other guild (or
from DMs) are refused too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MUTATING_COMMANDS", "BotConfig", "refusal"]

MUTATING_COMMANDS = frozenset({"run start", "run abort", "controls set", "heartbeat"})


def _check_ids(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, frozenset):
        raise ValueError(f"{name} must be a frozenset of Discord ids, got {type(value).__name__}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item <= 0:
            raise ValueError(f"{name} holds {item!r}, which is not a Discord id")


@dataclass(frozen=True)
class BotConfig:
    """Authorisation and scope of the Discord bot (the ``[discord]`` section of the config)."""

    allow_users: frozenset[int]
    allow_roles: frozenset[int]
    read_users: frozenset[int] | None = None
    read_roles: frozenset[int] | None = None
    guild_id: int | None = None

    def __post_init__(self) -> None:
        _check_ids("allow_users", self.allow_users, optional=False)
        _check_ids("allow_roles", self.allow_roles, optional=False)
        _check_ids("read_users", self.read_users, optional=True)
        _check_ids("read_roles", self.read_roles, optional=True)
        gid = self.guild_id
        if gid is not None and (isinstance(gid, bool) or not isinstance(gid, int) or gid <= 0):
            raise ValueError(f"guild_id must be a Discord id, got {gid!r}")

    @property
    def reads_restricted(self) -> bool:
        return self.read_users is not None or self.read_roles is not None


def refusal(
    config: BotConfig,
    *,
    command: str,
    user_id: int,
    role_ids: Iterable[int],
    guild_id: int | None,
) -> str | None:
    """The one-line reason to refuse ``command`` to this user, or None when it is allowed."""
    if config.guild_id is not None and guild_id != config.guild_id:
        return "This bot only answers in its own server."
    roles = frozenset(role_ids)
    allowed = user_id in config.allow_users or not roles.isdisjoint(config.allow_roles)
    if command in MUTATING_COMMANDS:
        return None if allowed else f"You are not allowed to use /{command}."
    if not config.reads_restricted or allowed:
        return None
    readers = config.read_users or frozenset()
    reader_roles = config.read_roles or frozenset()
    if user_id in readers or not roles.isdisjoint(reader_roles):
        return None
    return f"You are not allowed to use /{command}."
