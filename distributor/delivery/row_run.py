"""The row run: deliver a row channel's planned rows, rate-limited and retried, each outcome in the ledger.

Progress advances per recipient after the transport answered, never per batch. A row is marked
`uncertain`, durably, before each attempt hands its message over (and its attempts counted); if the
process dies then, the row stays `uncertain` instead of being sent
twice. A refused attempt puts the row back to `pending` with the reply while it waits for its
retry, so dying then leaves it resendable. A relay throttling the sender slows the whole channel
down through the rate limiter; those refusals count against no row's attempts. A receiver refusing
the sender (5.7.x) fails that row without suppressing its address; `sender_refusals_to_stop` such
refusals in a row stop the channel and put their rows back to `pending`, for the run after the fix.

Ledger writes share commits (group commit): the writes made while the event loop runs one round
are committed together at its end, and a message goes out only after its `uncertain` mark was
committed. A crash can then lose only outcomes of the last round, which leaves those rows
`uncertain` (never resent): the guarantee of a commit per write, at a fraction of the
cost. A row is claimed only if it is still in a state this run sends, so two runs of the same
issue never both send it.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

from distributor.channel import PreparedMessage, Recipient, RowSender
from distributor.delivery.progress import Progress
from distributor.delivery.ratelimit import RateLimiter
from distributor.delivery.retry import RetryPolicy
from distributor.delivery.run_report import ChannelOutcome
from distributor.errors import (
    ChannelStoppedError,
    PermanentDeliveryError,
    SenderRefusedError,
    SenderThrottledError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from distributor.ledger.store import DeliveryRow, Ledger


class RowRun:
    """Send every row of one channel that is in one of `statuses`, `concurrency` at a time."""

    def __init__(self, channel: RowSender, ledger: Ledger, issue_key: str, *, policy: RetryPolicy,
                 limiter: RateLimiter, progress: Progress, concurrency: int,
                 interrupt: threading.Event | None = None, only_planned: bool = False,
                 sender_refusals_to_stop: int = 3, rows: Iterable[DeliveryRow] | None = None):
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
        # Only the addresses of the subscriber file as the plan read it (`Ledger.plan`), resent rows too.
        self.only_planned = only_planned
        self.sender_refusals_to_stop = sender_refusals_to_stop
        self.refused_in_a_row: list[str] = []   # the rows of the refusals of the sender since the last success
        self.stopped_by_refusals = False
        # Where the rows come from: the ledger's rows in `statuses` (one process sends the issue), or a
        # worker's claimed batches (distributor/workers/drain_run.py).
        self.source = rows

    async def run(self, statuses: tuple[str, ...]) -> ChannelOutcome:
        """Deliver the rows and return the counts of this run."""
        self.statuses = statuses
        queue: asyncio.Queue[DeliveryRow | None] = asyncio.Queue(maxsize=self.concurrency * 4)

        async def produce() -> None:
            source = self.source if self.source is not None else \
                self.ledger.rows(self.issue_key, self.channel.name, statuses, only_planned=self.only_planned)
            for row in source:
                if self.stopping():
                    break
                await queue.put(row)
            for _ in range(self.concurrency):
                await queue.put(None)

        async def work() -> None:
            while (row := await queue.get()) is not None:
                if not self.stopping():
                    await self.deliver_row(row)

        try:
            await asyncio.gather(produce(), *(work() for _ in range(self.concurrency)))
        finally:
            self.ledger.commit()
        counts = self.progress.counts(self.channel.name)
        return ChannelOutcome(self.channel.name, counts.sent, counts.failed, counts.uncertain,
                              str(self.stopped) if self.stopped else None)

    def stopping(self) -> bool:
        """Whether no new message may start: the channel stopped, or the run was interrupted (which
        stops it from now on)."""
        if self.interrupt.is_set() and not self.stopped:
            self.stopped = ChannelStoppedError("interrupted; publish again to send the rest")
        return self.stopped is not None

    async def committed(self) -> None:
        """Return once this round's writes are committed; one commit serves every caller of the round."""
        await self.commit_soon()

    def commit_soon(self) -> asyncio.Future[None]:
        """Commit at the end of this event-loop round, so no transaction stays open across a wait
        (other processes — a lease renewal, the unsubscribe endpoint — need the write lock too);
        return the round's future, which the commit settles."""
        if self.pending_commit is None:
            self.pending_commit = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._commit, self.pending_commit)
        return self.pending_commit

    def _commit(self, future: asyncio.Future[None]) -> None:
        self.pending_commit = None
        try:
            self.ledger.commit()
        except Exception as exc:        # every waiter of this round sees the failure
            future.set_exception(exc)
            future.exception()          # marked retrieved: a round may have no waiter
        else:
            future.set_result(None)

    async def deliver_row(self, row: DeliveryRow) -> None:
        """Deliver one row with retries and record what happened."""
        name, address = self.channel.name, row.recipient
        try:
            await self.limiter.acquire()
        except ChannelStoppedError as exc:
            self.stopped = exc
            return
        message = self.channel.prepare(Recipient(address, row.name, row.subscriber_id))
        attempts = _Attempts(self, message, row.attempts)
        try:
            reply = await self.policy.run(attempts.make, on_retry=lambda *_: self.progress.retried(name))
        except _NotOurs:
            return                      # another run has moved this row on since it was read
        except SenderRefusedError as exc:
            self.record(address, "failed", reply=exc.reply, error=f"{exc}: {exc.meaning}")
            self.progress.failed(name)
            self.refused_in_a_row.append(address)
            if self.stopped_by_refusals or len(self.refused_in_a_row) >= self.sender_refusals_to_stop:
                self._stop_for_refusals(exc)
        except PermanentDeliveryError as exc:
            self.record(address, "failed", reply=exc.reply, error=str(exc))
            if exc.suppress:
                self.ledger.suppress(address, reason=exc.reply or str(exc), source="bounce")
            self.progress.failed(name)
        except SenderThrottledError as exc:
            # The relay never took the sender again within the retry deadline: the row is back to
            # pending (as after every refused attempt) and the channel stops, for a later run.
            self.stopped = ChannelStoppedError(
                f"the relay kept refusing the sender for {self.policy.deadline_seconds:g} s (retry.deadline_seconds):"
                f" {exc.reply or exc}", reply=exc.reply)
        except TransientDeliveryError as exc:
            self.record(address, "failed", reply=exc.reply, error=f"gave up after {attempts.made} attempts: {exc}")
            self.progress.failed(name)
        except UncertainDeliveryError as exc:
            self.record(address, "uncertain", reply=exc.reply, error=str(exc))
            self.progress.uncertain(name)
        except ChannelStoppedError as exc:
            # Refused before the message was handed over: the row goes back as it was.
            self.record(address, "pending", reply=None, error=None, uncount=True)
            self.stopped = exc
        else:
            self.record(address, "sent", reply=reply, error=None)
            self.limiter.succeeded()
            self.progress.sent(name)
            self.refused_in_a_row.clear()

    def _stop_for_refusals(self, last: SenderRefusedError) -> None:
        """Stop the channel: the receiver refuses the sender, so every further message would fail the
        same way. The refused rows go back to `pending` uncounted, to be sent once the sender is fixed.
        A refusal of a message still in flight when the channel stopped goes back the same way."""
        for address in self.refused_in_a_row:
            self.record(address, "pending", reply=None, error=None, uncount=True)
            self.progress.unfailed(self.channel.name)
        if not self.stopped:
            self.stopped = ChannelStoppedError(
                f"{len(self.refused_in_a_row)} refusals of the sender in a row (smtp.policy_refusals_to_stop), "
                f"the last: {last.reply or last}: {last.meaning}", reply=last.reply)
        self.stopped_by_refusals = True
        self.refused_in_a_row.clear()

    def record(self, address: str, status: str, *, reply: str | None, error: str | None,
               uncount: bool = False) -> None:
        """Write an outcome; it is committed at the end of this round, with whatever else came.
        `uncount` takes back the attempt the claim counted (nothing was tried for this recipient)."""
        self.ledger.begin()
        self.ledger.mark(self.issue_key, self.channel.name, address, status, reply=reply, error=error,
                         uncount=uncount)
        self.commit_soon()


