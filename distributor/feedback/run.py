"""Read the bounce mailbox into the ledger: parse each unread message, record it, then mark it done.

A message is recorded (one transaction) before it is moved or flagged, so a crash in between leaves it
unread and the next run reads it again, which the ledger counts once (by its source key). A message that
is neither a bounce nor a complaint, or too large to fetch, is left where it is and reported.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from distributor.errors import SettingsError
from distributor.feedback.mailboxes import BounceMailbox, open_mailbox
from distributor.feedback.parse import parse_report
from distributor.feedback.reports import Failure
from distributor.ledger.feedback import FeedbackLedger, RecordedFailure, SoftBounceRule
from distributor.ledger.store import Ledger, open_ledger
from distributor.settings import Settings


@dataclass(frozen=True)
class LeftMessage:
    """A message left in the mailbox, and why."""

    key: str
    reason: str


@dataclass
class BounceRun:
    """What one reading of the mailbox found."""

    where: str
    read: int = 0
    recorded: list[RecordedFailure] = field(default_factory=list)
    unknown: list[Failure] = field(default_factory=list)
    left: list[LeftMessage] = field(default_factory=list)
    repeated: int = 0           # messages recorded by an earlier run, now marked done
    interrupted: bool = False

    def count(self, kind: str) -> int:
        return sum(1 for failure in self.recorded if failure.kind == kind)

    @property
    def suppressed(self) -> list[RecordedFailure]:
        return [failure for failure in self.recorded if failure.suppressed]


def soft_bounce_rule(settings: Settings) -> SoftBounceRule:
    bounces = settings.bounces
    return SoftBounceRule(bounces.soft_bounces_to_suppress, bounces.soft_bounce_days * 86400)


def envelope_sender(settings: Settings) -> str:
    """The address bounces come back to (VERP adds +<subscriber id> to its local part)."""
    email = settings.channels.email
    return email.return_path or email.from_address


def mailbox_configured(settings: Settings) -> bool:
    return settings.bounces.imap is not None or settings.bounces.maildir is not None


def read_mailbox(settings: Settings, *, interrupt: threading.Event | None = None) -> BounceRun:
    """Open the bounce mailbox the settings name and the ledger, and read the one into the other."""
    if not mailbox_configured(settings):
        raise SettingsError("bounces: set bounces.imap or bounces.maildir (where bounce mail arrives)")
    with open_mailbox(settings.bounces) as mailbox, open_ledger(settings.ledger) as ledger:
        return read_bounces(mailbox, ledger, settings, interrupt=interrupt)


def read_bounces(mailbox: BounceMailbox, ledger: Ledger, settings: Settings, *,
                 interrupt: threading.Event | None = None) -> BounceRun:
    """Read at most `bounces.max_messages_per_run` unread messages of `mailbox` into `ledger`."""
    run = BounceRun(mailbox.where)
    feedback = FeedbackLedger(ledger)
    rule, sender = soft_bounce_rule(settings), envelope_sender(settings)
    for message in mailbox.unread(settings.bounces.max_messages_per_run):
        if interrupt is not None and interrupt.is_set():
            run.interrupted = True
            break
        run.read += 1
        if message.raw is None:
            run.left.append(LeftMessage(message.key, f"larger than bounces.max_message_bytes "
                                                     f"({message.size} bytes): not read"))
            continue
        report = parse_report(message.raw, envelope_sender=sender)
        if report is None:
            run.left.append(LeftMessage(message.key, "neither a bounce nor a complaint"))
            continue
        recorded = feedback.record(report, rule)
        run.recorded += recorded.failures
        run.unknown += recorded.unknown
        run.repeated += recorded.repeated
        mailbox.done(message.key)
    return run
