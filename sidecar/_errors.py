"""Errors raised by the sidecar.

SidecarError                  base; the message is one line a user can act on
 ├── InvalidMessageError      a message cannot be queued (empty, wrong types, bad embed,
 │                            text that is not valid Unicode)
 ├── TokenFileError           the API token file cannot be read, created or trusted
 ├── MessageNotFoundError     no outbox message with that id
 ├── MessageStateError        the message's state forbids the change (a sent one is final)
 ├── KeyConflictError         an Idempotency-Key already used for a different message
 ├── UnreadableMessageError   a stored row cannot be read back (its payload is not JSON)
 └── DeliveryError            one attempt to post a message to Discord did not succeed
      ├── RateLimitedError    429: wait ``retry_after`` seconds before using the route again
      ├── TransientError      5xx, timeout, connection error: retry later with backoff
      └── RejectedError       any other 4xx: retrying cannot help, the message is dead

httpx exceptions are translated into these in ``_discord.py``; messages never contain
the bot token or the webhook URL.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DeliveryError",
    "InvalidMessageError",
    "KeyConflictError",
    "MessageNotFoundError",
    "MessageStateError",
    "RateLimitedError",
    "RejectedError",
    "SidecarError",
    "TokenFileError",
    "TransientError",
    "UnreadableMessageError",
]


class SidecarError(Exception):
    """Anything the sidecar refuses or fails at, with a one-line message."""


class InvalidMessageError(SidecarError, ValueError):
    """The text or embeds given to the outbox are not a message Discord would accept."""


class TokenFileError(SidecarError):
    """The bearer-token file of the HTTP API is unusable."""


class MessageNotFoundError(SidecarError, LookupError):
    """No outbox message has the id that was asked for."""


class MessageStateError(SidecarError):
    """The message is in a state that forbids the change (dropping a sent message)."""


class KeyConflictError(SidecarError):
    """An idempotency key that was already used, within its lifetime, for another body."""


class UnreadableMessageError(SidecarError):
    """The stored payload of outbox message ``message_id`` cannot be read back."""

    def __init__(self, message: str, *, message_id: int) -> None:
        super().__init__(message)
        self.message_id = message_id


class DeliveryError(SidecarError):
    """One delivery attempt failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimitedError(DeliveryError):
    """Discord answered 429; nothing may be sent on the route for ``retry_after`` s."""

    def __init__(self, message: str, *, retry_after: float, is_global: bool = False) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after
        self.is_global = is_global


class TransientError(DeliveryError):
    """A 5xx, a timeout or a connection failure: the same request may succeed later."""


class RejectedError(DeliveryError):
    """Discord refused the message (4xx other than 429); ``code`` is Discord's error code."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: int | None = None,
        discord_message: str = "",
        details: Any = None,
    ) -> None:
        super().__init__(message, status=status)
        self.code = code
        self.discord_message = discord_message
        self.details = details
