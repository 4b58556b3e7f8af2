"""The delivery loop's promises, checked from outside: through a second connection to the real
SQLite file, and with two runs of the same issue at once."""
from __future__ import annotations

import asyncio
import datetime as dt
import io
import sqlite3
import threading

import pytest

from distributor.channels.email.settings import EmailSettings
from distributor.channels.mail.message import MessageParts, MessageTemplate
from distributor.channels.mail.sender import MailSender
from distributor.delivery.progress import Progress
from distributor.delivery.ratelimit import RateLimiter
from distributor.delivery.retry import RetryPolicy
from distributor.delivery.row_run import RowRun
from distributor.ledger.store import Ledger

ISSUE = "/weekly-1/"
ADDRESSES = [f"r{i:03d}@example.org" for i in range(40)]


class LedgerWatchingTransport:
    """Stands in for the relay; at each hand-over it reads the row through its own connection."""

    def __init__(self, path):
        self.path = path
        self.seen: list[tuple[str, str]] = []

    async def open(self) -> None:
        self.db = sqlite3.connect(self.path)

    async def close(self) -> None:
        self.db.close()

    async def send(self, envelope_from: str, recipient: str, wire: bytes, hand_over=None) -> str:
        if hand_over is not None:       # the row run's claim, awaited before anything could deliver it
            await hand_over()
        (status,) = self.db.execute("SELECT status FROM deliveries WHERE recipient = ?", (recipient,)).fetchone()
        self.seen.append((recipient, status))
        await asyncio.sleep(0)          # let the other workers (and runs) interleave
        return "250 ok"


def planned_ledger(tmp_path) -> Ledger:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.plan(ISSUE, "email", "hash", ((address, None) for address in ADDRESSES))
    return ledger


def row_run(ledger: Ledger, transport, links=lambda recipient: "https://example.org/u/t") -> RowRun:
    parts = MessageParts(ISSUE, "email", "Subject", "text", "<p>html</p>")
    template = MessageTemplate(parts, EmailSettings(), date=dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc))
    channel = MailSender("email", template, transport, links)
    return RowRun(channel, ledger, ISSUE, policy=RetryPolicy(attempts=1), limiter=RateLimiter(0),
                   progress=Progress(io.StringIO(), live=False), concurrency=8)


async def run_all(*runs: RowRun) -> None:
    for run in runs:
        await run.channel.transport.open()
    try:
        await asyncio.gather(*(run.run(("pending",)) for run in runs))
    finally:
        for run in runs:
            await run.channel.transport.close()


def test_every_row_is_committed_as_uncertain_before_its_message_is_handed_over(tmp_path):
    transport = LedgerWatchingTransport(tmp_path / "ledger.sqlite3")
    asyncio.run(run_all(row_run(planned_ledger(tmp_path), transport)))
    assert sorted(transport.seen) == [(address, "uncertain") for address in ADDRESSES]
    assert Ledger(tmp_path / "ledger.sqlite3").counts(ISSUE) == {"email": {"sent": len(ADDRESSES)}}


def test_two_runs_of_the_same_issue_send_each_message_once(tmp_path):
    """Two runs, as two publish processes would be: each its own thread, event loop and connection."""
    planned_ledger(tmp_path).close()
    transports = [LedgerWatchingTransport(tmp_path / "ledger.sqlite3") for _ in range(2)]
    runs = [row_run(Ledger(tmp_path / "ledger.sqlite3"), transport) for transport in transports]
    threads = [threading.Thread(target=asyncio.run, args=(run_all(run),)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    # What the code promises: every row handed over exactly once, by whichever run claimed it first,
    # and claimed (`uncertain`) before the hand-over. How the rows split between the runs is up to
    # the scheduler: one run may well take them all.
    sent = [recipient for transport in transports for recipient, _ in transport.seen]
    assert sorted(sent) == ADDRESSES
    assert all(status == "uncertain" for transport in transports for _, status in transport.seen)
    assert Ledger(tmp_path / "ledger.sqlite3").counts(ISSUE) == {"email": {"sent": len(ADDRESSES)}}


def test_a_message_that_cannot_be_built_leaves_its_row_untouched(tmp_path):
    def broken_link(recipient):
        raise ValueError("no subscriber id")

    ledger = planned_ledger(tmp_path)
    with pytest.raises(ValueError):
        asyncio.run(run_all(row_run(ledger, LedgerWatchingTransport(tmp_path / "ledger.sqlite3"), broken_link)))
    assert Ledger(tmp_path / "ledger.sqlite3").counts(ISSUE) == {"email": {"pending": len(ADDRESSES)}}
