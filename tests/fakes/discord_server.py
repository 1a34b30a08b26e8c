"""A local fake of the two Discord REST endpoints the sidecar posts to.

Specified against Discord's documented behaviour:

- ``POST /api/v10/channels/{id}/messages`` needs ``Authorization: Bot <token>``; a
  ``nonce`` with ``enforce_nonce: true`` that was seen before on the channel returns the
  original message and creates nothing (Discord keeps nonces for a few minutes);
- ``POST /api/webhooks/{id}/{token}`` (``?wait=true`` answers the message, else 204);
- bodies are checked against the message limits (content 2,000; 10 embeds; title 256,
  description 4,096, 25 fields of 256/1,024, footer 2,048, author 256, 6,000 in total)
  and answered 400 ``Invalid Form Body`` (50035) or ``Cannot send an empty message``
  (50006) like Discord;
- a message with files comes as ``multipart/form-data``: the body as the ``payload_json``
  part, each file as ``files[<n>]`` (with a filename and a content type); every
  ``attachments`` entry of the body must name an uploaded part by its ``id``, at most 10
  files, each at most 10 MiB (else 400 ``Invalid Form Body``); files alone are a message.
  Accepted files are kept with the message (:class:`ReceivedFile`: name, type, bytes);
- every answer to a message route carries ``X-RateLimit-*`` headers from a per-route
  bucket (generous by default; see :meth:`FakeDiscord.set_bucket`).

Misbehaviour on demand: :meth:`fail_for` (503 for a while), :meth:`rate_limit_next`
(429 with ``retry_after``), :meth:`refuse_next` (any 4xx), :attr:`unknown_channels`
(404 Unknown Channel). A request that arrives while a route is rate limited (after a
429, or with its bucket empty) is answered 429 again and recorded in
:attr:`violations`. Accepted messages are in :attr:`messages`, every request in
:attr:`requests`, in arrival order.

Use it in tests as ``async with FakeDiscord() as fake:``; from another process run
``python -m tests.fakes.discord_server --port N`` and read/drive it over HTTP:
``GET /_fake/messages`` (files with their bytes in base64 as ``data_b64``),
``GET /_fake/requests``, ``GET /_fake/violations``,
``POST /_fake/config`` with any of ``{"fail_for": s, "rate_limit_next": {"route": r,
"retry_after": s}, "refuse_next": {"count": n, "status": 404, "code": 10003,
"message": "Unknown Channel"}, "unknown_channels": [id], "bucket": {"limit": n,
"window": s}}``, ``POST /_fake/reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

__all__ = ["FakeDiscord", "Received", "ReceivedFile", "RequestRecord", "main"]

DEFAULT_BOT_TOKEN = "fake-bot-token-0123456789"
DEFAULT_WEBHOOK_ID = "111"
DEFAULT_WEBHOOK_TOKEN = "fake-webhook-token-abcdefghijklmnopqrstuvwxyz"
MAX_FILES = 10
MAX_FILE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedFile:
    """A file uploaded with a message: the ``files[<id>]`` part."""

    id: int
    filename: str
    content_type: str
    data: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "filename": self.filename,
            "content_type": self.content_type,
            "size": len(self.data),
            "data_b64": base64.b64encode(self.data).decode("ascii"),
        }


@dataclass(frozen=True)
class Received:
    """A message the fake accepted (created), in arrival order."""

    id: str
    route: str  # "channel:<id>" or "webhook:<id>"
    content: str | None
    embeds: list[dict[str, Any]] | None
    nonce: str | None
    t: float  # time.monotonic() of this process
    allowed_mentions: dict[str, Any] | None = None
    files: tuple[ReceivedFile, ...] = ()
    multipart: bool = False  # it came as multipart/form-data

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = [f.to_json() for f in self.files]
        return data


@dataclass(frozen=True)
class RequestRecord:
    """Any request to a message route, with the status it got."""

    route: str
    status: int
    t: float
    nonce: str | None = None


@dataclass
class _Bucket:
    limit: int
    window: float
    used: int = 0
    reset_at: float = 0.0


@dataclass
class _Refusal:
    count: int
    status: int
    code: int
    message: str


@dataclass
class _State:
    messages: list[Received] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    nonces: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    blocked_until: dict[str, float] = field(default_factory=dict)
    pending_429: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    fail_until: float = 0.0
    fail_status: int = 503
    refusals: list[_Refusal] = field(default_factory=list)
    next_id: int = 1_000_000_000_000_000_000


def _embed_problems(embeds: Any) -> str | None:
    if not isinstance(embeds, list):
        return "embeds: must be an array"
    if len(embeds) > 10:
        return "embeds: must be 10 or fewer in length"
    total = 0
    limits = {"title": 256, "description": 4096}
    for i, embed in enumerate(embeds):
        if not isinstance(embed, dict):
            return f"embeds.{i}: must be an object"
        for key, limit in limits.items():
            value = embed.get(key, "")
            if not isinstance(value, str) or len(value) > limit:
                return f"embeds.{i}.{key}: must be a string of {limit} or fewer characters"
            total += len(value)
        for key, sub, limit in (("footer", "text", 2048), ("author", "name", 256)):
            value = embed.get(key, {}).get(sub, "")
            if len(value) > limit:
                return f"embeds.{i}.{key}.{sub}: must be {limit} or fewer in length"
            total += len(value)
        fields = embed.get("fields", [])
        if len(fields) > 25:
            return f"embeds.{i}.fields: must be 25 or fewer in length"
        for j, fld in enumerate(fields):
            name, value = fld.get("name", ""), fld.get("value", "")
            if not name or len(name) > 256 or not value or len(value) > 1024:
                return f"embeds.{i}.fields.{j}: name 1-256 and value 1-1024 characters"
            total += len(name) + len(value)
    if total > 6000:
        return "embeds: embed size exceeds maximum size of 6000"
    return None


class FakeDiscord:
    """The fake server; ``api_base`` and :meth:`webhook_url` point a client at it."""

    def __init__(
        self,
        *,
        bot_token: str = DEFAULT_BOT_TOKEN,
        webhook_id: str = DEFAULT_WEBHOOK_ID,
        webhook_token: str = DEFAULT_WEBHOOK_TOKEN,
        bucket_limit: int = 10_000,
        bucket_window: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.bot_token = bot_token
        self.webhook_id = webhook_id
        self.webhook_token = webhook_token
        self.bucket_limit = bucket_limit
        self.bucket_window = bucket_window
        self.unknown_channels: set[str] = set()
        self._host = host
        self._port = port
        self._state = _State()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- what happened -------------------------------------------------------------------

    @property
    def messages(self) -> list[Received]:
        return list(self._state.messages)

    @property
    def requests(self) -> list[RequestRecord]:
        return list(self._state.requests)

    @property
    def violations(self) -> list[str]:
        return list(self._state.violations)

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    def webhook_url(self) -> str:
        return f"{self.url}/api/webhooks/{self.webhook_id}/{self.webhook_token}"

    @property
    def webhook_route(self) -> str:
        return f"webhook:{self.webhook_id}"

    @staticmethod
    def channel_route(channel_id: str) -> str:
        return f"channel:{channel_id}"

    # -- misbehaviour --------------------------------------------------------------------

    def fail_for(self, seconds: float, status: int = 503) -> None:
        """Answer every message request with ``status`` for the next ``seconds``."""
        self._state.fail_until = time.monotonic() + seconds
        self._state.fail_status = status

    def rate_limit_next(self, route: str, retry_after: float) -> None:
        """The next request to ``route`` gets 429 and the route is closed for ``retry_after``."""
        self._state.pending_429[route] = retry_after

    def refuse_next(
        self, count: int = 1, *, status: int = 404, code: int = 10003, message: str = ""
    ) -> None:
        """The next ``count`` requests get ``status`` with Discord's error body."""
        self._state.refusals.append(_Refusal(count, status, code, message or "Unknown Channel"))

    def set_bucket(self, limit: int, window: float) -> None:
        """Per-route bucket: ``limit`` requests per ``window`` seconds (then 429)."""
        self.bucket_limit, self.bucket_window = limit, window
        self._state.buckets.clear()

    def reset(self) -> None:
        self._state = _State()
        self.unknown_channels.clear()

    # -- lifecycle -----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v10/channels/{channel_id}/messages", self._channel)
        app.router.add_post("/api/webhooks/{webhook_id}/{token}", self._webhook)
        app.router.add_get("/_fake/messages", self._dump_messages)
        app.router.add_get("/_fake/requests", self._dump_requests)
        app.router.add_get("/_fake/violations", self._dump_violations)
        app.router.add_post("/_fake/config", self._config)
        app.router.add_post("/_fake/reset", self._reset)
        return app

    async def start(self) -> FakeDiscord:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the message routes --------------------------------------------------------------

    async def _channel(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["channel_id"]
        route = self.channel_route(channel_id)
        body, files, problem = await self._read(request)
        nonce = body.get("nonce") if isinstance(body, dict) else None
        if request.headers.get("Authorization") != f"Bot {self.bot_token}":
            return self._answer(route, 401, {"message": "401: Unauthorized", "code": 0}, nonce)
        early = self._gate(route, nonce)
        if early is not None:
            return early
        if channel_id in self.unknown_channels:
            return self._answer(route, 404, {"message": "Unknown Channel", "code": 10003}, nonce)
        problem = problem or self._check(body, files)
        if problem is not None:
            return self._answer(route, 400, problem, nonce)
        if nonce is not None and (not isinstance(nonce, str | int) or len(str(nonce)) > 25):
            return self._answer(route, 400, _form_error("nonce: 25 or fewer characters"), nonce)
        if nonce is not None and body.get("enforce_nonce"):
            original = self._state.nonces.get((route, str(nonce)))
            if original is not None:
                return self._answer(route, 200, original, nonce)
        message = self._create(route, body, channel_id, files, request)
        if nonce is not None:
            self._state.nonces[(route, str(nonce))] = message
        return self._answer(route, 200, message, nonce)

    async def _webhook(self, request: web.Request) -> web.Response:
        route = f"webhook:{request.match_info['webhook_id']}"
        body, files, problem = await self._read(request)
        if (
            request.match_info["webhook_id"] != self.webhook_id
            or request.match_info["token"] != self.webhook_token
        ):
            return self._answer(route, 401, {"message": "Invalid Webhook Token", "code": 50027})
        early = self._gate(route, None)
        if early is not None:
            return early
        problem = problem or self._check(body, files)
        if problem is not None:
            return self._answer(route, 400, problem)
        message = self._create(route, body, "webhook-channel", files, request)
        if request.query.get("wait", "").lower() in ("true", "1"):
            return self._answer(route, 200, message)
        return self._answer(route, 204, None)

    async def _read(
        self, request: web.Request
    ) -> tuple[Any, list[ReceivedFile], dict[str, Any] | None]:
        """(body, files, a 400 body or None): JSON, or multipart with ``payload_json``."""
        if request.content_type != "multipart/form-data":
            try:
                return await request.json(), [], None
            except ValueError:
                return None, [], None
        body: Any = None
        files: list[ReceivedFile] = []
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                return None, [], _form_error("nested multipart is not supported")
            name = part.name or ""
            data = bytes(await part.read(decode=False))
            if name == "payload_json":
                try:
                    body = json.loads(data)
                except ValueError:
                    return None, [], _form_error("payload_json: not JSON")
            elif name.startswith("files[") and name.endswith("]") and name[6:-1].isdigit():
                if not part.filename:
                    return None, [], _form_error(f"{name}: a file part needs a filename")
                ctype = part.headers.get("Content-Type", "application/octet-stream")
                files.append(ReceivedFile(int(name[6:-1]), part.filename, ctype, data))
            else:
                return None, [], _form_error(f"unexpected form part {name!r}")
        return body, files, None

    def _gate(self, route: str, nonce: Any) -> web.Response | None:
        """Outage, explicit 429s, the bucket and queued refusals, in that order."""
        now = time.monotonic()
        state = self._state
        if now < state.fail_until:
            return self._answer(
                route, state.fail_status, {"message": "upstream unavailable", "code": 0}, nonce
            )
        blocked = state.blocked_until.get(route, 0.0)
        if now < blocked:
            state.violations.append(
                f"{route}: request {blocked - now:.3f} s before the rate limit ended"
            )
            return self._too_many(route, blocked - now, nonce)
        if route in state.pending_429:
            retry_after = state.pending_429.pop(route)
            state.blocked_until[route] = now + retry_after
            return self._too_many(route, retry_after, nonce)
        bucket = state.buckets.setdefault(route, _Bucket(self.bucket_limit, self.bucket_window))
        if now >= bucket.reset_at:
            bucket.used, bucket.reset_at = 0, now + bucket.window
        if bucket.used >= bucket.limit:
            state.violations.append(
                f"{route}: request with an empty bucket, {bucket.reset_at - now:.3f} s early"
            )
            return self._too_many(route, bucket.reset_at - now, nonce)
        bucket.used += 1
        if state.refusals:
            refusal = state.refusals[0]
            refusal.count -= 1
            if refusal.count <= 0:
                state.refusals.pop(0)
            return self._answer(
                route, refusal.status, {"message": refusal.message, "code": refusal.code}, nonce
            )
        return None

    def _too_many(self, route: str, retry_after: float, nonce: Any) -> web.Response:
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": False,
        }
        headers = {"Retry-After": str(math.ceil(retry_after)), "X-RateLimit-Scope": "user"}
        return self._answer(route, 429, body, nonce, headers)

    def _check(self, body: Any, files: list[ReceivedFile]) -> dict[str, Any] | None:
        if not isinstance(body, dict):
            return {"message": "400: Bad Request", "code": 0}
        problem = _file_problems(body, files)
        if problem is not None:
            return _form_error(problem)
        content, embeds = body.get("content"), body.get("embeds")
        if content is not None and (not isinstance(content, str) or len(content) > 2000):
            return _form_error("content: must be 2000 or fewer in length")
        if embeds is not None:
            problem = _embed_problems(embeds)
            if problem is not None:
                return _form_error(problem)
        if not (content or "").strip() and not embeds and not files:
            return {"message": "Cannot send an empty message", "code": 50006}
        return None

    def _create(
        self,
        route: str,
        body: dict[str, Any],
        channel_id: str,
        files: list[ReceivedFile],
        request: web.Request,
    ) -> dict[str, Any]:
        self._state.next_id += 1
        message_id = str(self._state.next_id)
        nonce = body.get("nonce")
        received = Received(
            id=message_id,
            route=route,
            content=body.get("content"),
            embeds=body.get("embeds"),
            nonce=str(nonce) if nonce is not None else None,
            t=time.monotonic(),
            allowed_mentions=body.get("allowed_mentions"),
            files=tuple(files),
            multipart=request.content_type == "multipart/form-data",
        )
        self._state.messages.append(received)
        return {
            "id": message_id,
            "channel_id": channel_id,
            "content": received.content or "",
            "embeds": received.embeds or [],
            "attachments": [
                {"id": str(f.id), "filename": f.filename, "size": len(f.data)} for f in files
            ],
            "nonce": received.nonce,
            "type": 0,
        }

    def _answer(
        self,
        route: str,
        status: int,
        body: Any,
        nonce: Any = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        now = time.monotonic()
        self._state.requests.append(
            RequestRecord(route, status, now, str(nonce) if nonce is not None else None)
        )
        out = dict(headers or {})
        bucket = self._state.buckets.get(route)
        if bucket is not None:
            reset_after = max(bucket.reset_at - now, 0.0)
            out.update(
                {
                    "X-RateLimit-Limit": str(bucket.limit),
                    "X-RateLimit-Remaining": str(max(bucket.limit - bucket.used, 0)),
                    "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                    "X-RateLimit-Reset-After": f"{math.ceil(reset_after * 1000) / 1000:.3f}",
                    "X-RateLimit-Bucket": f"fake-{abs(hash(route)) % 10**8:08d}",
                }
            )
        if status == 204:
            return web.Response(status=204, headers=out)
        return web.json_response(body, status=status, headers=out)

    # -- control routes (for tests in another process) -----------------------------------

    async def _dump_messages(self, request: web.Request) -> web.Response:
        return web.json_response([m.to_json() for m in self._state.messages])

    async def _dump_requests(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(r) for r in self._state.requests])

    async def _dump_violations(self, request: web.Request) -> web.Response:
        return web.json_response(self._state.violations)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _config(self, request: web.Request) -> web.Response:
        conf = await request.json()
        if "fail_for" in conf:
            self.fail_for(float(conf["fail_for"]), int(conf.get("fail_status", 503)))
        if "rate_limit_next" in conf:
            rl = conf["rate_limit_next"]
            self.rate_limit_next(str(rl["route"]), float(rl["retry_after"]))
        if "refuse_next" in conf:
            rf = conf["refuse_next"]
            self.refuse_next(
                int(rf.get("count", 1)),
                status=int(rf.get("status", 404)),
                code=int(rf.get("code", 10003)),
                message=str(rf.get("message", "")),
            )
        if "unknown_channels" in conf:
            self.unknown_channels = {str(c) for c in conf["unknown_channels"]}
        if "bucket" in conf:
            self.set_bucket(int(conf["bucket"]["limit"]), float(conf["bucket"]["window"]))
        return web.json_response({"ok": True})


