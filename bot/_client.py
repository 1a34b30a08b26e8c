"""The Discord client: running the bot inside the daemon's loop, and syncing its commands.

Syncing is explicit (``harness bot sync`` or similar calls :func:`sync_commands` once after
the commands change); :func:`run_bot` never syncs, so restarts do not hit Discord's
command rate limits.
"""

from __future__ import annotations

import asyncio
import logging
import time

import discord

from ._auth import BotConfig
from ._commands import HarnessTree, build_tree
from ._service import HarnessService

__all__ = ["BotError", "HarnessClient", "run_bot", "sync_commands"]

log = logging.getLogger("harness.bot")


class BotError(Exception):
    """The bot could not log in, connect or sync (bad token, Discord unreachable or refusing)."""


class HarnessClient(discord.Client):
    """A gateway client with the Harness command tree; needs only the ``guilds`` intent
    (interactions arrive without any, the guild cache resolves members' roles)."""

    def __init__(self, service: HarnessService | None, config: BotConfig) -> None:
        super().__init__(
            intents=discord.Intents(guilds=True), allowed_mentions=discord.AllowedMentions.none()
        )
        self.config = config
        self.tree: HarnessTree = build_tree(self, service, config)

    async def on_ready(self) -> None:
        log.info("Discord bot connected as %s (id %s)", self.user, getattr(self.user, "id", "?"))


async def run_bot(
    service: HarnessService,
    token: str,
    config: BotConfig,
    *,
    retry_s: float = 5.0,
    max_retry_s: float = 300.0,
) -> None:
    """Run the bot until cancelled (the daemon makes it a task on its loop).

    A refused token or a missing privileged intent raises :class:`BotError` (retrying
    cannot help). Anything else that stops the client (no network at start-up, Discord
    down) is logged and retried on a fresh client after ``retry_s``, doubling up to
    ``max_retry_s``, so a daemon started offline gets its bot once the network is back.
    The token is never logged.
    """
    delay = retry_s
    while True:
        client = HarnessClient(service, config)
        started = time.monotonic()
        try:
            async with client:
                await client.start(token, reconnect=True)
            return  # closed on purpose
        except discord.LoginFailure:
            raise BotError("Discord refused the bot token") from None
        except discord.PrivilegedIntentsRequired as exc:
            raise BotError(f"Discord refused the bot's intents: {exc}") from None
        except Exception as exc:
            # discord.py's own reconnect loop dies with AttributeError when the very first
            # gateway connection fails (Rapptz/discord.py#10520), and login does not retry
            # at all; so retry here, on a fresh client, whatever stopped it.
            if time.monotonic() - started > max_retry_s:
                delay = retry_s  # it ran for a while: start the backoff afresh
            log.error(
                "Discord bot stopped (%s: %s); retrying in %.1f s",
                type(exc).__name__,
                exc,
                delay,
                exc_info=exc,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_retry_s)


async def sync_commands(token: str, *, guild_id: int | None = None) -> list[str]:
    """Log in, register the slash commands with Discord, log out; the synced names.

    With ``guild_id`` the commands are copied to that guild and synced there only (they
    appear at once); without it they are synced globally (Discord may take a while).
    """
    client = HarnessClient(None, BotConfig(frozenset(), frozenset(), guild_id=guild_id))
    try:
        async with client:
            await client.login(token)
            if guild_id is None:
                synced = await client.tree.sync()
            else:
                guild = discord.Object(id=guild_id)
                client.tree.copy_global_to(guild=guild)
                synced = await client.tree.sync(guild=guild)
    except discord.LoginFailure:
        raise BotError("Discord refused the bot token") from None
    except (discord.DiscordException, OSError) as exc:
        raise BotError(f"could not sync commands: {type(exc).__name__}: {exc}") from None
    names = sorted(command.name for command in synced)
    log.info("synced %d command(s) %s", len(names), "globally" if guild_id is None else "to guild")
    return names
