"""The settings tree: defaults < harness.toml < environment < flags, each value's source,
secrets masked, every bad value one line naming where it came from and the key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from harness.cli.main import main
from harness.daemon.config import MASK, config_path, load_settings, state_dir
from harness.errors import ConfigError

SECRET = "tok-abcdefghijklmnop-very-secret"


def home_with(tmp_path: Path, toml: str) -> dict[str, str]:
    (tmp_path / "harness.toml").write_text(toml)
    return {"HARNESS_HOME": str(tmp_path)}


def test_defaults_without_a_file(tmp_path: Path) -> None:
    s = load_settings({"HARNESS_HOME": str(tmp_path)})
    assert s.heartbeat.interval_s == 300 and s.sidecar.port == 7777
    assert s.delivery().mode is None  # nothing configured: messages stay local
    assert s.paths.config_file is None and s.paths.db_path == tmp_path / "harness.db"
    assert s.sources["heartbeat.interval_s"] == "default"


def test_file_then_environment_then_flag(tmp_path: Path) -> None:
    env = home_with(tmp_path, "[heartbeat]\ninterval_s = 120\nmisfire_grace_s = 5\n")
    file_only = load_settings(env)
    assert file_only.heartbeat.interval_s == 120
    assert file_only.sources["heartbeat.interval_s"] == str(tmp_path / "harness.toml")

    env["HARNESS_HEARTBEAT__INTERVAL_S"] = "60"
    with_env = load_settings(env)
    assert with_env.heartbeat.interval_s == 60
    assert with_env.sources["heartbeat.interval_s"] == "env HARNESS_HEARTBEAT__INTERVAL_S"
    assert with_env.heartbeat.misfire_grace_s == 5  # untouched keys keep the file's value

    flagged = load_settings(env, flags={"heartbeat.interval_s": (30.0, "--heartbeat")})
    assert flagged.heartbeat.interval_s == 30
    assert flagged.sources["heartbeat.interval_s"] == "flag --heartbeat"


def test_environment_values_are_toml(tmp_path: Path) -> None:
    env = {
        "HARNESS_HOME": str(tmp_path),
        "HARNESS_DISCORD__ALLOW_USERS": "[1001, 1002]",
        "HARNESS_DISCORD__CHANNEL_ID": "123456",
        "HARNESS_SIDECAR__PORT": "7788",
    }
    s = load_settings(env)
    assert s.discord.allow_users == frozenset({1001, 1002})
    assert s.discord.channel_id == "123456" and s.sidecar.port == 7788


def test_secrets_only_from_the_environment_and_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = home_with(tmp_path, '[discord]\nchannel_id = "123"\n')
    s = load_settings({**env, "HARNESS_DISCORD_TOKEN": SECRET})
    assert isinstance(s.discord.token, SecretStr)
    assert s.delivery().mode == "channel"
    assert SECRET not in repr(s) and SECRET not in str(s.effective())
    with pytest.raises(ConfigError, match=r"secrets are read only from the environment"):
        load_settings(home_with(tmp_path, f'[discord]\ntoken = "{SECRET}"\n'))

    home_with(tmp_path, '[discord]\nchannel_id = "123"\n')
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    monkeypatch.setenv("HARNESS_DISCORD_TOKEN", SECRET)
    assert main(["config"]) == 0
    text = capsys.readouterr().out
    assert SECRET not in text
    assert f"discord.token = {MASK}" in text and "(env HARNESS_DISCORD_TOKEN)" in text
    assert "discord.channel_id = 123" in text and str(tmp_path / "harness.toml") in text
    assert main(["config", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["discord.token"] == {"value": MASK, "source": "env HARNESS_DISCORD_TOKEN"}
    assert data["discord.webhook_url"]["value"] is None
    assert data["heartbeat.interval_s"] == {"value": 300.0, "source": "default"}


def test_config_flag_shows_in_harness_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text("[sidecar]\nport = 7790\n")
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    assert main(["--config", str(other), "config", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sidecar.port"] == {"value": 7790, "source": str(other)}
    assert data["paths.config_file"] == {"value": str(other), "source": "flag --config"}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[heartbeat]\ninterval_s = 0\n", "heartbeat.interval_s: Input should be greater than 0"),
        ("[heartbeat]\ninterval_s = nan\n", "heartbeat.interval_s"),
        ("[heartbeat]\ninterval_s = 1e308\n", "heartbeat.interval_s"),
        ('[heartbeat]\ninterval_s = "5"\n', "heartbeat.interval_s"),
        ("[heartbeat]\ninterval = 5\n", "unknown key heartbeat.interval"),
        ("[sidecar]\nport = 70000\n", "sidecar.port"),
        ('[discord]\nchannel_id = "abc"\n', "discord.channel_id"),
        ('[discord]\nallow_users = ["bob"]\n', "discord.allow_users"),
        ('[discord]\napi_base = "ftp://x"\n', "discord.api_base"),
        ("heartbeat = 5\n", "[heartbeat] must be a table"),
        ("[heartbat]\n", "unknown section [heartbat]"),
        ("[discord\n", "not valid TOML"),
    ],
)
def test_bad_file_values_name_the_file_and_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(home_with(tmp_path, toml))
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert text.startswith(str(tmp_path / "harness.toml"))


def test_bad_environment_values_name_the_variable(tmp_path: Path) -> None:
    home = {"HARNESS_HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"^env HARNESS_SIDECAR__PORT: sidecar\.port"):
        load_settings({**home, "HARNESS_SIDECAR__PORT": "many"})
    with pytest.raises(ConfigError, match=r"HARNESS_HEARTBEAT__EVERY: no such setting"):
        load_settings({**home, "HARNESS_HEARTBEAT__EVERY": "5"})
    with pytest.raises(ConfigError, match=r"HARNESS_DISCORD_TOKEN"):
        load_settings({**home, "HARNESS_DISCORD__TOKEN": "x"})
    # HARNESS_* variables without a section (the job protocol's) are not settings
    load_settings({**home, "HARNESS_RUN_ID": "x", "HARNESS_DATA_DIR": "/tmp"})


def test_bot_allow_lists(tmp_path: Path) -> None:
    s = load_settings(
        home_with(
            tmp_path,
            '[discord]\nallow_users = [1001, "1002"]\nallow_roles = [2002]\nguild_id = 4004\n',
        )
    )
    cfg = s.bot()
    assert cfg.allow_users == frozenset({1001, 1002}) and cfg.allow_roles == frozenset({2002})
    assert cfg.read_users is None and cfg.guild_id == 4004


def test_where_things_live(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"HOME": str(home)}
    assert state_dir(env) == home / ".local" / "share" / "harness"
    assert state_dir({**env, "HARNESS_HOME": "/x/h", "XDG_DATA_HOME": "/y"}) == Path("/x/h")
    assert config_path(env, None) == home / ".config" / "harness" / "harness.toml"
    xdg = {**env, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_DATA_HOME": str(tmp_path / "d")}
    assert state_dir(xdg) == tmp_path / "d" / "harness"
    assert config_path(xdg, None) == tmp_path / "cfg" / "harness" / "harness.toml"
    # an older install kept harness.toml in the state dir: still read when no XDG file exists
    (tmp_path / "d" / "harness").mkdir(parents=True)
    (tmp_path / "d" / "harness" / "harness.toml").write_text("[sidecar]\nport = 7001\n")
    assert load_settings(xdg).sidecar.port == 7001
    (tmp_path / "cfg" / "harness").mkdir(parents=True)
    (tmp_path / "cfg" / "harness" / "harness.toml").write_text("[sidecar]\nport = 7002\n")
    assert load_settings(xdg).sidecar.port == 7002
    # HARNESS_HOME overrides all
    assert config_path({**xdg, "HARNESS_HOME": str(tmp_path / "h")}, None) == (
        tmp_path / "h" / "harness.toml"
    )
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(xdg, config=tmp_path / "nope.toml")


@pytest.mark.parametrize("source", ["file", "env", "flag"])
@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e308", "1e999"])
def test_non_finite_or_huge_intervals_are_one_line_from_every_source(
    tmp_path: Path, raw: str, source: str
) -> None:
    env = {"HARNESS_HOME": str(tmp_path)}
    flags = None
    if source == "file":
        env = home_with(tmp_path, f"[heartbeat]\ninterval_s = {raw}\n")
    elif source == "env":
        env["HARNESS_HEARTBEAT__INTERVAL_S"] = raw
    else:
        flags = {"heartbeat.interval_s": (float(raw), "--heartbeat")}
    with pytest.raises(ConfigError) as caught:
        load_settings(env, flags=flags)
    text = str(caught.value)
    where = {"file": "harness.toml", "env": "env HARNESS_HEARTBEAT__", "flag": "flag --heartbeat"}
    assert where[source] in text and "heartbeat.interval_s" in text and "\n" not in text


def test_a_config_nested_too_deeply_names_the_file_line_and_key(tmp_path: Path) -> None:
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(ConfigError) as caught:
        load_settings(
            home_with(
                tmp_path, f"[heartbeat]\ninterval_s = 60\n\n[discord]\nallow_users = {deep}\n"
            )
        )
    text = str(caught.value)
    assert text.startswith(f"{tmp_path / 'harness.toml'}: line 5: discord.allow_users: nested")
    assert "\n" not in text
    with pytest.raises(ConfigError, match=r"^environment HARNESS_DISCORD__ALLOW_USERS: nested"):
        load_settings({"HARNESS_HOME": str(tmp_path / "x"), "HARNESS_DISCORD__ALLOW_USERS": deep})
    # deep but parseable: the list is refused by its key, and the value shown is clipped
    with pytest.raises(ConfigError) as caught:
        load_settings(home_with(tmp_path, f"[discord]\nallow_users = {'[' * 300}{']' * 300}\n"))
    text = str(caught.value)
    assert "discord.allow_users: expected a list of Discord ids" in text and len(text) < 400


def test_a_config_that_is_a_pipe_is_refused_without_reading_it(tmp_path: Path) -> None:
    fifo = tmp_path / "harness.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"harness.toml: not a regular file"):
        load_settings({"HARNESS_HOME": str(tmp_path)}, config=fifo)


def test_the_chart_switches(tmp_path: Path) -> None:
    defaults = load_settings({"HARNESS_HOME": str(tmp_path)}).heartbeat
    assert defaults.charts is True and defaults.chart_timeout_s == 15
    env = home_with(tmp_path, "[heartbeat]\ncharts = false\nchart_every_s = 0\n")
    off = load_settings(env)
    assert off.heartbeat.charts is False and off.heartbeat.chart_every_s == 0
    assert off.sources["heartbeat.charts"] == str(tmp_path / "harness.toml")
    on = load_settings({**env, "HARNESS_HEARTBEAT__CHARTS": "true"})
    assert on.heartbeat.charts is True
    assert on.sources["heartbeat.charts"] == "env HARNESS_HEARTBEAT__CHARTS"
    with pytest.raises(ConfigError, match=r"heartbeat\.charts.*got 'no'") as caught:
        load_settings(home_with(tmp_path, '[heartbeat]\ncharts = "no"\n'))
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"heartbeat\.chart_timeout_s"):
        load_settings(home_with(tmp_path, "[heartbeat]\nchart_timeout_s = 0\n"))
