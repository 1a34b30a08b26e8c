"""The settings tree, built once in ``main()``: defaults < ``harness.toml`` < environment < flags.

Sections (each component is handed its own)::

    paths       where state lives (not from the file: HARNESS_HOME or the XDG dirs)
    heartbeat   interval_s, misfire_grace_s                      -> the scheduler
                charts, chart_timeout_s, chart_every_s            -> the charts
    sidecar     port, max_connections, idle_timeout_s,
                body_timeout_s                                    -> the HTTP API
    supervisor  store_give_up_s                                   -> the supervisor
    discord     channel_id, api_base, timeout_s                   -> delivery (sidecar)
                allow_users, allow_roles, read_users, read_roles,
                guild_id                                          -> the bot
                token, webhook_url (secrets: environment only)

Where things are (DESIGN section 10): the state dir is ``$HARNESS_HOME``, else
``$XDG_DATA_HOME/harness``, else ``~/.local/share/harness``. The config file is
``--config FILE``, else ``$HARNESS_HOME/harness.toml`` when HARNESS_HOME is set, else
``$XDG_CONFIG_HOME/harness/harness.toml`` (``~/.config/harness/harness.toml``); a
``harness.toml`` left in the state dir by an older version is still read when the XDG
one does not exist.

Any key can also come from the environment as ``HARNESS_<SECTION>__<KEY>`` (a TOML
value: ``HARNESS_HEARTBEAT__INTERVAL_S=60``, ``HARNESS_DISCORD__ALLOW_USERS='[1, 2]'``),
and the secrets only from ``HARNESS_DISCORD_TOKEN`` and ``HARNESS_DISCORD_WEBHOOK_URL``.
Every value remembers where it came from (``harness config`` shows it) and every error
is one line naming that place and the key. Secrets are ``SecretStr``: never in a repr.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from harness._atomic import read_text
from harness.core.spec import toml_loads
from harness.core.values import toml_value
from harness.errors import ConfigError
from memory import DB_NAME, clip
from sidecar import DEFAULT_API_BASE, ApiLimits, DiscordConfig

if TYPE_CHECKING:  # discord.py is imported only when the bot runs
    from bot import BotConfig

__all__ = [
    "DiscordSection",
    "HeartbeatSection",
    "Paths",
    "Settings",
    "SidecarSection",
    "SupervisorSection",
    "config_path",
    "load_settings",
    "state_dir",
]

ENV_PREFIX = "HARNESS_"
SECRET_ENV = {"HARNESS_DISCORD_TOKEN": "token", "HARNESS_DISCORD_WEBHOOK_URL": "webhook_url"}
MASK = "********"


def state_dir(environ: Mapping[str, str]) -> Path:
    """``$HARNESS_HOME``, else ``$XDG_DATA_HOME/harness``, else ``~/.local/share/harness``."""
    if home := environ.get("HARNESS_HOME"):
        return Path(home).expanduser()
    if xdg := environ.get("XDG_DATA_HOME"):
        return Path(xdg).expanduser() / "harness"
    return _user_home(environ) / ".local" / "share" / "harness"


def _user_home(environ: Mapping[str, str]) -> Path:
    return Path(environ["HOME"]) if environ.get("HOME") else Path.home()


def config_path(environ: Mapping[str, str], explicit: str | os.PathLike[str] | None) -> Path:
    """The config file to read (it may not exist; see the module docstring)."""
    if explicit:
        return Path(explicit).expanduser()
    if home := environ.get("HARNESS_HOME"):
        return Path(home).expanduser() / "harness.toml"
    if xdg := environ.get("XDG_CONFIG_HOME"):
        xdg_file = Path(xdg).expanduser() / "harness" / "harness.toml"
    else:
        xdg_file = _user_home(environ) / ".config" / "harness" / "harness.toml"
    legacy = state_dir(environ) / "harness.toml"
    return legacy if not xdg_file.exists() and legacy.is_file() else xdg_file


# -- sections ---------------------------------------------------------------------------------


class _Section(BaseModel):
    # strict: `port = "7777"` in a file is a mistake, not a number (an int is still fine
    # where a float is wanted); no inf/nan: `interval_s = nan` is refused here.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Paths(BaseModel):
    """Where this installation keeps its state; the supervisor gets paths from here."""

    model_config = ConfigDict(frozen=True)

    home: Path
    config_file: Path | None = None  # the file that was read; None when there was none

    @property
    def db_path(self) -> Path:
        return self.home / DB_NAME

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def presets_dir(self) -> Path:
        return self.home / "presets"


class HeartbeatSection(_Section):
    interval_s: float = Field(300.0, gt=0, le=7 * 86400)
    misfire_grace_s: float = Field(60.0, ge=0, le=86400)
    #: heartbeats and end-of-run alerts carry a PNG chart per run (docs/charts.md)
    charts: bool = True
    #: a chart not drawn within this long is left out (the text goes without it)
    chart_timeout_s: float = Field(15.0, gt=0, le=600)
    #: a run's chart is drawn at most this often; heartbeats between reuse the last one
    chart_every_s: float = Field(60.0, ge=0, le=86400)


class SidecarSection(_Section):
    port: int = Field(7777, ge=0, le=65535)
    max_connections: int = Field(256, ge=1, le=65536)  # past it, the oldest idle one goes
    idle_timeout_s: float = Field(15.0, gt=0, le=3600)  # a connection that sends nothing
    body_timeout_s: float = Field(30.0, gt=0, le=3600)  # a body that never finishes: 408

    def limits(self) -> ApiLimits:
        return ApiLimits(
            max_connections=self.max_connections,
            idle_timeout_s=self.idle_timeout_s,
            body_timeout_s=self.body_timeout_s,
        )


class SupervisorSection(_Section):
    #: the store failing this long, with no success between, stops the job gracefully
    store_give_up_s: float = Field(60.0, gt=0, le=86400)


def _snowflakes(value: Any, *, key: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, list | tuple | set | frozenset) or not all(
        isinstance(v, int | str) and not isinstance(v, bool) and str(v).isdigit() for v in value
    ):
        raise ValueError(f"expected a list of Discord ids for {key}")
    return frozenset(int(v) for v in value)


class DiscordSection(_Section):
    channel_id: str | None = None
    api_base: str = DEFAULT_API_BASE
    timeout_s: float = Field(10.0, ge=0.1, le=600)
    allow_users: frozenset[int] = frozenset()
    allow_roles: frozenset[int] = frozenset()
    read_users: frozenset[int] | None = None
    read_roles: frozenset[int] | None = None
    guild_id: int | None = Field(None, gt=0)
    token: SecretStr | None = None  # HARNESS_DISCORD_TOKEN only
    webhook_url: SecretStr | None = None  # HARNESS_DISCORD_WEBHOOK_URL only

    @field_validator("channel_id", mode="before")
    @classmethod
    def _channel_snowflake(cls, v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | str) or not str(v).isdigit():
            raise ValueError("expected a Discord channel id (digits)")
        return str(v)

    @field_validator("allow_users", "allow_roles", "read_users", "read_roles", mode="before")
    @classmethod
    def _id_lists(cls, v: Any) -> Any:
        return _snowflakes(v, key="this key")

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("expected an http(s) URL")
        return v

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("expected an http(s) URL")
        return v

    @field_validator("token", "webhook_url", mode="before")
    @classmethod
    def _secret(cls, v: Any) -> Any:
        return SecretStr(v) if isinstance(v, str) else v


_SECTIONS: dict[str, type[_Section]] = {
    "heartbeat": HeartbeatSection,
    "sidecar": SidecarSection,
    "supervisor": SupervisorSection,
    "discord": DiscordSection,
}
_SECRET_KEYS = {("discord", "token"), ("discord", "webhook_url")}


class Settings(BaseModel):
    """The whole tree. Components get a section (or a path), never all of it."""

    model_config = ConfigDict(frozen=True)

    paths: Paths
    heartbeat: HeartbeatSection = HeartbeatSection()
    sidecar: SidecarSection = SidecarSection()
    supervisor: SupervisorSection = SupervisorSection()
    discord: DiscordSection = DiscordSection()
    #: dotted key -> where its value came from: "default", the file, "env NAME", "flag --x"
    sources: dict[str, str] = Field(default_factory=dict)

    def delivery(self) -> DiscordConfig:
        """The outbox worker's target: a channel (bot token + channel id) or a webhook."""
        d = self.discord
        return DiscordConfig(
            bot_token=d.token if d.channel_id else None,
            channel_id=d.channel_id,
            webhook_url=d.webhook_url,
            api_base=d.api_base,
            timeout_s=d.timeout_s,
        )

    def bot(self) -> BotConfig:
        """The bot's allow-lists and scope."""
        from bot import BotConfig

        d = self.discord
        return BotConfig(
            allow_users=d.allow_users,
            allow_roles=d.allow_roles,
            read_users=d.read_users,
            read_roles=d.read_roles,
            guild_id=d.guild_id,
        )

    def effective(self) -> list[tuple[str, object, str]]:
        """(dotted key, value with secrets masked, source) for every setting."""
        config_file = str(self.paths.config_file) if self.paths.config_file else None
        rows: list[tuple[str, object, str]] = [
            ("paths.home", str(self.paths.home), self.sources.get("paths.home", "default")),
            ("paths.config_file", config_file, self.sources.get("paths.config_file", "default")),
        ]
        for name in _SECTIONS:
            section: BaseModel = getattr(self, name)
            for key in type(section).model_fields:
                value = getattr(section, key)
                if isinstance(value, SecretStr):
                    value = MASK
                elif isinstance(value, frozenset):
                    value = sorted(value)
                rows.append((f"{name}.{key}", value, self.sources.get(f"{name}.{key}", "default")))
        return rows