def _file_problems(body: dict[str, Any], files: list[ReceivedFile]) -> str | None:
    """Discord's rules for uploads: attachments name parts by id, 10 files, size."""
    if len(files) > MAX_FILES:
        return f"files: must be {MAX_FILES} or fewer in length"
    for f in files:
        if len(f.data) > MAX_FILE_BYTES:
            return f"files[{f.id}]: file exceeds the maximum size"
    uploaded = {f.id for f in files}
    attachments = body.get("attachments", [])
    if not isinstance(attachments, list):
        return "attachments: must be an array"
    for i, entry in enumerate(attachments):
        aid = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(aid, str) and aid.isdigit():
            aid = int(aid)
        if not isinstance(aid, int) or aid not in uploaded:
            return f"attachments.{i}.id: no files[{aid}] part was uploaded"
    return None


def _form_error(detail: str) -> dict[str, Any]:
    return {"message": "Invalid Form Body", "code": 50035, "errors": {"detail": detail}}


async def _serve_forever(args: argparse.Namespace) -> None:
    fake = FakeDiscord(
        bot_token=args.bot_token,
        webhook_id=args.webhook_id,
        webhook_token=args.webhook_token,
        port=args.port,
    )
    await fake.start()
    print(f"fake discord listening on {fake.url} (api base {fake.api_base})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await fake.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local fake Discord REST server for tests.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--bot-token", default=DEFAULT_BOT_TOKEN)
    parser.add_argument("--webhook-id", default=DEFAULT_WEBHOOK_ID)
    parser.add_argument("--webhook-token", default=DEFAULT_WEBHOOK_TOKEN)
    args = parser.parse_args(argv)
    asyncio.run(_serve_forever(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
