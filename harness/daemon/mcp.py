"""``harness mcp``: the Model Context Protocol over stdio, for coding agents (docs/mcp.md).

The tools and the ``harness://brief`` resource are a thin layer over
:class:`harness.daemon.agentservice.AgentService`, which does the work (in a thread, as
it blocks). A refusal (an unknown preset, ``lr=abc``, a key off the allow-list, an unknown
run, no daemon) is a tool error (``isError``) whose text is the one-line message; so are
arguments that fail the tool's schema. A bug is logged with its traceback on stderr and
the client reads only ``Error executing tool <name>``. Nothing but the protocol is written
to stdout: the SDK diverts file descriptor 1 while it serves, and logs go to stderr.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp.types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import Field, ValidationError

from harness._version import __version__
from harness.daemon.agentservice import REFUSALS, AgentService
from harness.daemon.config import Paths
from memory import one_line

__all__ = ["BRIEF_URI", "build_server", "serve_mcp"]

BRIEF_URI = "harness://brief"
INSTRUCTIONS = (
    "Harness supervises training runs. Read the brief (harness://brief or the brief tool) "
    "before touching anything. Start runs only from presets with allow-listed overrides; "
    "look before you steer: status, diagnose, incidents, search_mistakes."
)
log = logging.getLogger("harness.mcp")
T = TypeVar("T")

READ = ToolAnnotations(read_only_hint=True)
CHANGE = ToolAnnotations(read_only_hint=False, destructive_hint=False)
STOP = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True)

RunRef = Annotated[str, Field(description="run id, a unique prefix of it, or 'last'")]
Limit = Annotated[int, Field(description="at most this many (1-100)")]
Value = str | int | float | bool


def _bad_arguments(exc: ValidationError) -> str:
    """``bad arguments: preset: Field required`` (pydantic's errors on one line)."""
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
        for err in exc.errors()
    ]
    return one_line(f"bad arguments: {'; '.join(parts)}")


