"""harness.toml sections for the daemon: heartbeat, sidecar, discord (and the bot's lists)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from harness._config import ConfigError, load_settings
from harness._daemon import bot_config
from harness._service import service_config


def settings_with(tmp_path: Path, toml: str, **env: str):  # type: ignore[no-untyped-def]
    (tmp_path / "harness.toml").write_text(toml)
    return load_settings({"HARNESS_HOME": str(tmp_path), **env})


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = service_config(load_settings({"HARNESS_HOME": str(tmp_path)}))
    assert cfg.heartbeat_s == 300 and cfg.api_port == 7777
    assert cfg.discord.mode is None  # nothing configured: messages stay local


def test_channel_and_webhook_modes(tmp_path: Path) -> None:
    s = settings_with(
        tmp_path,
        '[discord]\nchannel_id = "123"\napi_base = "http://127.0.0.1:9/api/v10"\n',
        HARNESS_DISCORD_TOKEN="tok-abcdefghijklmnop",
    )
    cfg = service_config(s)
    assert cfg.discord.mode == "channel"
    assert "tok-abc" not in repr(cfg) and "tok-abc" not in repr(s)
    s = settings_with(tmp_path, "", HARNESS_DISCORD_WEBHOOK_URL="https://example.invalid/hook")
    assert service_config(s).discord.mode == "webhook"
    assert isinstance(s.discord_webhook_url, SecretStr)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[heartbeat]\ninterval_s = 0\n", "heartbeat.interval_s"),
        ("[heartbeat]\ninterval = 5\n", "unknown key heartbeat.interval"),
        ("[sidecar]\nport = 70000\n", "sidecar.port"),
        ('[discord]\nchannel_id = "abc"\n', "channel_id"),
        ("heartbeat = 5\n", "[heartbeat] must be a table"),
        ("[discord\n", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        service_config(settings_with(tmp_path, toml, HARNESS_DISCORD_TOKEN="t" * 20))


def test_bot_allow_lists(tmp_path: Path) -> None:
    s = settings_with(
        tmp_path,
        '[discord]\nallow_users = [1001, "1002"]\nallow_roles = [2002]\nguild_id = 4004\n',
    )
    cfg = bot_config(s)
    assert cfg.allow_users == frozenset({1001, 1002}) and cfg.allow_roles == frozenset({2002})
    assert cfg.read_users is None and cfg.guild_id == 4004
    with pytest.raises(ConfigError, match=r"discord\.allow_users"):
        bot_config(settings_with(tmp_path, '[discord]\nallow_users = ["bob"]\n'))