# -- loading ----------------------------------------------------------------------------------


def _read_file(path: Path) -> dict[str, Any]:
    text = read_text(path, kind="config file", error=ConfigError)
    return toml_loads(text, source=str(path), error=ConfigError)


def _layer_from_file(path: Path, data: Mapping[str, Any]) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for name, table in data.items():
        if name not in _SECTIONS:
            known = ", ".join(f"[{s}]" for s in _SECTIONS)
            raise ConfigError(f"{path}: unknown section [{name}] (known: {known})")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        for key, value in table.items():
            if (name, key) in _SECRET_KEYS:
                raise ConfigError(
                    f"{path}: {name}.{key}: secrets are read only from the environment "
                    f"({_secret_var(key)})"
                )
            if key not in _SECTIONS[name].model_fields:
                raise ConfigError(f"{path}: unknown key {name}.{key}")
            out[(name, key)] = value
    return out


def _layer_from_env(environ: Mapping[str, str]) -> dict[tuple[str, str], tuple[Any, str]]:
    out: dict[tuple[str, str], tuple[Any, str]] = {}
    for var, raw in environ.items():
        if var in SECRET_ENV:
            if raw.strip():
                out[("discord", SECRET_ENV[var])] = (raw.strip(), f"env {var}")
            continue
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        name, _, key = var[len(ENV_PREFIX) :].lower().partition("__")
        if name not in _SECTIONS or key not in _SECTIONS[name].model_fields:
            raise ConfigError(f"environment {var}: no such setting {name}.{key}")
        if (name, key) in _SECRET_KEYS:
            raise ConfigError(f"environment {var}: set the secret as {_secret_var(key)}")
        try:
            value = toml_value(raw)
        except RecursionError:
            raise ConfigError(f"environment {var}: nested too deeply to read") from None
        out[(name, key)] = (value, f"env {var}")
    return out


