"""The slash commands (DESIGN section 8): Discord glue over :class:`HarnessService`.

Every command goes through :meth:`HarnessCommands._handle`: authorise (pure, logged when
refused), check the input (pure), defer, ask the service, answer with an embed from
``_embeds``. Every failure goes to :func:`report_error`, which answers the user on one
ephemeral line and logs; :class:`HarnessTree` sends the errors raised before a callback
runs (bad option values, a stale command signature) to the same place.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import shlex
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands

from ._auth import BotConfig, refusal
from ._embeds import (
    brief_embed,
    controls_embed,
    diagnosis_embed,
    heartbeat_embed,
    incidents_embed,
    mistake_embed,
    one_line,
    run_embed,
    runs_embed,
    search_embed,
    tell_text,
)
from ._service import CommandError, HarnessService

__all__ = [
    "MAX_CHOICES",
    "HarnessCommands",
    "HarnessTree",
    "build_tree",
    "match_choices",
    "parse_overrides",
    "report_error",
]

log = logging.getLogger("harness.bot")

MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices
CHOICE_MAX = 100  # characters in a choice name or value
NO_PINGS = discord.AllowedMentions.none()
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
OVERRIDES_HINT = "write key=value pairs, e.g. steps=200 lr=0.001"

Interaction = discord.Interaction[Any]
Choices = list[app_commands.Choice[str]]


def parse_overrides(text: str | None) -> dict[str, str]:
    """``"steps=200 lr=0.001"`` -> ``{"steps": "200", "lr": "0.001"}``; CommandError when malformed.

    Only splits text: the service checks every key and value against its allow-list.
    """
    if text is None or not text.strip():
        return {}
    try:
        tokens = shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        raise CommandError(f"bad overrides: {exc}; {OVERRIDES_HINT}") from None
    out: dict[str, str] = {}
    for token in tokens:
        key, eq, value = token.partition("=")
        if not eq:
            raise CommandError(f"bad overrides: {token!r} is not key=value; {OVERRIDES_HINT}")
        if not key:
            raise CommandError(f"bad overrides: {token!r} has an empty key; {OVERRIDES_HINT}")
        if not _KEY.match(key):
            raise CommandError(f"bad overrides: {key!r} is not a valid key; {OVERRIDES_HINT}")
        if not value:
            raise CommandError(f"bad overrides: {key!r} has no value; {OVERRIDES_HINT}")
        if key in out:
            raise CommandError(f"bad overrides: {key!r} is given twice")
        out[key] = value
    return out


def match_choices(candidates: Iterable[str], current: str, limit: int = MAX_CHOICES) -> list[str]:
    """Candidates containing ``current`` (case-insensitive), those starting with it first."""
    needle = current.strip().lower()
    seen: set[str] = set()
    starts: list[str] = []
    contains: list[str] = []
    for name in candidates:
        if name in seen or not name or len(name) > CHOICE_MAX:
            continue
        seen.add(name)
        low = name.lower()
        if low.startswith(needle):
            starts.append(name)
        elif needle in low:
            contains.append(name)
    return (starts + contains)[:limit]


def _by(interaction: Interaction) -> str:
    return f"discord:{interaction.user.id}"


def _role_ids(user: discord.User | discord.Member) -> list[int]:
    return [role.id for role in user.roles] if isinstance(user, discord.Member) else []


async def _answer_privately(
    interaction: Interaction, text: str, *, placeholder: str | None
) -> None:
    """One ephemeral line. ``placeholder`` is how the interaction was deferred: None (not
    at all), "private" or "public"; a public "thinking…" message is removed first, so the
    error is not shown to the whole channel."""
    try:
        if placeholder is None:
            await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)
            return
        if placeholder == "public":
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
    except discord.DiscordException:
        log.warning("could not answer user %s", interaction.user.id, exc_info=True)


async def report_error(
    interaction: Interaction,
    error: BaseException,
    *,
    command: str,
    placeholder: str | None = None,
) -> None:
    """The one error handler: answer on one ephemeral line, log (with the trace if unexpected).

    A :class:`CommandError` is shown as is; a Discord-side command error (a bad option
    value, a stale command signature) by its message; anything else as
    "internal error, logged as <id>", the id being in the log line next to the trace.
    """
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    user_id = interaction.user.id
    if isinstance(error, CommandError):
        text = one_line(str(error)) or "that did not work"
        log.info("/%s by user %s: %s", command, user_id, text)
    elif isinstance(error, app_commands.AppCommandError):
        text = one_line(str(error)) or type(error).__name__
        log.warning("/%s by user %s: %s", command, user_id, text)
    else:
        ref = secrets.token_hex(4)
        text = f"internal error, logged as {ref}"
        log.error("/%s by user %s failed, logged as %s", command, user_id, ref, exc_info=error)
    await _answer_privately(interaction, text, placeholder=placeholder)


@dataclass(frozen=True)
class Reply:
    embed: discord.Embed | None = None
    content: str | None = None


Work = Callable[[HarnessService], Awaitable[Reply]]


class HarnessCommands:
    """The command handlers, bound to one service and one config."""

    def __init__(self, service: HarnessService | None, config: BotConfig) -> None:
        self.service = service
        self.config = config

    def _refusal(self, interaction: Interaction, command: str) -> str | None:
        user = interaction.user
        return refusal(
            self.config,
            command=command,
            user_id=user.id,
            role_ids=_role_ids(user),
            guild_id=interaction.guild_id,
        )

    async def _handle(
        self,
        interaction: Interaction,
        command: str,
        work: Work,
        *,
        check: Callable[[], object] | None = None,
        private: bool = False,
    ) -> None:
        reason = self._refusal(interaction, command)
        if reason is not None:
            log.warning("refused /%s to user %s: %s", command, interaction.user.id, reason)
            await _answer_privately(interaction, reason, placeholder=None)
            return
        placeholder: str | None = None
        try:
            if check is not None:
                check()  # pure input checks, answered before deferring
            if self.service is None:
                raise CommandError("this bot is not connected to a Harness service")
            await interaction.response.defer(ephemeral=private)
            placeholder = "private" if private else "public"
            reply = await work(self.service)
            if reply.embed is not None:
                await interaction.followup.send(
                    embed=reply.embed, ephemeral=private, allowed_mentions=NO_PINGS
                )
            else:
                await interaction.followup.send(
                    reply.content or "done", ephemeral=private, allowed_mentions=NO_PINGS
                )
        except Exception as exc:
            await report_error(interaction, exc, command=command, placeholder=placeholder)

    # -- /run ---------------------------------------------------------------------------

    async def run_start(
        self, interaction: Interaction, preset: str, overrides: str | None = None
    ) -> None:
        parsed: dict[str, str] = {}

        async def work(svc: HarnessService) -> Reply:
            view = await svc.start_run(preset, parsed, by=_by(interaction))
            return Reply(run_embed(view, heading="Started"))

        await self._handle(
            interaction,
            "run start",
            work,
            check=lambda: parsed.update(parse_overrides(overrides)),
        )

    async def run_status(self, interaction: Interaction, run: str | None = None) -> None:
        async def work(svc: HarnessService) -> Reply:
            views = await svc.run_status(run)
            if run is not None and len(views) == 1:
                return Reply(run_embed(views[0]))
            return Reply(runs_embed(views, title="Active runs", empty="No active runs."))

        await self._handle(interaction, "run status", work)

    async def run_list(self, interaction: Interaction) -> None:
        async def work(svc: HarnessService) -> Reply:
            views = await svc.list_runs(10)
            return Reply(runs_embed(views, title="Recent runs", empty="No runs yet."))

        await self._handle(interaction, "run list", work)

    async def run_abort(
        self, interaction: Interaction, run: str, reason: str | None = None
    ) -> None:
        async def work(svc: HarnessService) -> Reply:
            view = await svc.abort_run(run, reason or "", by=_by(interaction))
            return Reply(run_embed(view, heading="Abort requested"))

        await self._handle(interaction, "run abort", work)

    # -- /controls, /mistakes, /incidents ----------------------------------------------

    async def controls_set(self, interaction: Interaction, run: str, key: str, value: str) -> None:
        async def work(svc: HarnessService) -> Reply:
            controls = await svc.set_control(run, key, value, by=_by(interaction))
            return Reply(controls_embed(run, key, value, controls))

        await self._handle(interaction, "controls set", work)

    async def mistakes_search(self, interaction: Interaction, query: str) -> None:
        async def work(svc: HarnessService) -> Reply:
            return Reply(search_embed(query, await svc.search_mistakes(query)))

        await self._handle(interaction, "mistakes search", work)

    async def mistakes_show(self, interaction: Interaction, mistake_id: str) -> None:
        async def work(svc: HarnessService) -> Reply:
            return Reply(mistake_embed(await svc.show_mistake(mistake_id.strip())))

        await self._handle(interaction, "mistakes show", work)

    async def incidents(self, interaction: Interaction, run: str | None = None) -> None:
        async def work(svc: HarnessService) -> Reply:
            return Reply(incidents_embed(await svc.incidents(run), run=run))

        await self._handle(interaction, "incidents", work)

    async def diagnose(self, interaction: Interaction, run: str) -> None:
        async def work(svc: HarnessService) -> Reply:
            return Reply(diagnosis_embed(await svc.diagnose(run)))

        await self._handle(interaction, "diagnose", work)

    # -- /heartbeat, /brief, /tell -------------------------------------------------------

    async def heartbeat(self, interaction: Interaction) -> None:
        async def work(svc: HarnessService) -> Reply:
            return Reply(heartbeat_embed(await svc.heartbeat()))

        await self._handle(interaction, "heartbeat", work)

    async def brief(self, interaction: Interaction) -> None:
        async def work(svc: HarnessService) -> Reply:
            return Reply(brief_embed(await svc.brief()))

        await self._handle(interaction, "brief", work)

    async def tell(self, interaction: Interaction, text: str) -> None:
        author = f"discord:{interaction.user.id} ({interaction.user.name})"

        async def work(svc: HarnessService) -> Reply:
            return Reply(content=tell_text(await svc.tell(text, author=author)))

        await self._handle(interaction, "tell", work, private=True)

    # -- autocomplete -------------------------------------------------------------------

    async def _complete(
        self,
        interaction: Interaction,
        command: str,
        source: Callable[[HarnessService], Awaitable[list[str]]],
        current: str,
    ) -> Choices:
        """Choices for a user who may run ``command``; nothing (silently) otherwise."""
        if self.service is None or self._refusal(interaction, command) is not None:
            return []
        try:
            names = await source(self.service)
        except Exception:
            log.warning("autocomplete for /%s failed", command, exc_info=True)
            return []
        return [app_commands.Choice(name=n, value=n) for n in match_choices(names, current)]

    async def complete_preset(self, interaction: Interaction, current: str) -> Choices:
        return await self._complete(interaction, "run start", lambda s: s.presets(), current)

    async def complete_run(self, interaction: Interaction, current: str, command: str) -> Choices:
        return await self._complete(interaction, command, lambda s: s.active_run_ids(), current)


class HarnessTree(app_commands.CommandTree[Any]):
    """A command tree whose errors (raised before a handler runs) reach :func:`report_error`."""

    async def on_error(self, interaction: Interaction, error: app_commands.AppCommandError) -> None:
        command = interaction.command
        name = command.qualified_name if command is not None else "?"
        placeholder = "public" if interaction.response.is_done() else None
        await report_error(interaction, error, command=name, placeholder=placeholder)


def build_tree(
    client: discord.Client, service: HarnessService | None, config: BotConfig
) -> HarnessTree:
    """The command tree of ``client`` with every Harness command on it.

    ``service`` may be None only to build the tree for syncing; commands then refuse.
    """
    h = HarnessCommands(service, config)
    tree = HarnessTree(client)

    def runs_for(command: str) -> Callable[[Interaction, str], Coroutine[Any, Any, Choices]]:
        async def complete(interaction: Interaction, current: str) -> Choices:
            return await h.complete_run(interaction, current, command)

        return complete

    # Discord takes permissions on top-level commands only: a top-level command holding a
    # mutating one is guild-only and, by default, shown to server admins alone (they grant
    # it to the team's roles under Server Settings > Integrations). The allow-lists of
    # BotConfig still decide, at every call, who may run it.
    admins = discord.Permissions.none()  # "0": nobody but server admins, until granted
    run = app_commands.Group(
        name="run",
        description="Start, watch and abort training runs",
        guild_only=True,
        default_permissions=admins,
    )

    @run.command(name="start", description="Start a run from a preset")
    @app_commands.describe(
        preset="Preset name", overrides="Allowed overrides as key=value, e.g. steps=200 lr=0.001"
    )
    @app_commands.autocomplete(preset=h.complete_preset)
    async def run_start(
        interaction: Interaction,
        preset: app_commands.Range[str, 1, 100],
        overrides: app_commands.Range[str, 0, 500] | None = None,
    ) -> None:
        await h.run_start(interaction, preset, overrides)

    @run.command(name="status", description="Progress of one run, or of every active run")
    @app_commands.describe(run="Run id (default: every active run)")
    @app_commands.autocomplete(run=runs_for("run status"))
    async def run_status(interaction: Interaction, run: str | None = None) -> None:
        await h.run_status(interaction, run)

    @run.command(name="list", description="The most recent runs")
    async def run_list(interaction: Interaction) -> None:
        await h.run_list(interaction)

    @run.command(name="abort", description="Abort a run (SIGINT first, so it can checkpoint)")
    @app_commands.describe(run="Run id", reason="Why (kept with the incident)")
    @app_commands.autocomplete(run=runs_for("run abort"))
    async def run_abort(
        interaction: Interaction, run: str, reason: app_commands.Range[str, 0, 300] | None = None
    ) -> None:
        await h.run_abort(interaction, run, reason)

    controls = app_commands.Group(
        name="controls",
        description="Live controls of a running job",
        guild_only=True,
        default_permissions=admins,
    )

    @controls.command(name="set", description="Set one live control of a running job")
    @app_commands.describe(run="Run id", key="Control name, e.g. lr", value="New value")
    @app_commands.autocomplete(run=runs_for("controls set"))
    async def controls_set(
        interaction: Interaction,
        run: str,
        key: app_commands.Range[str, 1, 64],
        value: app_commands.Range[str, 1, 200],
    ) -> None:
        await h.controls_set(interaction, run, key, value)

    mistakes = app_commands.Group(name="mistakes", description="The mistake log")

    @mistakes.command(name="search", description="Search mistakes and incidents")
    @app_commands.describe(query="Words to look for")
    async def mistakes_search(
        interaction: Interaction, query: app_commands.Range[str, 1, 200]
    ) -> None:
        await h.mistakes_search(interaction, query)

    @mistakes.command(name="show", description="Show one mistake of the log")
    @app_commands.rename(mistake_id="id")
    @app_commands.describe(mistake_id="Mistake id, e.g. M-015")
    async def mistakes_show(
        interaction: Interaction, mistake_id: app_commands.Range[str, 1, 32]
    ) -> None:
        await h.mistakes_show(interaction, mistake_id)

    @app_commands.command(name="incidents", description="Recent incidents, of one run or of all")
    @app_commands.describe(run="Run id (default: every run)")
    @app_commands.autocomplete(run=runs_for("incidents"))
    async def incidents(interaction: Interaction, run: str | None = None) -> None:
        await h.incidents(interaction, run)

    @app_commands.command(
        name="diagnose", description="What is going wrong in a run's training, why, what to do"
    )
    @app_commands.describe(run="Run id")
    @app_commands.autocomplete(run=runs_for("diagnose"))
    async def diagnose(interaction: Interaction, run: str) -> None:
        await h.diagnose(interaction, run)

    @app_commands.command(name="heartbeat", description="Post a heartbeat now")
    @app_commands.guild_only()
    @app_commands.default_permissions()
    async def heartbeat(interaction: Interaction) -> None:
        await h.heartbeat(interaction)

    @app_commands.command(
        name="brief", description="What to know first: runs, incidents, failing checks, notes"
    )
    async def brief(interaction: Interaction) -> None:
        await h.brief(interaction)

    @app_commands.command(name="tell", description="Leave a note for whoever works at the terminal")
    @app_commands.describe(text="The note (read with `harness inbox`)")
    async def tell(interaction: Interaction, text: app_commands.Range[str, 1, 2000]) -> None:
        await h.tell(interaction, text)

    commands: list[app_commands.Command[Any, ..., None] | app_commands.Group] = [
        run,
        controls,
        mistakes,
        incidents,
        diagnose,
        heartbeat,
        brief,
        tell,
    ]
    for command in commands:
        tree.add_command(command)
    return tree
