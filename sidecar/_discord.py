"""Posting one message to Discord REST, with httpx, and reading what Discord answered.

Two targets (:class:`DiscordConfig`):

- a bot token and a channel id: ``POST {api_base}/channels/{id}/messages`` with
  ``Authorization: Bot <token>`` and a ``nonce`` + ``enforce_nonce: true`` in the body;
- a webhook URL: ``POST {webhook}?wait=true`` (``wait`` makes Discord answer with the
  created message, so we learn its id and know it exists).

A message with files is sent as ``multipart/form-data``: the body as ``payload_json``
(its ``attachments`` name each file by ``id``) and each file as the part
``files[<id>]``, for both targets, with the same nonce and ``wait``. The channel target
wins when both are configured. The answer is translated here, at
the boundary: 2xx returns :class:`Sent`; 429 raises :class:`RateLimitedError` with the
``retry_after`` from the body (or the ``Retry-After`` header); 5xx, timeouts and
connection errors raise :class:`TransientError`; any other 4xx raises
:class:`RejectedError` with Discord's error code and message. The bot token and the
webhook URL (whose path holds the webhook's own token) never appear in an error
message, a repr, or a log line: httpx's request log is filtered while a client is open.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from ._errors import RateLimitedError, RejectedError, TransientError
from ._files import Attachment

__all__ = ["DEFAULT_API_BASE", "DiscordClient", "DiscordConfig", "Sent"]

DEFAULT_API_BASE = "https://discord.com/api/v10"
_USER_AGENT = "DiscordBot (https://github.com/harness, 0.1) harness-sidecar"


@dataclass(frozen=True)
class DiscordConfig:
    """Where and how the delivery worker posts; built once in ``main()``.

    ``backoff_base_s``/``backoff_cap_s`` shape the retry delays after 5xx and timeouts
    (capped exponential with jitter); ``poll_s`` is the fallback wake-up period of the
    worker when nothing wakes it.
    """

    bot_token: SecretStr | None = None
    channel_id: str | None = None
    webhook_url: SecretStr | None = None
    api_base: str = DEFAULT_API_BASE
    timeout_s: float = 10.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    poll_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.api_base.startswith(("http://", "https://")):
            raise ValueError(f"api_base must be an http(s) URL, got {self.api_base!r}")
        if self.webhook_url is not None and not self.webhook_url.get_secret_value().startswith(
            ("http://", "https://")
        ):
            raise ValueError("webhook_url must be an http(s) URL")
        if self.channel_id is not None and not self.channel_id.isdigit():
            raise ValueError(f"channel_id must be a Discord snowflake, got {self.channel_id!r}")
        for key in ("timeout_s", "backoff_base_s", "backoff_cap_s", "poll_s"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive")

    @property
    def mode(self) -> str | None:
        """``"channel"``, ``"webhook"`` or None when Discord is not configured."""
        if self.bot_token is not None and self.channel_id is not None:
            return "channel"
        if self.webhook_url is not None:
            return "webhook"
        return None

    @property
    def enabled(self) -> bool:
        return self.mode is not None


@dataclass(frozen=True)
class Sent:
    """Discord accepted the message. ``reset_after`` is set when the route's bucket is empty."""

    message_id: str | None
    status: int
    reset_after: float | None = None


class _RedactFilter(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message, self._secrets)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out >= 0 else None


