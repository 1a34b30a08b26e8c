"""Shared fixtures: an isolated state dir for every test that needs one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh HARNESS_HOME for this test (the CLI reads it through load_settings)."""
    state = tmp_path / "state"
    monkeypatch.setenv("HARNESS_HOME", str(state))
    monkeypatch.delenv("HARNESS_DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("HARNESS_DISCORD_WEBHOOK_URL", raising=False)
    yield state
