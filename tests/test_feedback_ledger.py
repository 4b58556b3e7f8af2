"""The ledger's side of bounces and complaints, on a real SQLite file: who a report is about, what it
suppresses (hard at once, soft after N in M days, complaints at once, refusals of the sender never), and
that a report read twice counts once."""
from __future__ import annotations

import pytest

from distributor.feedback.reports import Failure, FeedbackReport
from distributor.ledger.feedback import FeedbackLedger, SoftBounceRule
from distributor.ledger.store import Ledger
from distributor.ledger.subscribers import SubscriberStore

DAY = 86400.0
RULE = SoftBounceRule(count=3, window_seconds=30 * DAY)
READER = "reader@example.net"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(open_test_ledger, clock: Clock):
    with open_test_ledger(clock) as ledger:
        ledger.plan("weekly-1", "email", "hash", [(READER, None), ("other@example.net", None)])
        for address, message_id in ((READER, "<m1@example.org>"), ("other@example.net", "<m2@example.org>")):
            ledger.subscriber_id(address)
            ledger.claim("weekly-1", "email", address, message_id, ("pending",))
            ledger.mark("weekly-1", "email", address, "sent", reply="250 ok", error=None)
        ledger.commit()
        yield ledger


def report(key: str, *failures: Failure, verp_id: str | None = None, message_id: str | None = None) -> FeedbackReport:
    return FeedbackReport(key, failures, verp_id=verp_id, original_message_id=message_id)


def test_a_hard_bounce_suppresses_at_once_and_names_its_issue(ledger: Ledger) -> None:
    recorded = FeedbackLedger(ledger).record(
        report("k1", Failure(READER, "hard", "5.1.1", "550 user unknown"), message_id="<m1@example.org>"), RULE)
    (failure,) = recorded.failures
    assert (failure.address, failure.suppressed, failure.issue_key, failure.channel) == \
        (READER, True, "weekly-1", "email")
    suppression = ledger.suppression(READER)
    assert suppression is not None and suppression.source == "bounce" and "5.1.1" in (suppression.reason or "")
    assert FeedbackLedger(ledger).counts("weekly-1") == {"email": {"hard": 1}}


def test_the_same_report_read_again_counts_nothing(ledger: Ledger) -> None:
    soft = report("k1", Failure(READER, "soft", "4.2.2", "mailbox full"))
    feedback = FeedbackLedger(ledger)
    assert len(feedback.record(soft, RULE).failures) == 1
    again = feedback.record(soft, RULE)
    assert again.repeated and again.failures == ()
    assert ledger.db.execute("SELECT count(*) FROM feedback").fetchone()[0] == 1


def test_soft_bounces_suppress_once_enough_arrive_within_the_window(ledger: Ledger, clock: Clock) -> None:
    feedback = FeedbackLedger(ledger)
    feedback.record(report("old", Failure(READER, "soft", "4.2.2")), RULE)
    clock.now += 31 * DAY                       # the first is now outside the 30-day window
    first = feedback.record(report("s1", Failure(READER, "soft", "4.2.2")), RULE).failures[0]
    second = feedback.record(report("s2", Failure(READER, "soft", "4.4.7")), RULE).failures[0]
    assert (first.soft_count, second.soft_count) == (1, 2)
    assert not ledger.is_suppressed(READER)
    third = feedback.record(report("s3", Failure(READER, "soft", "5.2.2", "mailbox full")), RULE).failures[0]
    assert third.soft_count == 3 and third.suppressed
    suppression = ledger.suppression(READER)
    assert suppression is not None and suppression.source == "bounce"
    assert "3 soft bounces within 30 days" in (suppression.reason or "")


def test_a_complaint_found_by_its_message_id_suppresses_as_a_complaint(ledger: Ledger) -> None:
    store = SubscriberStore(ledger)
    with ledger.transaction():
        store.save(READER, name=None, language=None, attributes={})
        store.set_status(READER, "weekly", "active", source="command")
    complaint = report("arf", Failure(None, "complaint", None, "abuse"), message_id="<m1@example.org>")
    (failure,) = FeedbackLedger(ledger).record(complaint, RULE).failures
    assert failure.address == READER and failure.kind == "complaint" and failure.suppressed
    suppression = ledger.suppression(READER)
    assert suppression is not None and suppression.source == "complaint"
    reader = store.subscriber(READER)
    assert reader is not None and [s.status for s in reader.subscriptions] == ["complained"]


def test_verp_names_the_reader_when_the_report_names_a_forwarded_address(ledger: Ledger) -> None:
    verp_id = ledger.subscriber_id(READER)
    bounce = report("k1", Failure("reader@forwarded.example.com", "hard", "5.1.1"), verp_id=verp_id)
    (failure,) = FeedbackLedger(ledger).record(bounce, RULE).failures
    assert failure.address == READER and ledger.is_suppressed(READER)
    assert not ledger.is_suppressed("reader@forwarded.example.com")


def test_a_refusal_of_the_sender_suppresses_nobody(ledger: Ledger) -> None:
    dmarc = report("k1", Failure(READER, "policy", "5.7.26", "DMARC"), message_id="<m1@example.org>")
    (failure,) = FeedbackLedger(ledger).record(dmarc, RULE).failures
    assert failure.kind == "policy" and not failure.suppressed
    assert not ledger.is_suppressed(READER)


def test_a_report_about_an_address_never_mailed_changes_nothing(ledger: Ledger) -> None:
    forged = report("k1", Failure("stranger@example.com", "hard", "5.1.1"))
    recorded = FeedbackLedger(ledger).record(forged, RULE)
    assert recorded.failures == () and [f.address for f in recorded.unknown] == ["stranger@example.com"]
    assert not ledger.is_suppressed("stranger@example.com")
    assert ledger.db.execute("SELECT count(*) FROM feedback").fetchone()[0] == 0
