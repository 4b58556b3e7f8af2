"""Deliver a planned issue: WeChat first, then the mail channels through one transport.

The async half of `publish`: everything here runs after validation and planning, inside one
event loop, and returns one `ChannelOutcome` per channel for the report.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import threading
from dataclasses import dataclass
from typing import Callable, TextIO

from distributor.channels.mail.message import MessageParts, MessageTemplate, Recipient
from distributor.channels.mail.sender import MailChannel, MailTransport
from distributor.channels.wechat.publisher import publish_wechat

from distributor.audience import unsubscribe
from distributor.errors import (EXIT_FAILED, EXIT_OK, EXIT_STOPPED, ChannelStoppedError, DeliveryError,
                     PermanentDeliveryError, TransientDeliveryError, UncertainDeliveryError)
from distributor.ledger.store import Ledger
from distributor.models import WechatRendition
from distributor.delivery.row_run import ChannelOutcome, MailRun
from distributor.render.renditions import Renditions
from distributor.delivery.progress import Progress
from distributor.delivery.ratelimit import RateLimiter
from distributor.delivery.retry import RetryPolicy
from distributor.settings import Settings



def message_templates(renditions: Renditions, settings: Settings) -> dict[str, MessageTemplate]:
    """Prepare each mail channel's message once for the issue, dated now."""
    now = dt.datetime.now(dt.timezone.utc)
    key, templates = renditions.issue.key, {}
    if renditions.email is not None:
        parts = MessageParts(key, "email", renditions.email.subject, renditions.email.text, renditions.email.html)
        templates["email"] = MessageTemplate(parts, settings.channels.email, date=now)
    if renditions.text is not None:
        parts = MessageParts(key, "text", renditions.text.subject, renditions.text.text, None)
        templates["text"] = MessageTemplate(parts, settings.channels.email, date=now)
    return templates


def unsubscribe_links(settings: Settings, secret: str) -> Callable[[Recipient], str]:
    """Return the function that gives each recipient its signed unsubscribe URL."""
    pattern = settings.channels.email.unsubscribe_url

    def link(recipient: Recipient) -> str:
        if not recipient.subscriber_id:
            raise ValueError(f"{recipient.address} has no subscriber id: it was never planned in the ledger")
        return pattern.replace("{token}", unsubscribe.sign(recipient.subscriber_id, secret))

    return link


@dataclass(frozen=True)
class MailPlan:
    """What the mail channels of a run send, and through what."""

    totals: dict[str, int]            # channel -> rows to deliver
    statuses: tuple[str, ...]         # the ledger states this run delivers
    transport: MailTransport | None   # None when no mail channel has recipients
    secret: str                       # signs the unsubscribe tokens
    live_progress: bool               # redraw a progress line (on a terminal, not in a dry run)


async def deliver(renditions: Renditions, wechat: WechatRendition | None, mail: MailPlan, settings: Settings,
                  ledger: Ledger, err: TextIO, *, to_wechat: str | None = None,
                  interrupt: threading.Event | None = None) -> list[ChannelOutcome]:
    """Deliver WeChat first (it loads and checks every image before its first call, so bad input
    stops the run before any mail went out), then the mail channels."""
    outcomes = []
    if wechat is not None:
        outcomes.append(await _deliver_wechat(wechat, renditions, settings, ledger, to_wechat))
    return outcomes + await _send_mail(renditions, mail, settings, ledger, err, interrupt)


async def _deliver_wechat(rendition: WechatRendition, renditions: Renditions, settings: Settings,
                          ledger: Ledger, to_wechat: str | None) -> ChannelOutcome:
    policy = RetryPolicy.from_settings(settings.retry)
    try:
        done = await publish_wechat(rendition, renditions.issue, settings, ledger, policy,
                                    to_wechat=to_wechat)
    except (PermanentDeliveryError, UncertainDeliveryError) as exc:
        uncertain = isinstance(exc, UncertainDeliveryError)
        return ChannelOutcome("wechat", 0, int(not uncertain), int(uncertain), None, detail=str(exc))
    except (ChannelStoppedError, TransientDeliveryError) as exc:
        return ChannelOutcome("wechat", 0, 0, 0, str(exc))
    return ChannelOutcome("wechat", 1, 0, 0, None, detail=done.detail)


async def _send_mail(renditions: Renditions, mail: MailPlan, settings: Settings, ledger: Ledger,
                     err: TextIO, interrupt: threading.Event | None) -> list[ChannelOutcome]:
    transport = mail.transport
    if transport is None or not any(mail.totals.values()):
        return []
    policy = RetryPolicy.from_settings(settings.retry)
    progress = Progress(err, live=mail.live_progress)
    for name, total in mail.totals.items():
        progress.expect(name, total)
    smtp, now = settings.smtp, ledger.clock()
    limiter = RateLimiter(smtp.per_second, hourly_cap=smtp.hourly_cap, daily_cap=smtp.daily_cap,
                          sent_last_hour=ledger.sent_since(now - 3600), sent_last_day=ledger.sent_since(now - 86400))
    templates = message_templates(renditions, settings)
    links = unsubscribe_links(settings, mail.secret)
    try:
        await transport.open()
    except ChannelStoppedError as exc:
        return [ChannelOutcome(name, 0, 0, 0, str(exc)) for name in mail.totals]
    display = asyncio.ensure_future(progress.show_while_running())
    outcomes = []
    try:
        for name, total in mail.totals.items():
            if total:
                channel = MailChannel(name, templates[name], transport, links)
                run = MailRun(channel, ledger, renditions.issue.key, policy=policy, limiter=limiter,
                              progress=progress, concurrency=smtp.pool_size, interrupt=interrupt,
                              only_planned=True)
                outcomes.append(await run.run(mail.statuses))
                if outcomes[-1].stopped:
                    break
    finally:
        display.cancel()
        await asyncio.gather(display, return_exceptions=True)
        await transport.close()
    return outcomes


async def send_test_copy(address: str, renditions: Renditions, settings: Settings, transport: MailTransport,
                          secret: str, out: TextIO) -> int:
    """Send one copy per mail channel to `address`, outside the ledger."""
    policy = RetryPolicy.from_settings(settings.retry)
    recipient = Recipient(address, None, "test")
    await transport.open()
    try:
        for name, template in message_templates(renditions, settings).items():
            channel = MailChannel(name, template, transport, unsubscribe_links(settings, secret))
            message = channel.prepare(recipient, test_copy=True)
            try:
                reply = await policy.run(lambda: channel.deliver(message))
            except DeliveryError as exc:
                print(f"  {name}: test copy to {address} failed: {exc}", file=out)
                return EXIT_STOPPED if isinstance(exc, ChannelStoppedError) else EXIT_FAILED
            print(f"  {name}: test copy sent to {address}: {reply}", file=out)
    finally:
        await transport.close()
    return EXIT_OK
