"""`harness mcp` as a coding agent meets it: a real subprocess driven by the SDK's own stdio
client, with its own HARNESS_HOME; a real `harness serve` where a test needs the daemon.

Every process a test starts carries the reaper's token in its environment (the e2e
fixtures' :class:`tests.e2e.conftest.Reaper`); whatever is left is killed at teardown.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent

from tests.e2e.conftest import TOKEN_ENV, Reaper

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def text_of(result: CallToolResult) -> str:
    """The text of a tool result (our tools answer one text block)."""
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


def data_of(result: CallToolResult) -> Any:
    """The JSON a tool answered; fails with the error text when it was a tool error."""
    assert not result.is_error, text_of(result)
    return json.loads(text_of(result))


@dataclass
class Home:
    """A HARNESS_HOME whose config puts the API on a free port; no Discord secrets."""

    path: Path
    port: int
    env: dict[str, str]

    def harness(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @asynccontextmanager
    async def mcp(self) -> AsyncIterator[ClientSession]:
        """`harness mcp` spawned by the SDK's stdio client, initialised."""
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "harness", "mcp"], env=self.env, cwd=ROOT
        )
        with (self.path / "mcp.stderr").open("a") as errlog:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                yield session


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    r = Reaper(uuid.uuid4().hex)
    try:
        yield r
    finally:
        r.cleanup()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The echo task's data, made once for the session (not in the user's cache)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def home(tmp_path: Path, reaper: Reaper, data_dir: Path) -> Home:
    path = tmp_path / "state"
    path.mkdir()
    port = free_port()
    (path / "harness.toml").write_text(f"[heartbeat]\ninterval_s = 300\n[sidecar]\nport = {port}\n")
    env = {k: v for k, v in reaper.env().items() if not k.startswith("HARNESS_")}
    env.update(HARNESS_HOME=str(path), HARNESS_DATA_DIR=str(data_dir))
    assert env[TOKEN_ENV] == reaper.token  # what the reaper finds the processes by
    return Home(path, port, env)


@pytest.fixture
def daemon(home: Home, reaper: Reaper) -> Iterator[subprocess.Popen[bytes]]:
    """`harness serve` for ``home``, stopped with SIGTERM at teardown."""
    log = (home.path / "serve.log").open("ab")
    proc = reaper.popen(
        [sys.executable, "-m", "harness", "serve"],
        cwd=ROOT,
        env=home.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 60
    while not (home.path / "serve.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"harness serve did not start:\n{_log(home)}")
        time.sleep(0.1)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _log(home: Home) -> str:
    return (home.path / "serve.log").read_text(errors="replace")
