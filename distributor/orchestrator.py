"""Deliver a mail channel's planned rows: rate limit, retry, and record each outcome in the ledger.

Progress advances per recipient after the transport answered, never per batch. A row is marked
`sending`, durably, before its message is handed over; if the process dies then, the row stays
`sending` and is reported as uncertain instead of being sent twice.

Ledger writes share commits (group commit): the writes made while the event loop runs one round
are committed together at its end, and a message goes out only after its `sending` mark was
committed. A crash can then lose only outcomes of the last round, which leaves those rows
`sending` (uncertain, never resent): the guarantee of a commit per write, at a fraction of the
cost. A row is claimed only if it is still in a state this run sends, so two runs of the same
issue never both send it.
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from channels.email_message import Recipient
from channels.mail import MailChannel

from .errors import (ChannelStoppedError, PermanentDeliveryError, TransientDeliveryError,
                     UncertainDeliveryError)
from .ledger import DeliveryRow, Ledger
from .progress import Progress
from .ratelimit import RateLimiter
from .retry import RetryPolicy


@dataclass(frozen=True)
class ChannelOutcome:
    channel: str
    sent: int
    failed: int
    uncertain: int
    stopped: str | None          # why the channel stopped early, if it did
    detail: str | None = None    # a channel's own account of what it did (WeChat: the article's fate)


class MailRun:
    """Send every row of one channel that is in one of `statuses`, `concurrency` at a time."""

    def __init__(self, channel: MailChannel, ledger: Ledger, issue_key: str, *, policy: RetryPolicy,
                 limiter: RateLimiter, progress: Progress, concurrency: int,
                 interrupt: threading.Event | None = None):
        self.channel = channel
        self.ledger = ledger
        self.issue_key = issue_key
        self.policy = policy
        self.limiter = limiter
        self.progress = progress
        self.concurrency = max(1, concurrency)
        self.stopped: ChannelStoppedError | None = None
        self.statuses: tuple[str, ...] = ()
        self.pending_commit: asyncio.Future[None] | None = None
        # Set from a signal handler: messages being handed over finish, no new one starts.
        self.interrupt = interrupt or threading.Event()

    async def run(self, statuses: tuple[str, ...]) -> ChannelOutcome:
        """Deliver the rows and return the counts of this run."""
        self.statuses = statuses
        queue: asyncio.Queue[DeliveryRow | None] = asyncio.Queue(maxsize=self.concurrency * 4)

        async def produce() -> None:
            for row in self.ledger.rows(self.issue_key, self.channel.name, statuses):
                if self.interrupt.is_set() and not self.stopped:
                    self.stopped = ChannelStoppedError("interrupted; publish again to send the rest")
                if self.stopped:
                    break
                await queue.put(row)
            for _ in range(self.concurrency):
                await queue.put(None)

        async def work() -> None:
            while (row := await queue.get()) is not None:
                if not self.stopped and not self.interrupt.is_set():
                    await self.deliver(row)

        try:
            await asyncio.gather(produce(), *(work() for _ in range(self.concurrency)))
        finally:
            self.ledger.commit()
        counts = self.progress.counts(self.channel.name)
        return ChannelOutcome(self.channel.name, counts.sent, counts.failed, counts.uncertain,
                              str(self.stopped) if self.stopped else None)

    async def committed(self) -> None:
        """Return once this round's writes are committed; one commit serves every caller of the round."""
        self.commit_soon()
        await self.pending_commit

    def commit_soon(self) -> None:
        """Commit at the end of this event-loop round, so no transaction stays open across a wait
        (other processes — a lease renewal, the unsubscribe endpoint — need the write lock too)."""
        if self.pending_commit is None:
            self.pending_commit = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._commit)

    def _commit(self) -> None:
        future, self.pending_commit = self.pending_commit, None
        try:
            self.ledger.commit()
        except Exception as exc:        # every waiter of this round sees the failure
            future.set_exception(exc)
            future.exception()          # marked retrieved: a round may have no waiter
        else:
            future.set_result(None)

    async def deliver(self, row: DeliveryRow) -> None:
        """Deliver one row with retries and record what happened."""
        name, address = self.channel.name, row.recipient
        try:
            await self.limiter.acquire()
        except ChannelStoppedError as exc:
            self.stopped = exc
            return
        message = self.channel.prepare(Recipient(address, row.name, row.subscriber_id))
        self.ledger.begin()
        if not self.ledger.mark_sending(self.issue_key, name, address, message.message_id, self.statuses):
            return                      # another run has moved this row on since it was read
        await self.committed()
        try:
            reply = await self.policy.run(lambda: self.channel.deliver(message),
                                          on_retry=lambda *_: self.progress.retried(name))
        except PermanentDeliveryError as exc:
            self.record(address, "failed", reply=exc.reply, error=str(exc))
            if exc.suppress:
                self.ledger.suppress(address, reason=exc.reply or str(exc), source="bounce")
            self.progress.failed(name)
        except TransientDeliveryError as exc:
            self.record(address, "failed", reply=exc.reply,
                        error=f"gave up after {self.policy.attempts} attempts: {exc}")
            self.progress.failed(name)
        except UncertainDeliveryError as exc:
            self.record(address, "sending", reply=exc.reply, error=str(exc))
            self.progress.uncertain(name)
        except ChannelStoppedError as exc:
            # Refused before the message was handed over: the row goes back as it was.
            self.record(address, "pending", reply=None, error=None)
            self.stopped = exc
        else:
            self.record(address, "sent", reply=reply, error=None)
            self.progress.sent(name)

    def record(self, address: str, status: str, *, reply: str | None, error: str | None) -> None:
        """Write an outcome; it is committed at the end of this round, with whatever else came."""
        self.ledger.begin()
        self.ledger.mark(self.issue_key, self.channel.name, address, status, reply=reply, error=error)
        self.commit_soon()
