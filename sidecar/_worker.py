"""The delivery worker: one task that posts the outbox to Discord, one message at a time.

Order: the worker claims only the head of the queue (see ``_outbox``), so messages
reach Discord in the order they were queued; a message waiting for a retry blocks the
ones behind it (intended: order matters more than throughput), a dead one does not.

Outcomes: 2xx -> ``sent`` with Discord's message id; 429 -> back to ``pending`` for
``retry_after`` seconds and nothing is sent on that route before then (the same holds
proactively when a response says ``X-RateLimit-Remaining: 0``, for
``X-RateLimit-Reset-After`` seconds); 5xx, timeouts, connection errors -> retried after
a capped exponential backoff with jitter; other 4xx -> ``dead`` plus an incident (rule
``delivery``, severity ``error``) in the same transaction.

Poison. A message that fails for its own reasons, whatever Discord would say (any
exception while building or sending *its* request that is not a transport or Discord
error: text that cannot be encoded, a body that cannot be serialised, a stored payload
that cannot be read back), is dead-lettered at once with a ``delivery`` incident, so it
never holds up the messages behind it; ``harness messages retry ID`` puts it back.
Trouble with the database itself (:class:`memory.StoreError`: locked, full, read-only)
is not the message's fault: the worker logs it, waits ``poll_s`` and tries again, the
message untouched. Any other unexpected failure is counted against the message at the
head of the queue; after :data:`MAX_STRIKES` in a row with the same head, that message
is taken to be the cause and dead-lettered the same way, so no row can loop for ever.

Duplicates. Channel messages (bot token) are exactly-once: each row carries a
deterministic ``nonce`` sent with ``enforce_nonce: true``, and Discord answers a repeated
nonce (within a few minutes) with the message it already created instead of a new one,
so a resend after a crash, a timeout or a lost response is harmless. Webhooks take no
nonce: if the process dies (or the response is lost) after Discord created the message
but before the row was marked ``sent``, that message is posted again on restart. Since
delivery is sequential, at most the one message that was in flight can be duplicated.

Files (a chart) are read with the claim and posted with the message as multipart; the
outcomes above apply unchanged. A file missing from the database dead-letters its
message like an unreadable payload. Once sent, the files' bytes are dropped.

With no Discord configured the worker does not run; messages stay in the outbox and
can be listed (``list_messages``, ``GET /messages``, ``harness messages``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from sqlmodel import Session

from memory import Store, StoreError, clean_text, json_safe, one_line
from mistakes import record_incident

from ._discord import DiscordClient, DiscordConfig, Sent
from ._errors import DeliveryError, RateLimitedError, RejectedError, UnreadableMessageError
from ._files import Attachment, load_files
from ._outbox import (
    OutboxMessage,
    _head,
    claim_next,
    has_undelivered,
    mark_dead,
    mark_retry,
    mark_sent,
    next_due,
    reset_stuck,
)

__all__ = ["DeliveryWorker"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


#: statuses that mean our credentials are wrong, not the message
AUTH_STATUSES = (401, 403)
AUTH_RETRY_S = 300.0
#: unexpected failures in a row with one message at the head before it is dead-lettered
MAX_STRIKES = 3


class DeliveryWorker:
    """Deliver the outbox of ``store`` to the Discord target in ``config``.

    ``clock`` (wall-clock seconds, stored as ``next_attempt_at``), ``sleep`` and ``rng``
    are injectable; ``transport`` replaces httpx's network transport in tests.
    """

    def __init__(
        self,
        store: Store,
        config: DiscordConfig,
        *,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._transport = transport
        self._wake = asyncio.Event()
        self._blocked_until: dict[str, float] = {}
        self._client: DiscordClient | None = None
        self._busy = False
        self._auth_reported = False
        self._strikes: tuple[int, int] | None = None  # (head id, failures in a row)

    def __repr__(self) -> str:
        return f"DeliveryWorker({self.store!r}, mode={self.config.mode!r})"

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def wake(self) -> None:
        """Tell the worker a message was queued.

        Call it on the loop; from another thread use ``loop.call_soon_threadsafe(worker.wake)``.
        """
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled. Returns at once when Discord is not configured."""
        if not self.enabled:
            log.info("no Discord target configured: messages stay in the outbox")
            return
        async with self._session():
            needs_reset = True
            while True:
                try:
                    if needs_reset:
                        reset = await asyncio.to_thread(self._reset_stuck)
                        needs_reset = False
                        if reset:
                            log.info("outbox: resending %d message(s) left in flight", reset)
                    if not await self._step():
                        await self._idle()
                except Exception as exc:  # the worker must outlive a bad moment (a locked DB)
                    log.exception("outbox delivery failed unexpectedly; retrying")
                    needs_reset = True
                    if not isinstance(exc, StoreError):
                        await asyncio.to_thread(self._strike, exc)
                    await self._sleep(self.config.poll_s)

    async def drain(self, timeout: float) -> bool:
        """Deliver until nothing is pending or in flight; False if ``timeout`` passed first.

        For tests and for a clean shutdown; must not run alongside :meth:`run`.
        """
        if not self.enabled:
            return False
        try:
            async with asyncio.timeout(timeout), self._session():
                await asyncio.to_thread(self._reset_stuck)
                while await asyncio.to_thread(self._has_work):
                    if not await self._step():
                        await self._idle()
        except TimeoutError:
            return False
        return True

    # -- internals ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[None]:
        if self._busy:
            raise RuntimeError("this DeliveryWorker is already running")
        self._busy = True
        self._client = DiscordClient(self.config, transport=self._transport)
        try:
            yield
        finally:
            client, self._client = self._client, None
            self._busy = False
            await client.aclose()

    def _reset_stuck(self) -> int:
        with self.store.write() as session:
            return reset_stuck(session=session)

    def _has_work(self) -> bool:
        with self.store.read() as session:
            return has_undelivered(session=session)

    def _claim(self, now: float) -> tuple[OutboxMessage, list[Attachment]] | None:
        """The head of the queue, claimed, with its files (read in the same transaction)."""
        with self.store.write() as session:
            message = claim_next(session=session, now=now)
            if message is None or message.id is None:
                return None
            return message, load_files(
                session=session, message_id=message.id, payload=message.payload
            )

    def _next_due(self) -> float | None:
        with self.store.read() as session:
            return next_due(session=session)

    async def _idle(self) -> None:
        """Wait for a wake-up, for the head of the queue to fall due, or ``poll_s``."""
        timeout = self.config.poll_s
        due = await asyncio.to_thread(self._next_due)
        if due is not None:
            timeout = min(timeout, max(due - self._clock(), 0.0))
        if self._wake.is_set() or timeout <= 0:
            return
        waiter = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._sleep(timeout))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, sleeper):
                task.cancel()
            await asyncio.gather(waiter, sleeper, return_exceptions=True)

    async def _step(self) -> bool:
        """Try to deliver the head of the queue; False when there was nothing to do now."""
        client = self._client
        assert client is not None
        now = self._clock()
        blocked = max(
            self._blocked_until.get(client.route, 0.0), self._blocked_until.get("global", 0.0)
        )
        if blocked > now:
            await self._sleep(blocked - now)
            return True
        self._wake.clear()
        try:
            claimed = await asyncio.to_thread(self._claim, now)
        except UnreadableMessageError as exc:
            await asyncio.to_thread(self._poisoned, exc.message_id, None, 0, exc)
            return True
        if claimed is None:
            return False
        message, files = claimed
        assert message.id is not None
        try:
            sent = await client.send(message.payload, nonce=message.nonce, files=files)
        except RateLimitedError as exc:
            scope = "global" if exc.is_global else client.route
            self._blocked_until[scope] = self._clock() + exc.retry_after
            await asyncio.to_thread(self._retry, message, exc.retry_after, str(exc))
        except RejectedError as exc:
            if exc.status in AUTH_STATUSES:
                # A bad or revoked token refuses every message alike: keep them all and
                # retry slowly (say it once) instead of dead-lettering the whole outbox.
                await asyncio.to_thread(self._auth_failed, message, exc)
            else:
                await asyncio.to_thread(self._dead, message, exc)
        except DeliveryError as exc:
            delay = self._backoff(message.attempts)
            log.warning(
                "outbox message %d: %s; retry %d in %.2f s",
                message.id,
                exc,
                message.attempts + 1,
                delay,
            )
            await asyncio.to_thread(self._retry, message, delay, str(exc))
        except Exception as exc:  # the message's own fault: it would fail every time
            await asyncio.to_thread(self._poisoned, message.id, message.kind, message.attempts, exc)
        else:
            await asyncio.to_thread(self._sent, message, sent)
        self._strikes = None
        return True

    def _strike(self, exc: Exception) -> None:
        """Count an unexpected failure against the head; dead-letter it at MAX_STRIKES."""
        try:
            with self.store.read() as session:
                head = _head(session)
            if head is None:
                return
            head_id = head[0]
            count = self._strikes[1] + 1 if self._strikes and self._strikes[0] == head_id else 1
            self._strikes = (head_id, count)
            if count >= MAX_STRIKES:
                self._strikes = None
                self._poisoned(head_id, None, count - 1, exc)
        except Exception:
            log.exception("outbox: could not set aside the message that keeps failing")

    def _backoff(self, attempts: int) -> float:
        """Capped exponential, with "equal jitter": half fixed, half random."""
        delay = min(
            self.config.backoff_cap_s, self.config.backoff_base_s * 2.0 ** min(attempts, 30)
        )
        return delay / 2 + self._rng() * delay / 2

    def _sent(self, message: OutboxMessage, sent: Sent) -> None:
        assert message.id is not None
        now = self._clock()
        if sent.reset_after is not None:
            route = self._client.route if self._client is not None else "?"
            self._blocked_until[route] = now + sent.reset_after
        with self.store.write() as session:
            mark_sent(
                session=session, message_id=message.id, discord_message_id=sent.message_id, now=now
            )

    def _retry(self, message: OutboxMessage, delay: float, error: str) -> None:
        assert message.id is not None
        with self.store.write() as session:
            mark_retry(
                session=session, message_id=message.id, delay=delay, error=error, now=self._clock()
            )

    def _auth_failed(self, message: OutboxMessage, exc: RejectedError) -> None:
        assert message.id is not None
        with self.store.write() as session:
            mark_retry(
                session=session,
                message_id=message.id,
                delay=AUTH_RETRY_S,
                error=str(exc),
                now=self._clock(),
            )
            if not self._auth_reported:
                log.error("Discord refused our credentials (%s); delivery paused", exc.status)
                record_incident(
                    session=session,
                    rule="delivery",
                    severity="error",
                    summary=(
                        f"Discord refused the bot token or webhook ({exc.status}); messages "
                        f"are kept and retried every {AUTH_RETRY_S:g} s"
                    ),
                    evidence={"status": exc.status, "code": exc.code, "outbox_id": message.id},
                    action="delivery paused; fix the token or webhook and restart",
                )
                self._auth_reported = True

    def _poisoned(self, message_id: int, kind: str | None, attempts: int, exc: Exception) -> None:
        """Dead-letter a message that cannot be sent at all, with an incident."""
        reason = one_line(clean_text(f"{type(exc).__name__}: {exc}"), 300)
        log.error("outbox message %d cannot be sent, dead-lettered: %s", message_id, reason)
        with self.store.write() as session:
            mark_dead(session=session, message_id=message_id, error=reason)
            record_incident(
                session=session,
                rule="delivery",
                severity="error",
                summary=f"outbox message {message_id} cannot be sent: {reason}",
                evidence=json_safe(
                    {
                        "outbox_id": message_id,
                        "kind": kind,
                        "error": type(exc).__name__,
                        "attempts": attempts + 1,
                    }
                ),
                action=(
                    "dead-lettered; later messages continue "
                    f"(`harness messages retry {message_id}` to send it again)"
                ),
            )

    def _dead(self, message: OutboxMessage, exc: RejectedError) -> None:
        assert message.id is not None
        log.error("outbox message %d dead-lettered: %s", message.id, exc)
        with self.store.write() as session:
            mark_dead(session=session, message_id=message.id, error=str(exc))
            _record(session, message, exc)


def _record(session: Session, message: OutboxMessage, exc: RejectedError) -> None:
    detail = one_line(clean_text(exc.discord_message), 300) or "no message"
    record_incident(
        session=session,
        rule="delivery",
        severity="error",
        summary=f"Discord refused outbox message {message.id}: {exc.status} {detail}",
        evidence=json_safe(
            {
                "status": exc.status,
                "code": exc.code,
                "discord_message": exc.discord_message,
                "outbox_id": message.id,
                "kind": message.kind,
                "attempts": message.attempts + 1,
            }
        ),
        action="dead-lettered; later messages continue",
    )
