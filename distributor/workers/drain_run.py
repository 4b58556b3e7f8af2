"""One worker's share of one drain through one relay: claim batches of rows, send them with the row
run (distributor/delivery/row_run.py: the same retries, marks and group commits as `publish`),
keep the lease on them alive, and give back what it did not hand over.

A relay that refuses the session or cannot be reached, or whose caps are used up, is paused in the
ledger for every worker (`workers.relay_pause_seconds`): its rows wait, the other relays' go on.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from distributor.channel import Recipient, RowChannel, SendLimits
from distributor.delivery.progress import Progress
from distributor.delivery.ratelimit import RateLimiter
from distributor.delivery.retry import RetryPolicy
from distributor.delivery.row_run import RowRun
from distributor.errors import ChannelStoppedError
from distributor.ledger.store import DeliveryRow
from distributor.ledger.work import Drain, RelayShare, WorkLedger
from distributor.render.renditions import Renditions
from distributor.settings import Settings, relay_routes, through_relay


@dataclass(frozen=True)
class RelayRoute:
    """A relay a drain's rows go through: its share of the rows, the settings its transport is made
    with, and its limits."""

    share: RelayShare
    settings: Settings
    limits: SendLimits


@dataclass(frozen=True)
class DrainOutcome:
    """What one drain run through one relay did: its counts, and why it stopped if it did."""

    relay: str
    sent: int
    failed: int
    uncertain: int
    stopped: str | None


def routes(channel: RowChannel, settings: Settings, group_channels: tuple[str, ...]) -> list[RelayRoute]:
    """Return the relays `channel`'s rows go through: every relay of `smtp.relays` (or `smtp` itself)
    for the mail channels, the channel's own transport for any other."""
    if channel.transport_group != "smtp":
        limits = channel.limits(settings)
        group = channel.transport_group or channel.name
        return [RelayRoute(RelayShare(group, (), (), group_channels, limits.per_second, limits.hourly_cap,
                                 limits.daily_cap), settings, limits)]
    relays = relay_routes(settings)
    routed = tuple(domain.lower() for relay in relays for domain in relay.domains)
    found = []
    for relay in relays:
        relayed = through_relay(settings, relay)
        limits = channel.limits(relayed)
        share = RelayShare(relay.name, tuple(domain.lower() for domain in relay.domains),
                           () if relay.domains else routed, group_channels, limits.per_second,
                           limits.hourly_cap, limits.daily_cap)
        found.append(RelayRoute(share, relayed, limits))
    return found


class SharedRateLimiter(RateLimiter):
    """The rate of a relay held across workers: each new message waits for the send time its batch
    reserved in the ledger (`WorkLedger.claim_batch`); a relay's throttling still slows this process
    down as it does a lone `publish`. The caps are held by the claims, not here."""

    def __init__(self, clock: Callable[[], float] = time.time):
        super().__init__(0.0)
        self.wall_clock = clock
        self.slots: collections.deque[float] = collections.deque()

    def reserve(self, slots: tuple[float, ...]) -> None:
        self.slots.extend(slots)

    async def acquire(self, *, counted: bool = True) -> None:
        if counted and self.slots:
            wait = self.slots.popleft() - self.wall_clock()
            if wait > 0:
                await asyncio.sleep(wait)
        await super().acquire(counted=counted)


async def drain_through(drain: Drain, route: RelayRoute, channel: RowChannel, renditions: Renditions,
                        work: WorkLedger, links: Callable[[Recipient], str], policy: RetryPolicy, progress: Progress, *,
                        batch_size: int, pause_seconds: float, interrupt: threading.Event) -> DrainOutcome:
    """Send the drain's rows of `route`'s relay that this worker can claim, until none is left to claim,
    the relay stops or `interrupt` is set."""
    name = route.share.relay
    transport = channel.open_transport(route.settings)
    try:
        await transport.open()
    except ChannelStoppedError as exc:
        reason = f"{exc} ({exc.reply})" if exc.reply and exc.reply not in str(exc) else str(exc)
        with work.ledger.transaction():
            work.pause_relay(name, pause_seconds, reason)
        return DrainOutcome(name, 0, 0, 0, reason)
    limiter = SharedRateLimiter(work.ledger.clock)
    capped: list[str] = []

    def claimed() -> Iterator[DeliveryRow]:
        """Claim batch after batch, each once the run has taken the last; end when none is left to
        claim (the rest is sent, or held by live workers) or a cap is reached."""
        while not interrupt.is_set():
            batch = work.claim_batch(drain, route.share, batch_size)
            limiter.reserve(batch.slots)
            yield from batch.rows
            if batch.capped:
                capped.append(batch.capped)
                return
            if not batch.rows:
                return

    sender = channel.sender(renditions[channel.name], renditions.issue, route.settings, transport, links)
    run = RowRun(sender, work.ledger, drain.issue_key, policy=policy, limiter=limiter, progress=progress,
                 concurrency=route.limits.concurrency, interrupt=interrupt,
                 sender_refusals_to_stop=route.limits.sender_refusals_to_stop, rows=claimed())
    heartbeat = asyncio.ensure_future(_renew_while_running(work))
    try:
        outcome = await run.run(("pending",))
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        with work.ledger.transaction():
            work.release(name)
        await transport.close()
    stopped = outcome.stopped
    if capped and not stopped:
        stopped = f"the {capped[-1]} cap of relay {name} is reached; the workers go on when the window has passed"
    if stopped and not interrupt.is_set():
        with work.ledger.transaction():
            work.pause_relay(name, pause_seconds, stopped)
    return DrainOutcome(name, outcome.sent, outcome.failed, outcome.uncertain, stopped)


async def _renew_while_running(work: WorkLedger) -> None:
    """Renew the lease on this worker's rows every third of its length, in the run's event loop (so a
    renewal joins the round's commit, or commits at once when none is open)."""
    while True:
        await asyncio.sleep(work.lease_seconds / 3)
        work.renew()
