"""Deliver a mail channel's planned rows: rate limit, retry, and record each outcome in the ledger.

Progress advances per recipient after the transport answered, never per batch. A row is marked
`sending` just before its message is handed over; if the process dies then, the row stays
`sending` and is reported as uncertain instead of being sent twice.
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
        # Set from a signal handler: messages being handed over finish, no new one starts.
        self.interrupt = interrupt or threading.Event()

    async def run(self, statuses: tuple[str, ...]) -> ChannelOutcome:
        """Deliver the rows and return the counts of this run."""
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

        await asyncio.gather(produce(), *(work() for _ in range(self.concurrency)))
        counts = self.progress.counts(self.channel.name)
        return ChannelOutcome(self.channel.name, counts.sent, counts.failed, counts.uncertain,
                              str(self.stopped) if self.stopped else None)

    async def deliver(self, row: DeliveryRow) -> None:
        """Deliver one row with retries and record what happened."""
        name, key, address = self.channel.name, self.issue_key, row.recipient
        recipient = Recipient(address, row.name, row.subscriber_id)
        try:
            await self.limiter.acquire()
        except ChannelStoppedError as exc:
            self.stopped = exc
            return
        self.ledger.mark_sending(key, name, address, self.channel.template.message_id(address))
        try:
            reply = await self.policy.run(lambda: self.channel.deliver(recipient),
                                          on_retry=lambda *_: self.progress.retried(name))
        except PermanentDeliveryError as exc:
            self.ledger.mark(key, name, address, "failed", reply=exc.reply, error=str(exc))
            if exc.suppress:
                self.ledger.suppress(address, reason=exc.reply or str(exc), source="bounce")
            self.progress.failed(name)
        except TransientDeliveryError as exc:
            self.ledger.mark(key, name, address, "failed", reply=exc.reply,
                             error=f"gave up after {self.policy.attempts} attempts: {exc}")
            self.progress.failed(name)
        except UncertainDeliveryError as exc:
            self.ledger.mark(key, name, address, "sending", reply=exc.reply, error=str(exc))
            self.progress.uncertain(name)
        except ChannelStoppedError as exc:
            # Refused before the message was handed over: the row goes back as it was.
            self.ledger.mark(key, name, address, "pending", error=None)
            self.stopped = exc
        else:
            self.ledger.mark(key, name, address, "sent", reply=reply)
            self.progress.sent(name)
