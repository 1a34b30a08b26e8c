"""Shared fixtures: an isolated state dir for every test that needs one; reports that
pytest-xdist can carry."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest


def _utf8(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, None]:
    """Captured output may hold lone surrogates (the hostile-text tests log them): shown
    escaped, so pytest-xdist can send the report from its worker (UTF-8 only)."""
    outcome = yield
    report = outcome.get_result()
    report.sections = [(title, _utf8(text)) for title, text in report.sections]
    if isinstance(report.longrepr, str):
        report.longrepr = _utf8(report.longrepr)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh HARNESS_HOME for this test (the CLI reads it through load_settings)."""
    state = tmp_path / "state"
    monkeypatch.setenv("HARNESS_HOME", str(state))
    monkeypatch.delenv("HARNESS_DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("HARNESS_DISCORD_WEBHOOK_URL", raising=False)
    yield state
