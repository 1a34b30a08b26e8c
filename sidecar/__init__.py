"""sidecar: the durable outbox, its delivery worker to Discord REST, and the HTTP API.

- The outbox (a table in the Harness SQLite file): :func:`enqueue` stores a message
  (split to Discord's limits) before anyone is told it is queued; the other functions
  move rows through ``pending -> sending -> sent | dead``. Each takes a session keyword.
- :class:`DeliveryWorker` posts the outbox in order to a webhook or a bot channel
  (:class:`DiscordConfig`), with retries, rate limits and dead-lettering.
- :func:`create_app` is the aiohttp app behind a bearer token (:func:`load_or_create_token`),
  started on loopback with :func:`serve`.
"""

from ._api import (
    MAX_BODY_BYTES,
    STORE_KEY,
    create_app,
    json_error,
    load_or_create_token,
    read_json,
    serve,
    token_file,
)
from ._discord import DEFAULT_API_BASE, DiscordClient, DiscordConfig, Sent
from ._errors import (
    DeliveryError,
    InvalidMessageError,
    RateLimitedError,
    RejectedError,
    SidecarError,
    TokenFileError,
    TransientError,
)
from ._outbox import (
    KINDS,
    STATES,
    OutboxMessage,
    claim_next,
    count_by_state,
    enqueue,
    has_undelivered,
    list_messages,
    mark_dead,
    mark_retry,
    mark_sent,
    next_due,
    reset_stuck,
)
from ._split import build_payloads, split_text
from ._worker import DeliveryWorker

__all__ = [
    "DEFAULT_API_BASE",
    "KINDS",
    "MAX_BODY_BYTES",
    "STATES",
    "STORE_KEY",
    "DeliveryError",
    "DeliveryWorker",
    "DiscordClient",
    "DiscordConfig",
    "InvalidMessageError",
    "OutboxMessage",
    "RateLimitedError",
    "RejectedError",
    "Sent",
    "SidecarError",
    "TokenFileError",
    "TransientError",
    "build_payloads",
    "claim_next",
    "count_by_state",
    "create_app",
    "enqueue",
    "has_undelivered",
    "json_error",
    "list_messages",
    "load_or_create_token",
    "mark_dead",
    "mark_retry",
    "mark_sent",
    "next_due",
    "read_json",
    "reset_stuck",
    "serve",
    "split_text",
    "token_file",
]
