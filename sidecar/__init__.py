"""sidecar: the durable outbox, its delivery worker to Discord REST, and the HTTP API.

- The outbox (a table in the Harness SQLite file): :func:`enqueue` stores a message
  (split to Discord's limits, refused if it could never be delivered) before anyone is
  told it is queued; the other functions move rows through
  ``pending -> sending -> sent | dead``, and :func:`retry_messages` /
  :func:`drop_messages` let a person move them by hand. Each takes a session keyword.
  A message may carry files (:class:`Attachment`, e.g. a chart PNG), stored in the same
  transaction and uploaded with it as multipart; :func:`file_summaries` lists them
  without their bytes.
- :class:`DeliveryWorker` posts the outbox in order to a webhook or a bot channel
  (:class:`DiscordConfig`), with retries, rate limits and dead-lettering; a message that
  fails for its own reasons is dead-lettered and never holds up the ones behind it.
- :func:`create_app` is the aiohttp app behind a bearer token (:func:`load_or_create_token`),
  started on loopback with :func:`serve` under :class:`ApiLimits` (connections,
  timeouts); :class:`RateLimitFilter` keeps a storm of one error out of the log.
"""

from ._api import (
    MAX_BODY_BYTES,
    MAX_DEPTH,
    MAX_SEND_BYTES,
    STORE_KEY,
    create_app,
    json_depth,
    json_error,
    json_ok,
    load_or_create_token,
    read_json,
    token_file,
)
from ._discord import DEFAULT_API_BASE, DiscordClient, DiscordConfig, Sent
from ._errors import (
    DeliveryError,
    InvalidMessageError,
    KeyConflictError,
    MessageNotFoundError,
    MessageStateError,
    RateLimitedError,
    RejectedError,
    SidecarError,
    TokenFileError,
    TransientError,
    UnreadableMessageError,
)
from ._files import MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES, Attachment, file_summaries
from ._keys import KEY_HEADER, KEY_TTL_S, SendKey
from ._logs import RateLimitFilter
from ._outbox import (
    KINDS,
    STATES,
    OutboxMessage,
    Prepared,
    claim_next,
    count_by_state,
    drop_messages,
    enqueue,
    has_undelivered,
    list_messages,
    mark_dead,
    mark_retry,
    mark_sent,
    next_due,
    prepare,
    reset_stuck,
    retry_messages,
    store_prepared,
)
from ._server import ApiLimits, ConnectionBook, serve
from ._split import build_payloads, split_text
from ._worker import DeliveryWorker

__all__ = [
    "DEFAULT_API_BASE",
    "KEY_HEADER",
    "KEY_TTL_S",
    "KINDS",
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_SEND_BYTES",
    "MAX_TOTAL_BYTES",
    "STATES",
    "STORE_KEY",
    "ApiLimits",
    "Attachment",
    "ConnectionBook",
    "DeliveryError",
    "DeliveryWorker",
    "DiscordClient",
    "DiscordConfig",
    "InvalidMessageError",
    "KeyConflictError",
    "MessageNotFoundError",
    "MessageStateError",
    "OutboxMessage",
    "Prepared",
    "RateLimitFilter",
    "RateLimitedError",
    "RejectedError",
    "SendKey",
    "Sent",
    "SidecarError",
    "TokenFileError",
    "TransientError",
    "UnreadableMessageError",
    "build_payloads",
    "claim_next",
    "count_by_state",
    "create_app",
    "drop_messages",
    "enqueue",
    "file_summaries",
    "has_undelivered",
    "json_depth",
    "json_error",
    "json_ok",
    "list_messages",
    "load_or_create_token",
    "mark_dead",
    "mark_retry",
    "mark_sent",
    "next_due",
    "prepare",
    "read_json",
    "reset_stuck",
    "retry_messages",
    "serve",
    "split_text",
    "store_prepared",
    "token_file",
]
