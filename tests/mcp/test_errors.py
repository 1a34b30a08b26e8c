"""A bug in a tool reaches the client as a generic tool error, never its text or a
traceback (the SDK's in-memory client against :func:`build_server`, in this process)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from harness.daemon.agentservice import AgentService
from harness.daemon.config import load_settings
from harness.daemon.mcp import build_server
from tests.mcp.conftest import text_of


class Broken(AgentService):
    def status(self, ref: str | None) -> list[dict[str, object]]:
        raise RuntimeError(f"secret detail of {ref}")


async def test_a_bug_is_a_generic_tool_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = load_settings({"HARNESS_HOME": str(tmp_path / "state")}).paths
    service = Broken(paths, port=7777)
    try:
        async with Client(build_server(service)) as client:
            crashed = await client.call_tool("status", {"run": "x"})
            refused = await client.call_tool("show_mistake", {"mistake_id": "M-999"})
    finally:
        service.close()
    assert crashed.is_error and text_of(crashed) == "Error executing tool status"
    assert "secret" not in text_of(crashed)
    assert "secret detail of x" in caplog.text  # the traceback stays on the server's side
    assert refused.is_error
    assert text_of(refused) == "no mistake M-999 (see `harness mistakes list`)"
