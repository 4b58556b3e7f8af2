"""Deliver a planned issue: the step channels first (WeChat), then the row channels, each row channel
through its transport group's one transport (email and text share one SMTP pool).

The async half of `publish`: everything here runs after validation and planning, inside one
event loop, and returns one `ChannelOutcome` per channel for the report.
"""
from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from distributor.audience import unsubscribe
from distributor.channel import Recipient, RowChannel, RowTransport, SendLimits, StepChannel, StepOutcome, Steps
from distributor.delivery.progress import Progress
from distributor.delivery.ratelimit import RateLimiter
from distributor.delivery.retry import RetryPolicy
from distributor.delivery.row_run import RowRun
from distributor.delivery.run_report import ChannelOutcome
from distributor.delivery.step_run import run_steps
from distributor.errors import (
    ChannelStoppedError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from distributor.ledger.store import Ledger
from distributor.render.renditions import Renditions
from distributor.settings import Settings


def unsubscribe_links(settings: Settings, secret: str) -> Callable[[Recipient], str]:
    """Return the function that gives each recipient its signed unsubscribe URL."""
    pattern = settings.channels.email.unsubscribe_url

    def link(recipient: Recipient) -> str:
        if not recipient.subscriber_id:
            raise ValueError(f"{recipient.address} has no subscriber id: it was never planned in the ledger")
        return pattern.replace("{token}", unsubscribe.sign(recipient.subscriber_id, secret))

    return link


class Transports:
    """The transports of a run, one per transport group, each opened when its first channel needs it."""

    def __init__(self, settings: Settings, sink: TextIO | None):
        self.settings, self.sink = settings, sink
        self.made: dict[str, RowTransport] = {}
        self.opened: set[str] = set()

    def of(self, channel: RowChannel) -> RowTransport:
        group = group_of(channel)
        if group not in self.made:
            self.made[group] = channel.open_transport(self.settings, sink=self.sink)
        return self.made[group]

    async def open(self, channel: RowChannel) -> RowTransport:
        """Return the channel's transport, opened (ChannelStoppedError when it cannot be)."""
        transport = self.of(channel)
        group = group_of(channel)
        if group not in self.opened:
            await transport.open()
            self.opened.add(group)
        return transport

    async def close(self) -> None:
        for group in self.opened:
            await self.made[group].close()
        self.opened.clear()


@dataclass(frozen=True)
class RowPlan:
    """What the row channels of a run send, and through what."""

    channels: tuple[RowChannel, ...]  # the row channels with recipients, in order
    totals: dict[str, int]            # channel -> rows to deliver
    statuses: tuple[str, ...]         # the ledger states this run delivers
    transports: Transports
    secret: str                       # signs the unsubscribe tokens
    live_progress: bool               # redraw a progress line (on a terminal, not in a dry run)


@dataclass(frozen=True)
class StepPlan:
    """A step channel of a run, with the steps it is to take."""

    channel: StepChannel
    steps: Steps[StepOutcome]


async def deliver_issue(steps: tuple[StepPlan, ...], rows: RowPlan, renditions: Renditions, settings: Settings,
                  ledger: Ledger, err: TextIO, *, interrupt: threading.Event | None = None) -> list[ChannelOutcome]:
    """Deliver the step channels first (WeChat loads and checks every image before its first call, so
    bad input stops the run before any mail went out), then the row channels."""
    outcomes = await deliver_steps(steps, renditions.issue.key, settings, ledger)
    return outcomes + await _send_rows(renditions, rows, settings, ledger, err, interrupt)


async def deliver_steps(steps: tuple[StepPlan, ...], issue_key: str, settings: Settings,
                        ledger: Ledger) -> list[ChannelOutcome]:
    """Deliver the step channels, one after another."""
    return [await _run_steps(plan, issue_key, settings, ledger) for plan in steps]


async def _run_steps(plan: StepPlan, issue_key: str, settings: Settings, ledger: Ledger) -> ChannelOutcome:
    name, lease = plan.channel.name, plan.channel.lease_times(settings)
    try:
        done = await run_steps(plan.steps, ledger, issue_key, channel=name, label=plan.channel.label,
                               policy=RetryPolicy.from_settings(settings.retry), lease_seconds=lease.seconds,
                               lease_wait_seconds=lease.wait_seconds)
    except (PermanentDeliveryError, UncertainDeliveryError) as exc:
        uncertain = isinstance(exc, UncertainDeliveryError)
        return ChannelOutcome(name, 0, int(not uncertain), int(uncertain), None, detail=str(exc))
    except (ChannelStoppedError, TransientDeliveryError) as exc:
        return ChannelOutcome(name, 0, 0, 0, str(exc))
    return ChannelOutcome(name, 1, 0, 0, None, detail=done.detail)


async def _send_rows(renditions: Renditions, plan: RowPlan, settings: Settings, ledger: Ledger,
                     err: TextIO, interrupt: threading.Event | None) -> list[ChannelOutcome]:
    sending = [channel for channel in plan.channels if plan.totals.get(channel.name)]
    if not sending:
        return []
    policy = RetryPolicy.from_settings(settings.retry)
    progress = Progress(err, live=plan.live_progress)
    for channel in plan.channels:
        progress.expect(channel.name, plan.totals[channel.name])
    limiters: dict[str, RateLimiter] = {}
    links = unsubscribe_links(settings, plan.secret)
    display = asyncio.ensure_future(progress.show_while_running())
    outcomes: list[ChannelOutcome] = []
    stopped: set[str] = set()       # transport groups that stopped: the rest of their channels wait for a later run
    try:
        for channel in sending:
            group = group_of(channel)
            if group in stopped:
                continue
            try:
                transport = await plan.transports.open(channel)
            except ChannelStoppedError as exc:      # the relay refused the session: no channel of it can go on
                stopped.add(group)
                outcomes += [ChannelOutcome(other.name, 0, 0, 0, str(exc)) for other in plan.channels
                             if group_of(other) == group]
                continue
            limits = channel.limits(settings)
            if group not in limiters:
                members = [other.name for other in plan.channels if group_of(other) == group]
                limiters[group] = _limiter(limits, ledger, members)
            sender = channel.sender(renditions[channel.name], renditions.issue, settings, transport, links)
            run = RowRun(sender, ledger, renditions.issue.key, policy=policy, limiter=limiters[group],
                         progress=progress, concurrency=limits.concurrency, interrupt=interrupt,
                         only_planned=True, sender_refusals_to_stop=limits.sender_refusals_to_stop)
            outcomes.append(await run.run(plan.statuses))
            if outcomes[-1].stopped:
                stopped.add(group)
    finally:
        display.cancel()
        await asyncio.gather(display, return_exceptions=True)
        await plan.transports.close()
    return outcomes


def group_of(channel: RowChannel) -> str:
    """Return the transport group of `channel`: its channels share one transport, rate and caps."""
    return channel.transport_group or channel.name


def _limiter(limits: SendLimits, ledger: Ledger, channels: list[str]) -> RateLimiter:
    """Return the rate limiter of one transport group, its caps counting what `channels` sent before."""
    now = ledger.clock()
    return RateLimiter(limits.per_second, hourly_cap=limits.hourly_cap, daily_cap=limits.daily_cap,
                       sent_last_hour=ledger.sent_since(now - 3600, channels),
                       sent_last_day=ledger.sent_since(now - 86400, channels))


async def send_test_copy(address: str, renditions: Renditions, channels: tuple[RowChannel, ...], settings: Settings,
                         transports: Transports, secret: str) -> list[ChannelOutcome]:
    """Send one copy per row channel to `address`, outside the ledger; the first that fails ends the run."""
    policy = RetryPolicy.from_settings(settings.retry)
    recipient = Recipient(address, None, "test")
    outcomes = []
    try:
        for channel in channels:
            try:
                transport = await transports.open(channel)
                sender = channel.sender(renditions[channel.name], renditions.issue, settings, transport,
                                        unsubscribe_links(settings, secret))
                message = sender.prepare(recipient, test_copy=True)
                reply = await policy.run(functools.partial(sender.deliver, message))
            except DeliveryError as exc:
                stopped = str(exc) if isinstance(exc, ChannelStoppedError) else None
                outcomes.append(ChannelOutcome(channel.name, 0, int(stopped is None), 0, stopped,
                                               detail=f"test copy to {address} failed: {exc}"))
                break
            outcomes.append(ChannelOutcome(channel.name, 1, 0, 0, None, detail=f"test copy sent to {address}: {reply}"))
    finally:
        await transports.close()
    return outcomes