class DiscordClient:
    """One httpx.AsyncClient posting to the configured target; use as an async context."""

    def __init__(
        self, config: DiscordConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if config.mode is None:
            raise ValueError("Discord is not configured (no bot token + channel, no webhook)")
        self.config = config
        self.mode = config.mode
        headers = {"User-Agent": _USER_AGENT}
        self._secrets: list[str] = []
        if self.mode == "channel":
            assert config.bot_token is not None
            token = config.bot_token.get_secret_value()
            headers["Authorization"] = f"Bot {token}"
            self._secrets.append(token)
            self._url = f"{config.api_base.rstrip('/')}/channels/{config.channel_id}/messages"
            self.route = f"channel:{config.channel_id}"
        else:
            assert config.webhook_url is not None
            self._url = config.webhook_url.get_secret_value()
            self._secrets.append(self._url)
            self._secrets += [p for p in httpx.URL(self._url).path.split("/") if len(p) > 20]
            self.route = "webhook"
        self._filter = _RedactFilter(self._secrets)
        logging.getLogger("httpx").addFilter(self._filter)
        self._http = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(config.timeout_s), transport=transport
        )

    def __repr__(self) -> str:
        return f"DiscordClient(mode={self.mode!r}, route={self.route!r})"

    async def aclose(self) -> None:
        await self._http.aclose()
        logging.getLogger("httpx").removeFilter(self._filter)

    async def __aenter__(self) -> DiscordClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    async def send(
        self,
        payload: dict[str, Any],
        *,
        nonce: str | None,
        files: Sequence[Attachment] = (),
    ) -> Sent:
        """Post one message body (with ``files``, as multipart, each as ``files[<id>]`` of
        its ``attachments`` entry); raise a :class:`DeliveryError` subclass unless it was
        created."""
        body = dict(payload)
        # Text from jobs and agents must never ping @everyone or a role by accident.
        body.setdefault("allowed_mentions", {"parse": []})
        params = None
        if self.mode == "channel":
            if nonce is not None:
                body["nonce"] = nonce
                body["enforce_nonce"] = True
        else:
            params = {"wait": "true"}
        try:
            if files:
                parts = _parts(body, files)
                response = await self._http.post(self._url, files=parts, params=params)
            else:
                response = await self._http.post(self._url, json=body, params=params)
        except httpx.TimeoutException as exc:
            raise TransientError(
                f"timed out after {self.config.timeout_s:g} s ({type(exc).__name__})"
            ) from None
        except httpx.HTTPError as exc:
            detail = self.redact(str(exc)) or type(exc).__name__
            raise TransientError(f"connection failed: {type(exc).__name__}: {detail}") from None
        return self._outcome(response)

    def _outcome(self, response: httpx.Response) -> Sent:
        status = response.status_code
        try:
            data: Any = response.json()
        except ValueError:
            data = None
        info = data if isinstance(data, dict) else {}
        if 200 <= status < 300:
            reset_after = None
            if response.headers.get("X-RateLimit-Remaining") == "0":
                reset_after = _float(response.headers.get("X-RateLimit-Reset-After"))
            message_id = info.get("id")
            return Sent(
                message_id=str(message_id) if message_id is not None else None,
                status=status,
                reset_after=reset_after,
            )
        if status == 429:
            retry_after = _float(info.get("retry_after"))
            if retry_after is None:
                retry_after = _float(response.headers.get("Retry-After"))
            retry_after = 1.0 if retry_after is None else retry_after
            is_global = (
                bool(info.get("global")) or response.headers.get("X-RateLimit-Global") == "true"
            )
            raise RateLimitedError(
                f"429 rate limited, retry after {retry_after:g} s",
                retry_after=retry_after,
                is_global=is_global,
            )
        if status >= 500:
            raise TransientError(f"Discord answered {status}", status=status)
        code = info.get("code")
        discord_message = str(info.get("message") or response.reason_phrase or "")
        code_text = f" (code {code})" if code is not None else ""
        raise RejectedError(
            self.redact(f"Discord refused the message: {status} {discord_message}{code_text}"),
            status=status,
            code=code if isinstance(code, int) else None,
            discord_message=self.redact(discord_message),
            details=info.get("errors"),
        )


def _parts(body: dict[str, Any], files: Sequence[Attachment]) -> list[tuple[str, Any]]:
    """The multipart parts: ``payload_json`` first, then ``files[<id>]`` per attachment."""
    ids = [a.get("id") for a in body.get("attachments", []) if isinstance(a, dict)]
    if len(ids) != len(files):
        raise ValueError(f"{len(files)} file(s) for {len(ids)} attachment entr(ies)")
    payload_json = json.dumps(body, allow_nan=False, ensure_ascii=False).encode("utf-8")
    parts: list[tuple[str, Any]] = [("payload_json", (None, payload_json, "application/json"))]
    for file_id, f in zip(ids, files, strict=True):
        parts.append((f"files[{file_id}]", (f.filename, f.data, f.content_type)))
    return parts