def _secret_var(key: str) -> str:
    return next(e for e, k in SECRET_ENV.items() if k == key)


def _describe(err: Any, name: str, sources: Mapping[str, str]) -> str:
    key = str(err["loc"][0]) if err["loc"] else ""
    dotted = f"{name}.{key}" if key else name
    where = sources.get(dotted, "default")
    msg = str(err["msg"]).removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if (name, key) in _SECRET_KEYS else f" (got {clip(repr(got), 80)})"
    return f"{where}: {dotted}: {msg}{shown}"


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    config: str | os.PathLike[str] | None = None,
    flags: Mapping[str, tuple[Any, str]] | None = None,
) -> Settings:
    """Build the tree: defaults, then the file, then ``environ``, then ``flags``.

    ``flags`` maps dotted keys to (value, flag name), e.g.
    ``{"heartbeat.interval_s": (30.0, "--heartbeat")}``. Raises ConfigError (one line).
    """
    env = os.environ if environ is None else environ
    home = state_dir(env)
    path = config_path(env, config)
    sources: dict[str, str] = {
        "paths.home": "env HARNESS_HOME"
        if env.get("HARNESS_HOME")
        else ("env XDG_DATA_HOME" if env.get("XDG_DATA_HOME") else "default")
    }
    sources.update(
        {f"{name}.{key}": "default" for name, m in _SECTIONS.items() for key in m.model_fields}
    )
    sources["paths.config_file"] = "default"
    values: dict[tuple[str, str], Any] = {}
    if path.is_file() or (path.exists() and config):
        for k, v in _layer_from_file(path, _read_file(path)).items():
            values[k], sources[".".join(k)] = v, str(path)
        sources["paths.config_file"] = "flag --config" if config else "default"
        config_file: Path | None = path
    elif config:
        raise ConfigError(f"{path}: config file not found")
    else:
        config_file = None
    for k, (v, where) in _layer_from_env(env).items():
        values[k], sources[".".join(k)] = v, where
    for dotted, (v, flag) in (flags or {}).items():
        name, _, key = dotted.partition(".")
        if name not in _SECTIONS or key not in _SECTIONS[name].model_fields:
            raise ValueError(f"no such setting {dotted!r}")  # a programming error
        values[(name, key)], sources[dotted] = v, f"flag {flag}"
    sections: dict[str, Any] = {}
    for name, model in _SECTIONS.items():
        data = {key: v for (n, key), v in values.items() if n == name}
        try:
            sections[name] = model.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc.errors()[0], name, sources)) from None
    return Settings(paths=Paths(home=home, config_file=config_file), sources=sources, **sections)
