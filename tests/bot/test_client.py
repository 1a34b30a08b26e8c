"""The client against a local fake of Discord's REST API: explicit sync, refused tokens,
running until cancelled. Route.BASE is pointed at 127.0.0.1, nothing leaves the machine."""

from __future__ import annotations

import ast
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import pytest
import yarl
from aiohttp import web
from discord.gateway import DiscordWebSocket

import bot
from bot import BotConfig, BotError, HarnessClient, run_bot, sync_commands

from .conftest import FakeService

TOKEN = "good-token"
APP_ID = 5150
GUILD = 4004


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py decodes a body only when the content type is exactly application/json
    headers = {"Content-Type": "application/json"}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=headers)


@dataclass
class FakeApi:
    requests: list[tuple[str, str]] = field(default_factory=list)
    synced: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/api/v10/users/@me", self._me)
        app.router.add_get("/api/v10/oauth2/applications/@me", self._app_info)
        app.router.add_put("/api/v10/applications/{app}/commands", self._sync)
        app.router.add_put("/api/v10/applications/{app}/guilds/{guild}/commands", self._sync)
        # a gateway nobody listens on: the client keeps retrying until it is cancelled
        app.router.add_get("/api/v10/gateway/bot", self._gateway)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bot {TOKEN}":
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def _me(self, request: web.Request) -> web.Response:
        user = {"id": str(APP_ID), "username": "harness", "discriminator": "0", "avatar": None}
        return _json({**user, "bot": True, "global_name": None})

    async def _app_info(self, request: web.Request) -> web.Response:
        owner = {"id": "1", "username": "ada", "discriminator": "0", "avatar": None}
        return _json(
            {
                "id": str(APP_ID),
                "name": "harness",
                "description": "",
                "icon": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": owner,
                "verify_key": "k",
                "flags": 0,
            }
        )

    async def _sync(self, request: web.Request) -> web.Response:
        payload = await request.json()
        key = request.match_info.get("guild", "global")
        self.synced[key] = payload
        out = [
            {**c, "id": str(9000 + i), "application_id": str(APP_ID), "version": "1"}
            for i, c in enumerate(payload)
        ]
        return _json(out)

    async def _gateway(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return _json({"url": "ws://127.0.0.1:9", "shards": 1, "session_start_limit": limit})


@pytest.fixture
async def fake_api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeApi]:
    api = FakeApi()
    runner = web.AppRunner(api.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{port}/api/v10")
    try:
        yield api
    finally:
        await runner.cleanup()


async def test_sync_to_a_guild_registers_every_command_there(fake_api: FakeApi) -> None:
    names = await sync_commands(TOKEN, guild_id=GUILD)
    assert names == [
        "brief",
        "controls",
        "diagnose",
        "heartbeat",
        "incidents",
        "mistakes",
        "run",
        "tell",
    ]
    assert list(fake_api.synced) == [str(GUILD)]
    sent = {c["name"]: c for c in fake_api.synced[str(GUILD)]}
    assert sorted(o["name"] for o in sent["run"]["options"]) == ["abort", "list", "start", "status"]


async def test_sync_globally(fake_api: FakeApi) -> None:
    await sync_commands(TOKEN)
    assert list(fake_api.synced) == ["global"]
    assert len(fake_api.synced["global"]) == 8


async def test_a_refused_token_is_our_error_and_syncs_nothing(fake_api: FakeApi) -> None:
    with pytest.raises(BotError, match="refused the bot token") as caught:
        await sync_commands("wrong-token")
    assert "wrong-token" not in str(caught.value)
    assert fake_api.synced == {}


async def test_run_bot_with_a_refused_token_raises_bot_error(fake_api: FakeApi) -> None:
    with pytest.raises(BotError, match="refused the bot token"):
        await run_bot(FakeService(), "wrong-token", BotConfig(frozenset(), frozenset()))


async def test_run_bot_retries_until_cancelled_and_never_syncs(
    fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # the gateway refuses connections (nothing listens on 127.0.0.1:9): the bot logs,
    # retries on a fresh client, and keeps at it until the daemon cancels it
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL("ws://127.0.0.1:9/"))
    task = asyncio.create_task(
        run_bot(FakeService(), TOKEN, BotConfig(frozenset({1}), frozenset()), retry_s=0.05)
    )

    def logins() -> int:
        return fake_api.requests.count(("GET", "/api/v10/users/@me"))

    for _ in range(300):
        if logins() >= 2:
            break
        await asyncio.sleep(0.02)
    assert logins() >= 2, fake_api.requests
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake_api.synced == {}
    stops = [r for r in caplog.records if r.name == "harness.bot" and "retrying in" in r.message]
    assert stops and all(TOKEN not in r.getMessage() for r in caplog.records)


async def test_the_client_carries_the_harness_tree() -> None:
    client = HarnessClient(FakeService(), BotConfig(frozenset(), frozenset()))
    assert isinstance(client.tree, bot.HarnessTree)
    assert client.tree.get_command("heartbeat") is not None
    assert client.intents.guilds and not client.intents.members  # no privileged intents
    await client.close()


def test_public_api() -> None:
    assert sorted(bot.__all__) == sorted(set(bot.__all__))
    for name in bot.__all__:
        assert getattr(bot, name) is not None
    assert {"BotConfig", "HarnessService", "CommandError", "run_bot", "sync_commands"} <= set(
        bot.__all__
    )


def test_bot_imports_only_stdlib_and_discord() -> None:
    for path in Path(bot.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            foreign = roots - {"discord", "__future__"} - sys.stdlib_module_names
            assert not foreign, (path.name, foreign)