class _Server(MCPServer[Any]):
    """Tool errors carry our one-line message as it is, without the SDK's prefix."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise  # a bug: the SDK logs its traceback on stderr and answers a generic line
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                message = _bad_arguments(cause)
            elif isinstance(cause, ToolError):  # ours: a refusal raised by call() below
                message = str(cause)
            else:  # the SDK's own: "Unknown tool: x"
                message = one_line(str(exc))
            log.info("%s: %s", name, message)
            return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def build_server(service: AgentService) -> MCPServer[Any]:
    """The MCP server over ``service``: its tools and the brief resource."""
    server = _Server("harness", version=__version__, instructions=INSTRUCTIONS)

    async def call(fn: Callable[..., T], *args: Any, error: type[Exception] = ToolError) -> T:
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        except REFUSALS as exc:
            raise error(one_line(str(exc))) from exc

    @server.tool(annotations=READ)
    async def list_presets() -> dict[str, Any]:
        """The presets a run can be started from: name -> built-in or the user's file."""
        return {"presets": await call(service.presets)}

    @server.tool(annotations=CHANGE)
    async def start_run(
        preset: Annotated[str, Field(description="a preset name (see list_presets)")],
        overrides: Annotated[
            dict[str, Value] | None,
            Field(
                description="allow-listed overrides, as Discord's /run start: steps, batch, "
                'lr, seed, eval_every, checkpoint_every, e.g. {"steps": 200, "lr": 0.001}'
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Start a run of a preset on harness serve (which must be running). Never a command
        line: only a preset and the allow-listed overrides. Returns the run as it starts."""
        return await call(service.start_run, preset, overrides or {})

    @server.tool(annotations=READ)
    async def status(
        run: Annotated[
            str | None, Field(description="run id, prefix or 'last'; none: all active")
        ] = None,
    ) -> dict[str, Any]:
        """One run, or every active run: status, progress line (step, rate, ETA, loss, key
        metric, utilisation), verdict, controls, gates and the live diagnosis."""
        return {"runs": await call(service.status, run)}

    @server.tool(annotations=READ)
    async def list_runs(limit: Limit = 10) -> dict[str, Any]:
        """The latest runs, newest first, with their verdicts."""
        return {"runs": await call(service.runs, limit)}

    @server.tool(annotations=STOP)
    async def abort_run(
        run: RunRef,
        reason: Annotated[str, Field(description="why, for the incident log")] = "",
    ) -> dict[str, Any]:
        """Abort a running job (SIGINT, then SIGTERM, SIGKILL) through harness serve. It
        answers at once; status shows the run 'aborted' when it has ended."""
        return await call(service.abort, run, reason)

    @server.tool(annotations=CHANGE)
    async def set_controls(
        run: RunRef,
        controls: Annotated[
            dict[str, Value | dict[str, Value]],
            Field(
                description="live controls: lr, eval_every, checkpoint_every, data_weights "
                '(e.g. {"lr": 0.0005} or {"data_weights": {"echo": 1, "not": 0.5}})'
            ),
        ],
    ) -> dict[str, Any]:
        """Change live controls of a running job through harness serve; the job reads them
        at its next step. Returns the controls it reads now."""
        return await call(service.set_controls, run, controls)

    @server.tool(annotations=READ)
    async def diagnose(run: RunRef) -> dict[str, Any]:
        """What went wrong in a run's training, why, and what to do: findings with evidence,
        ranked causes with fixes, linked mistakes, quick wins."""
        return await call(service.diagnose, run)

    @server.tool(annotations=READ)
    async def search_mistakes(
        query: Annotated[str, Field(description="words, e.g. 'nan loss' or a mistake id")],
        limit: Limit = 8,
    ) -> dict[str, Any]:
        """Full-text search of the mistake log and the incidents, best matches first."""
        return {"hits": await call(service.search_mistakes, query, limit)}

    @server.tool(annotations=READ)
    async def show_mistake(
        mistake_id: Annotated[str, Field(description="e.g. M-015 (or 15)")],
    ) -> dict[str, Any]:
        """One mistake: when, symptom, root cause, fix, prevention."""
        return await call(service.show_mistake, mistake_id)

    @server.tool(annotations=READ)
    async def list_incidents(
        run: Annotated[
            str | None, Field(description="only this run's (id, prefix, 'last')")
        ] = None,
        limit: Limit = 10,
    ) -> dict[str, Any]:
        """The latest incidents (rule, linked mistake, severity, summary, evidence)."""
        return {"incidents": await call(service.incidents, run, limit)}

    @server.tool(annotations=CHANGE)
    async def add_note(
        text: Annotated[str, Field(description="the note (at most 4000 characters)")],
        kind: Annotated[
            Literal["note", "inbox"],
            Field(
                description="note: kept for later and shown in the brief (harness notes); "
                "inbox: a message for whoever works at the terminal (harness inbox), as "
                "Discord's /tell"
            ),
        ] = "note",
    ) -> dict[str, Any]:
        """Leave a note for later, or a message for the person at the terminal."""
        return await call(service.add_note, text, kind)

    @server.tool(annotations=READ)
    async def brief() -> str:
        """What to know before touching anything: standing orders, failing checks, unread
        inbox notes, active runs, incidents, recent runs, notes. Same as harness://brief."""
        return await call(service.brief)

    @server.resource(BRIEF_URI, name="brief", mime_type="text/markdown")
    async def brief_resource() -> str:
        """The briefing (harness brief), read without moving its "last brief" mark."""
        return await call(service.brief, error=ResourceError)

    return server


def serve_mcp(paths: Paths, *, port: int) -> int:
    """Serve over stdin/stdout until the client closes stdin."""
    # Plain lines on stderr; the SDK's own logging set-up finds this in place and keeps it.
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="harness mcp: %(levelname)s %(message)s"
    )
    if sys.stdin.isatty():  # a person ran it by hand
        log.info(
            "serving the Model Context Protocol on stdin/stdout for a coding agent "
            "(see docs/mcp.md); Ctrl-D ends it"
        )
    service = AgentService(paths, port=port)
    try:
        build_server(service).run("stdio")
    finally:
        service.close()
    return 0
