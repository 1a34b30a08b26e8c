"""Fakes for the bot tests: a recording service and Discord interactions specified against
discord.py (``create_autospec(..., spec_set=True)``, so a misspelled attribute fails)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import create_autospec

import discord
import pytest

from bot import (
    BotConfig,
    BriefView,
    CommandError,
    DiagnosisView,
    HeartbeatView,
    IncidentView,
    MistakeView,
    RunView,
    SearchHitView,
    build_tree,
)

ADMIN = 1001  # on allow_users
OPERATOR_ROLE = 2002  # on allow_roles
STRANGER = 3003
GUILD = 4004


def run_view(run_id: str = "echo-001", status: str = "running", **kw: Any) -> RunView:
    base: dict[str, Any] = {
        "id": run_id,
        "name": "echo-small",
        "status": status,
        "summary": "",
        "line": "step 120/200 (60%) · 3.1 it/s · ETA 26s · loss 0.41↓",
        "started_at": 1_700_000_000.0,
        "controls": {"lr": 0.001},
    }
    base.update(kw)
    return RunView(**base)


@dataclass
class FakeService:
    """Implements HarnessService; records every call (also into ``events``) and returns views.

    ``fail[method] = exc`` makes that method raise ``exc``.
    """

    events: list[str] = field(default_factory=list)
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    fail: dict[str, BaseException] = field(default_factory=dict)
    preset_names: list[str] = field(default_factory=lambda: ["echo", "echo-small", "not", "shift"])
    run_ids: list[str] = field(default_factory=lambda: ["echo-001", "shift-002"])

    def _record(self, method: str, *args: Any, **kwargs: Any) -> None:
        self.events.append(f"service.{method}")
        self.calls.append((method, args, kwargs))
        if method in self.fail:
            raise self.fail[method]

    async def presets(self) -> list[str]:
        self._record("presets")
        return list(self.preset_names)

    async def active_run_ids(self) -> list[str]:
        self._record("active_run_ids")
        return list(self.run_ids)

    async def start_run(self, preset: str, overrides: dict[str, str], *, by: str) -> RunView:
        self._record("start_run", preset, overrides, by=by)
        return run_view("echo-003", "starting", name=preset, line="", controls={})

    async def run_status(self, run: str | None) -> list[RunView]:
        self._record("run_status", run)
        if run is None:
            return [run_view("echo-001"), run_view("shift-002", name="shift")]
        if run not in self.run_ids:
            raise CommandError(f"no run {run!r}")
        return [run_view(run)]

    async def list_runs(self, limit: int = 10) -> list[RunView]:
        self._record("list_runs", limit)
        return [
            run_view("echo-001"),
            run_view("not-000", "succeeded", name="not", summary="ok: avg_bit_acc 0.97 >= 0.93"),
        ]

    async def abort_run(self, run: str, reason: str, *, by: str) -> RunView:
        self._record("abort_run", run, reason, by=by)
        return run_view(run, "aborting")

    async def set_control(self, run: str, key: str, value: str, *, by: str) -> dict[str, Any]:
        self._record("set_control", run, key, value, by=by)
        return {"lr": float(value), "eval_every": 50}

    async def search_mistakes(self, query: str, limit: int = 8) -> list[SearchHitView]:
        self._record("search_mistakes", query, limit)
        return [
            SearchHitView("mistake", "M-015", "GPU idle at 5 %", "part of the step ran on the CPU"),
            SearchHitView("incident", "17", "utilisation abort", "GPU 4 % over 30 s"),
        ]

    async def show_mistake(self, mistake_id: str) -> MistakeView:
        self._record("show_mistake", mistake_id)
        if mistake_id != "M-015":
            raise CommandError(f"no mistake {mistake_id}")
        return MistakeView(
            "M-015",
            "GPU idle at 5 %",
            "performance",
            [("Symptom", "5 % utilisation for hours"), ("Fix", "move the loss to the GPU")],
        )

    async def diagnose(self, run: str) -> DiagnosisView:
        self._record("diagnose", run)
        if run == "nope":
            raise CommandError(f"no run {run!r}")
        finding = {
            "symptom": "divergence",
            "step": 612,
            "severity": "critical",
            "evidence": ["smoothed loss fell from 2.1 to 0.38, then rose to 1.3"],
            "mistakes": ["M-049"],
            "causes": [
                {
                    "rank": 1,
                    "cause": "lr_change",
                    "confidence": 0.9,
                    "evidence": ["lr changed from 0.001 to 0.01 (10x) at step 600"],
                    "fix": "set lr back to 0.001, then resume from the checkpoint at step 500",
                },
                {"rank": 2, "cause": "unknown", "confidence": 0.1, "evidence": [], "fix": "-"},
            ],
        }
        wins = ["Set lr back to 0.001, then resume from the checkpoint at step 500"]
        return DiagnosisView(run, "unhealthy", [finding], wins, 1200)

    async def incidents(self, run: str | None, limit: int = 10) -> list[IncidentView]:
        self._record("incidents", run, limit)
        return [
            IncidentView(
                17,
                1_700_000_100.0,
                "echo-001",
                "device_util",
                "M-015",
                "abort",
                "GPU 4 % over 30 s",
                False,
            ),
            IncidentView(
                16,
                1_700_000_000.0,
                "echo-000",
                "stall",
                "M-037",
                "warn",
                "no metrics for 130 s",
                True,
            ),
        ]

    async def heartbeat(self) -> HeartbeatView:
        self._record("heartbeat")
        embed = {
            "title": "Harness heartbeat · box",
            "description": "1 active run(s) · RAM free 12.0 GB",
            "color": 0x2ECC71,
            "fields": [{"name": "echo-small echo-001", "value": "step 120/200", "inline": False}],
        }
        return HeartbeatView("ok", "heartbeat [ok]\necho-small step 120/200", embed)

    async def brief(self) -> BriefView:
        self._record("brief")
        return BriefView(
            "# brief",
            {"Active runs": ["echo-001 step 120/200"], "Standing orders": [], "Inbox": ["#3 hi"]},
        )

    async def tell(self, text: str, *, author: str) -> int:
        self._record("tell", text, author=author)
        return 42


@dataclass
class FakeInteraction:
    """A specified fake of discord.Interaction plus the order of what happened to it."""

    interaction: Any
    events: list[str]

    @property
    def followup_send(self) -> Any:
        return self.interaction.followup.send

    def embed(self) -> discord.Embed:
        self.followup_send.assert_awaited_once()
        embed = self.followup_send.await_args.kwargs["embed"]
        assert isinstance(embed, discord.Embed)
        return embed

    def ephemeral_text(self) -> str:
        """The one ephemeral line the user got, however it was sent."""
        i = self.interaction
        if i.response.send_message.await_count:
            call = i.response.send_message.await_args
        else:
            call = i.followup.send.await_args
        assert call is not None, "nothing was sent"
        assert call.kwargs.get("ephemeral") is True
        text = call.args[0]
        assert isinstance(text, str) and "\n" not in text
        return text


def _recording(events: list[str], name: str) -> Callable[..., None]:
    def side_effect(*args: Any, **kwargs: Any) -> None:
        events.append(name)

    return side_effect


def make_interaction(
    events: list[str],
    *,
    user_id: int = ADMIN,
    role_ids: tuple[int, ...] = (),
    guild_id: int | None = GUILD,
    member: bool = True,
) -> FakeInteraction:
    i = create_autospec(discord.Interaction, spec_set=True, instance=True)
    i.response = create_autospec(discord.InteractionResponse, spec_set=True, instance=True)
    i.followup = create_autospec(discord.Webhook, spec_set=True, instance=True)
    i.response.defer.side_effect = _recording(events, "defer")
    i.response.send_message.side_effect = _recording(events, "send_message")
    i.response.is_done.return_value = False
    i.followup.send.side_effect = _recording(events, "followup")
    i.delete_original_response.side_effect = _recording(events, "delete_original")
    user = create_autospec(discord.Member if member else discord.User, spec_set=True, instance=True)
    user.id = user_id
    user.name = "ada"
    if member:
        roles = []
        for rid in role_ids:
            role = create_autospec(discord.Role, spec_set=True, instance=True)
            role.id = rid
            roles.append(role)
        user.roles = roles
    i.user = user
    i.guild_id = guild_id
    return FakeInteraction(i, events)


@pytest.fixture
def config() -> BotConfig:
    return BotConfig(frozenset({ADMIN}), frozenset({OPERATOR_ROLE}), guild_id=GUILD)


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def tree(service: FakeService, config: BotConfig) -> discord.app_commands.CommandTree[Any]:
    client = discord.Client(intents=discord.Intents(guilds=True))
    return build_tree(client, service, config)


def command(tree: discord.app_commands.CommandTree[Any], path: str) -> Any:
    """The command at ``"run start"``-style ``path``."""
    first, _, rest = path.partition(" ")
    cmd: Any = tree.get_command(first)
    assert cmd is not None, path
    if rest:
        cmd = cmd.get_command(rest)
        assert cmd is not None, path
    return cmd
