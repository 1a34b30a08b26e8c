"""Settings, built once in ``main()`` from the environment and ``harness.toml``.

Secrets (Discord token, webhook URL) come only from the environment and are kept as
:class:`pydantic.SecretStr`, so they never show in a repr or a log line.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from memory import DB_NAME, state_dir

__all__ = ["ConfigError", "Settings", "load_settings"]


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the file and key."""


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    config_path: Path | None = None
    discord_token: SecretStr | None = None
    discord_webhook_url: SecretStr | None = None
    raw: Mapping[str, object] = field(default_factory=dict)  # the parsed harness.toml

    @property
    def db_path(self) -> Path:
        return self.state_dir / DB_NAME

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def presets_dir(self) -> Path:
        return self.state_dir / "presets"


def _secret(environ: Mapping[str, str], key: str) -> SecretStr | None:
    value = environ.get(key, "").strip()
    return SecretStr(value) if value else None


def load_settings(
    environ: Mapping[str, str] | None = None, *, config: str | Path | None = None
) -> Settings:
    """Resolve the state dir and read ``harness.toml`` (from ``config`` or the state dir)."""
    env = os.environ if environ is None else environ
    home = state_dir(env)
    path = Path(config).expanduser() if config else home / "harness.toml"
    raw: dict[str, object] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    elif config:
        raise ConfigError(f"{path}: config file not found")
    return Settings(
        state_dir=home,
        config_path=path if path.exists() else None,
        discord_token=_secret(env, "HARNESS_DISCORD_TOKEN"),
        discord_webhook_url=_secret(env, "HARNESS_DISCORD_WEBHOOK_URL"),
        raw=raw,
    )
