"""The run routes of the HTTP API, registered on the sidecar's app (DESIGN section 7).

``sidecar`` knows nothing about runs; this module adds ``GET/POST /runs``,
``GET /runs/{id}``, ``POST /runs/{id}/abort``, ``POST /runs/{id}/controls``,
``GET /mistakes?q=`` and ``POST /heartbeat`` to its app, behind the same bearer token,
and (:func:`add_memory_routes`) ``GET /inbox`` and ``GET /brief``. Every answer is strict
JSON (``sidecar.json_ok``): a run aborted for a NaN loss shows ``null``, never ``NaN``.
A blank or unknown run id is 404.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

import mistakes as ml
from harness.core.spec import apply_overrides, spec_from_mapping
from harness.errors import ControlsError, LaunchRefused, NotFoundError, SpecError
from harness.runtime.controls import update_controls
from harness.runtime.specs import load_preset
from memory import (
    TERMINAL,
    Run,
    RunNotFoundError,
    Store,
    find_run,
    list_runs,
    mark_read,
    unread_inbox,
)
from sidecar import (
    STORE_KEY,
    create_app,
    json_error,
    json_ok,
    load_or_create_token,
    read_json,
    serve,
)

if TYPE_CHECKING:
    from harness.daemon.service import Service

__all__ = ["add_memory_routes", "add_run_routes", "start_api"]

LOOPBACK = "127.0.0.1"  # the API never listens beyond this machine (DESIGN section 7)
_SERVICE: web.AppKey[Service] = web.AppKey("service")


def _service(request: web.Request) -> Service:
    return request.app[_SERVICE]


def _find(service: Service, ref: str) -> Run:
    with service.store.read() as s:
        return find_run(session=s, ref=ref)


async def _run_or_404(request: web.Request) -> Run | web.Response:
    try:
        return await asyncio.to_thread(_find, _service(request), request.match_info["id"])
    except RunNotFoundError as exc:
        return json_error(404, str(exc))


async def _list(request: web.Request) -> web.Response:
    service = _service(request)
    active = request.query.get("active") in ("1", "true", "yes")

    def rows() -> list[dict[str, Any]]:
        with service.store.read() as s:
            return [r.model_dump() for r in list_runs(session=s, limit=100, active_only=active)]

    return json_ok({"runs": await asyncio.to_thread(rows)})


async def _launch(request: web.Request) -> web.Response:
    service = _service(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        return json_error(400, "expected a JSON object with 'spec' or 'preset'")
    overrides = body.get("set", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        return json_error(400, "'set' must be a list of 'key=value' strings")
    try:
        if isinstance(body.get("spec"), dict):
            spec = spec_from_mapping(body["spec"], source="request spec")
            source = str(body.get("source") or "api")
        elif isinstance(body.get("preset"), str):
            presets = service.settings.paths.presets_dir
            spec, source = load_preset(body["preset"], presets_dir=presets)
        else:
            return json_error(400, "expected 'spec' (an object) or 'preset' (a name)")
        if overrides:
            spec = apply_overrides(spec, overrides)
    except SpecError as exc:
        return json_error(400, str(exc))
    except NotFoundError as exc:
        return json_error(404, str(exc))
    try:
        run_id = await service.supervisor.launch(spec, source=source)
    except LaunchRefused as exc:
        return json_error(422, str(exc))
    except SpecError as exc:
        return json_error(400, str(exc))
    return json_ok({"id": run_id}, status=201)


async def _get(request: web.Request) -> web.Response:
    run = await _run_or_404(request)
    if isinstance(run, web.Response):
        return run
    return json_ok(run.model_dump())


async def _abort(request: web.Request) -> web.Response:
    run = await _run_or_404(request)
    if isinstance(run, web.Response):
        return run
    body = await read_json(request) if request.can_read_body else {}
    if not isinstance(body, dict):
        return json_error(400, 'expected a JSON object, e.g. {"reason": "loss is flat"}')
    reason, by = body.get("reason"), body.get("by")
    if reason is not None and not isinstance(reason, str):
        return json_error(400, "reason must be a string")
    if by is not None and not isinstance(by, str):
        return json_error(400, "by must be a string")
    if run.status in TERMINAL:
        return json_error(409, f"run {run.id} is already {run.status}")
    await _service(request).supervisor.request_abort(
        run.id, reason or "requested through the API", by=by or "api"
    )
    return json_ok({"id": run.id, "status": "aborting"}, status=202)


async def _controls(request: web.Request) -> web.Response:
    run = await _run_or_404(request)
    if isinstance(run, web.Response):
        return run
    body = await read_json(request)
    if not isinstance(body, dict) or not body:
        return json_error(400, 'expected a JSON object of controls, e.g. {"lr": 0.001}')
    if run.status in TERMINAL:
        return json_error(409, f"run {run.id} is already {run.status}")
    try:
        merged = await asyncio.to_thread(update_controls, run.run_dir, body)
    except ControlsError as exc:
        return json_error(400, str(exc))
    return json_ok({"id": run.id, "controls": merged})


async def _mistakes(request: web.Request) -> web.Response:
    service = _service(request)
    query = request.query.get("q", "")

    def hits() -> list[dict[str, Any]]:
        with service.store.read() as s:
            return [h.as_dict() for h in ml.search(session=s, query=query)]

    return json_ok({"hits": await asyncio.to_thread(hits)})


async def _heartbeat(request: web.Request) -> web.Response:
    view = await _service(request).heartbeat()
    return json_ok({"health": view.health, "text": view.text})


def _read_inbox(store: Store) -> list[dict[str, Any]]:
    with store.write() as s:
        notes = unread_inbox(session=s)
        shown = [n.model_dump() for n in notes]
        mark_read(session=s, ids=[n.id for n in notes if n.id is not None])
    return shown


async def _inbox(request: web.Request) -> web.Response:
    """The unread inbox notes (Discord ``/tell``), marked read by this call."""
    notes = await asyncio.to_thread(_read_inbox, request.app[STORE_KEY])
    return json_ok({"notes": notes})


async def _brief(request: web.Request) -> web.Response:
    """``?format=json`` (default), ``text`` (``{"text", "sections"}``) or ``hook``.

    Unlike ``harness brief``, it does not move the "since the last brief" mark unless
    ``?mark=1``: a look from a phone should not hide incidents from the terminal.
    """
    from harness.daemon.brief import (
        brief_sections,
        build_brief,
        render_hook,
        render_json,
        render_text,
    )

    fmt = request.query.get("format", "json")
    if fmt not in ("json", "text", "hook"):
        return json_error(400, f"format must be json, text or hook, not {fmt!r}")
    mark = request.query.get("mark") in ("1", "true", "yes")
    brief = await asyncio.to_thread(build_brief, request.app[STORE_KEY], mark=mark)
    if fmt == "hook":
        return json_ok(render_hook(brief))
    if fmt == "text":
        return json_ok({"text": render_text(brief), "sections": brief_sections(brief)})
    return json_ok(render_json(brief))


def add_memory_routes(app: web.Application) -> None:
    """``GET /inbox`` and ``GET /brief`` on an app made by :func:`sidecar.create_app`."""
    app.router.add_get("/inbox", _inbox)
    app.router.add_get("/brief", _brief)


def add_run_routes(app: web.Application, service: Service) -> None:
    app[_SERVICE] = service
    add_memory_routes(app)
    app.router.add_get("/runs", _list)
    app.router.add_post("/runs", _launch)
    app.router.add_get("/runs/{id}", _get)
    app.router.add_post("/runs/{id}/abort", _abort)
    app.router.add_post("/runs/{id}/controls", _controls)
    app.router.add_get("/mistakes", _mistakes)
    app.router.add_post("/heartbeat", _heartbeat)


async def start_api(service: Service) -> tuple[web.AppRunner, int]:
    token = await asyncio.to_thread(load_or_create_token, service.settings.paths.home)
    app = create_app(
        store=service.store,
        token=token,
        wake=service.worker.wake,
        limits=service.settings.sidecar.limits(),
    )
    add_run_routes(app, service)
    runner = await serve(app, LOOPBACK, service.settings.sidecar.port)
    port = int(runner.addresses[0][1])
    return runner, port