class _NotOurs(Exception):
    """The row was no longer in a state this run sends when it came to claim it."""


class _Attempts:
    """The attempts at one row: each claims the row (`uncertain`, counted in the ledger) just before
    its hand-over, and a refused one puts the row back to `pending` with the reply before the
    backoff, so a process that dies while waiting leaves it to be sent, not uncertain."""

    def __init__(self, run: RowRun, message: PreparedMessage, earlier: int):
        self.run = run
        self.message = message
        self.made = earlier             # attempts recorded in the ledger for this row, this one's included
        self.claim_from = run.statuses  # a retry claims the row back from `pending` only

    async def make(self) -> str:
        run, address = self.run, self.message.recipient
        if self.claim_from is not run.statuses:
            if run.stopping():
                raise _NotOurs          # the row waits as `pending` for a later run
            await run.limiter.acquire(counted=False)
        # A sender that can says itself when the hand-over starts (`deliver_handing_over`: the mail
        # channels, once their transport holds a connection); for any other the claim comes first.
        handing_over = getattr(run.channel, "deliver_handing_over", None)
        try:
            if handing_over is not None:
                return await handing_over(self.message, self.claim)
            await self.claim()
            return await run.channel.deliver(self.message)
        except TransientDeliveryError as exc:
            throttled = isinstance(exc, SenderThrottledError)
            if throttled:
                self.made -= 1
                run.limiter.throttled(run.policy.delay_seconds(run.limiter.throttles + 1, exc.retry_after_seconds))
            run.record(address, "pending", reply=exc.reply, error=str(exc), uncount=throttled)
            raise

    async def claim(self) -> None:
        """Mark the row `uncertain`, counted and committed, before its message can leave; raise `_NotOurs`
        when another run has moved it on (it is theirs to send)."""
        run = self.run
        if run.stopping():              # waited for a connection while the run stopped: it starts no more
            raise _NotOurs
        run.ledger.begin()
        if not run.ledger.claim(run.issue_key, run.channel.name, self.message.recipient, self.message.message_id,
                                self.claim_from):
            raise _NotOurs
        self.made += 1
        self.claim_from = ("pending",)
        await run.committed()
