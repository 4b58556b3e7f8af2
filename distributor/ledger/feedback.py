"""Bounces and complaints in the ledger: each reported failure once, and the suppressions they lead to.

A report is matched to the mail it answers by its original Message-ID (each delivery row keeps the
Message-ID it was sent with), else by its VERP subscriber id, else by the address it names; whichever
comes first names the recipient, since a forwarded address bounces under another name than the one
mailed. Only an address the ledger has mailed or knows is recorded: a report about anyone else (a
forged bounce, a stranger's mail) is returned as unknown and changes nothing.

The rules: a hard bounce suppresses at once (source `bounce`), a complaint too (source `complaint`);
soft bounces suppress once `soft_to_suppress` of them arrived within the window; a refusal about the
sender (`policy`) is recorded and suppresses nobody. A report is recorded once by its `source_key`, so
reading the same message again (a crash before it was moved) counts nothing twice.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from distributor.feedback.reports import Failure, FailureKind, FeedbackReport

if TYPE_CHECKING:
    from distributor.ledger.store import Connection, Ledger

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    source_key TEXT NOT NULL, address TEXT NOT NULL, kind TEXT NOT NULL, status TEXT, detail TEXT,
    issue_key TEXT, channel TEXT, received_at REAL NOT NULL,
    PRIMARY KEY (source_key, address)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS feedback_by_address ON feedback (address, kind, received_at);
CREATE INDEX IF NOT EXISTS feedback_by_issue ON feedback (issue_key, channel, kind);
CREATE INDEX IF NOT EXISTS deliveries_by_message_id ON deliveries (message_id);
"""
TABLES = ("feedback",)
_MAX_DETAIL = 500


@dataclass(frozen=True)
class SoftBounceRule:
    """Soft bounces suppress an address once `count` of them arrived within `window_seconds`."""

    count: int
    window_seconds: float


@dataclass(frozen=True)
class RecordedFailure:
    """One failure as the ledger took it: whose, what kind, the mail it answered when known (issue and
    channel), whether it suppressed the address now, and the soft bounces counted in the window."""

    address: str
    kind: FailureKind
    status: str | None
    detail: str | None
    issue_key: str | None
    channel: str | None
    suppressed: bool
    soft_count: int = 0


@dataclass(frozen=True)
class Recorded:
    """What one report changed: the failures recorded (empty when the report was recorded before), and
    those naming nobody the ledger knows (left unrecorded)."""

    failures: tuple[RecordedFailure, ...]
    unknown: tuple[Failure, ...]
    repeated: bool = False


class FeedbackLedger:
    """The feedback table of one ledger."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.db: Connection = ledger.db

    def record(self, report: FeedbackReport, rule: SoftBounceRule) -> Recorded:
        """Record the report's failures and apply the rules, in one transaction."""
        with self.ledger.transaction():
            if self.db.execute("SELECT 1 FROM feedback WHERE source_key = ? LIMIT 1",
                               (report.source_key,)).fetchone():
                return Recorded((), (), repeated=True)
            delivery = self._delivery(report.original_message_id)
            verp_address = self.ledger.address_for(report.verp_id) if report.verp_id else None
            recorded: list[RecordedFailure] = []
            unknown: list[Failure] = []
            for failure in report.failures:
                address = (delivery[2] if delivery else None) or verp_address or failure.address
                if address is None or not self._known(address):
                    unknown.append(failure)
                    continue
                outcome = self._record_one(report.source_key, address.lower(), failure, delivery, rule)
                if outcome is not None:
                    recorded.append(outcome)
            return Recorded(tuple(recorded), tuple(unknown))

    def _record_one(self, source_key: str, address: str, failure: Failure,
                    delivery: tuple[str, str, str] | None, rule: SoftBounceRule) -> RecordedFailure | None:
        now = self.ledger.clock()
        detail = (failure.detail or "")[:_MAX_DETAIL] or None
        issue_key, channel = (delivery[0], delivery[1]) if delivery else (None, None)
        inserted = self.db.execute(
            "INSERT OR IGNORE INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (source_key, address, failure.kind, failure.status, detail, issue_key, channel, now)).rowcount
        if not inserted:
            return None                 # a second failure for the same address in one report
        soft_count, suppress_reason = 0, None
        if failure.kind == "hard":
            suppress_reason = _reason("hard bounce", failure)
        elif failure.kind == "complaint":
            suppress_reason = _reason("complaint", failure)
        elif failure.kind == "soft":
            soft_count = self.db.execute(
                "SELECT count(*) FROM feedback WHERE address = ? AND kind = 'soft' AND received_at >= ?",
                (address, now - rule.window_seconds)).fetchone()[0]
            if soft_count >= rule.count:
                suppress_reason = _reason(f"{soft_count} soft bounces within "
                                          f"{rule.window_seconds / 86400:g} days, the last", failure)
        suppressed = suppress_reason is not None and not self.ledger.is_suppressed(address)
        if suppress_reason is not None:
            self.ledger.suppress(address, reason=suppress_reason,
                                 source="complaint" if failure.kind == "complaint" else "bounce")
        return RecordedFailure(address, failure.kind, failure.status, detail, issue_key, channel, suppressed,
                               soft_count)

    def _delivery(self, message_id: str | None) -> tuple[str, str, str] | None:
        """The delivery (issue key, channel, recipient) that was sent with `message_id`."""
        if not message_id:
            return None
        row = self.db.execute("SELECT issue_key, channel, recipient FROM deliveries WHERE message_id = ?"
                              " LIMIT 1", (message_id.strip(),)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def _known(self, address: str) -> bool:
        """Whether the ledger has mailed `address` or holds it (a subscriber id, a reader)."""
        folded = address.lower()
        return bool(self.db.execute("SELECT 1 FROM subscriber_ids WHERE address = ?", (folded,)).fetchone()
                    or self.db.execute("SELECT 1 FROM deliveries WHERE lower(recipient) = ? LIMIT 1",
                                       (folded,)).fetchone())

    def counts(self, issue_key: str) -> dict[str, dict[str, int]]:
        """The failures recorded per channel and kind for the mails of one issue."""
        counts: dict[str, dict[str, int]] = {}
        for channel, kind, number in self.db.execute(
                "SELECT channel, kind, count(*) FROM feedback WHERE issue_key = ? GROUP BY channel, kind",
                (issue_key,)):
            counts.setdefault(channel, {})[kind] = number
        return counts

    def latest(self, address: str) -> RecordedFailure | None:
        """The last failure recorded for `address`."""
        row = self.db.execute(
            "SELECT address, kind, status, detail, issue_key, channel FROM feedback WHERE address = ?"
            " ORDER BY received_at DESC LIMIT 1", (address.lower(),)).fetchone()
        if row is None:
            return None
        found, kind, status, detail, issue_key, channel = row
        return RecordedFailure(found, kind, status, detail, issue_key, channel, suppressed=False)

    def bounced(self) -> Iterator[tuple[str, str, str | None, float]]:
        """Every address suppressed by a bounce or a complaint: (address, source, reason, since)."""
        yield from self.db.execute(
            "SELECT address, source, reason, created_at FROM suppressions"
            " WHERE source IN ('bounce', 'complaint') ORDER BY address")


def _reason(what: str, failure: Failure) -> str:
    return " ".join(part for part in (what, failure.status, failure.detail) if part)[:_MAX_DETAIL]
