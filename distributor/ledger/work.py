"""Work shared by workers on any number of machines, in the ledger: the issues left to them (drains),
delivery rows claimed in batches under a lease, the relays paused, and each relay's send slots.

A worker claims a batch of a drain's pending rows for one relay by writing its name and a lease
time on them (`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL, so two workers' claims pass each
other; SQLite's single writer needs none) and renews the lease while it works (`renew`). Rows whose
lease has run out — their worker died — are claimable again; a row it had handed over is
`uncertain`, not `pending`, so it is never claimed again. The lease only shares the work out: the
row's own move from `pending` to `uncertain` (`Ledger.claim`) keeps each message to one hand-over.

A relay's rate and caps hold across every worker together: a claim counts, in the ledger, what the
relay sent in the last hour and day and what is claimed and not yet sent, and takes no more than the
caps leave; with a rate, it reserves the batch's send times (`send_slots`) so the workers' batches
follow one another. Claims of a relay with a rate or caps therefore take its `send_slots` row in
turn; without either, they run side by side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributor.ledger.store import DeliveryRow, Ledger

SCHEMA = """
CREATE TABLE IF NOT EXISTS drains (
    issue_key TEXT NOT NULL, channel TEXT NOT NULL, issue_path TEXT NOT NULL, content_hash TEXT NOT NULL,
    title TEXT, state TEXT NOT NULL DEFAULT 'open', created_at REAL NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (issue_key, channel));
CREATE TABLE IF NOT EXISTS relay_pauses (relay TEXT PRIMARY KEY, until REAL NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS send_slots (relay TEXT PRIMARY KEY, next_slot REAL NOT NULL);
"""
TABLES = ("drains", "relay_pauses", "send_slots")
# A batch spans at most this many seconds of a relay's rate, so a worker never holds far more than it sends soon.
_BATCH_SPAN_SECONDS = 2.0


@dataclass(frozen=True)
class Drain:
    """An issue's planned rows on one row channel, left to the workers by `publish --via-workers`: each
    worker renders `issue_path` (with `title`) itself and sends only if it comes to `content_hash`."""

    issue_key: str
    channel: str
    issue_path: str
    content_hash: str
    title: str | None


@dataclass(frozen=True)
class RelayShare:
    """The rows one relay sends: those of `domains`, or (the default relay) those of no other relay's
    domains; with its rate and caps, counted over `channels` (the channels sharing its transport)."""

    relay: str
    domains: tuple[str, ...]
    routed_elsewhere: tuple[str, ...]   # for the default relay: every other relay's domains
    channels: tuple[str, ...]
    per_second: float
    hourly_cap: int | None
    daily_cap: int | None


@dataclass(frozen=True)
class Batch:
    """Rows claimed for a relay, with the time each may start (empty: no rate) and, when the caps left
    fewer than asked, which cap."""

    rows: tuple[DeliveryRow, ...]
    slots: tuple[float, ...]
    capped: str | None


class WorkLedger:
    """The work of `holder` (one worker process) in `ledger`; leases last `lease_seconds` unless renewed."""

    def __init__(self, ledger: Ledger, holder: str, lease_seconds: float):
        self.ledger, self.db, self.holder, self.lease_seconds = ledger, ledger.db, holder, lease_seconds

    # --- drains ----------------------------------------------------------------------------

    def open_drain(self, drain: Drain) -> None:
        """Leave the drain's pending rows to the workers (again, if it was done before)."""
        now = self.ledger.clock()
        with self.ledger.transaction():
            self.db.execute(
                "INSERT INTO drains VALUES (?, ?, ?, ?, ?, 'open', ?, ?) ON CONFLICT (issue_key, channel) DO UPDATE"
                " SET issue_path = excluded.issue_path, content_hash = excluded.content_hash,"
                " title = excluded.title, state = 'open', updated_at = excluded.updated_at",
                (drain.issue_key, drain.channel, drain.issue_path, drain.content_hash, drain.title, now, now))

    def open_drains(self) -> list[Drain]:
        return [Drain(*row) for row in self.db.execute(
            "SELECT issue_key, channel, issue_path, content_hash, title FROM drains WHERE state = 'open'"
            " ORDER BY created_at, issue_key, channel")]

    def finish_if_drained(self, drain: Drain) -> bool:
        """Mark the drain done when no row of it is pending any more; return whether it is done."""
        with self.ledger.transaction():
            left = self.remaining(drain.issue_key, drain.channel)
            if not left:
                self.db.execute("UPDATE drains SET state = 'done', updated_at = ? WHERE issue_key = ? AND channel = ?",
                                (self.ledger.clock(), drain.issue_key, drain.channel))
        return not left

    def remaining(self, issue_key: str, channel: str) -> int:
        """Count the drain's rows not done yet: pending (not suppressed, claimed or not), and those a live
        worker is handing over (uncertain under a lease that runs: its outcome is on the way). A dead
        worker's hand-overs stay uncertain once its lease has run out."""
        in_flight = self.db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE issue_key = ? AND channel = ? AND status = 'uncertain'"
            " AND lease_until > ?", (issue_key, channel, self.ledger.clock())).fetchone()[0]
        return self.ledger.count(issue_key, channel, ("pending",)) + in_flight

    # --- claims ------------------------------------------------------------------------------

    def claim_batch(self, drain: Drain, share: RelayShare, size: int) -> Batch:
        """Claim up to `size` of the drain's pending rows that `share`'s relay sends and no live lease
        holds, within the relay's caps, reserving their send times under its rate."""
        self.ledger.commit()                # the run's writes so far are committed first: none joins a claim
        serialised = bool(share.per_second or share.hourly_cap or share.daily_cap)
        postgres = self.ledger.dialect == "postgresql"
        now = self.ledger.clock()
        with self._claim_transaction(serialised or not postgres):
            next_slot = now
            if serialised:
                self.db.execute("INSERT OR IGNORE INTO send_slots VALUES (?, 0)", (share.relay,))
                next_slot = max(now, self.db.execute(
                    f"SELECT next_slot FROM send_slots WHERE relay = ?{' FOR UPDATE' if postgres else ''}",
                    (share.relay,)).fetchone()[0])
            wanted, capped = self._within_caps(share, size, now)
            if share.per_second:
                wanted = min(wanted, max(1, math.floor(share.per_second * _BATCH_SPAN_SECONDS)))
            rows = self._claim(drain, share, wanted, now, next_slot) if wanted else ()
            slots: tuple[float, ...] = ()
            if share.per_second and rows:
                slots = tuple(next_slot + index / share.per_second for index in range(len(rows)))
                self.db.execute("UPDATE send_slots SET next_slot = ? WHERE relay = ?",
                                (next_slot + len(rows) / share.per_second, share.relay))
        return Batch(rows, slots, capped if len(rows) < size else None)

    def _claim_transaction(self, serialised: bool):
        if serialised:
            return self.ledger.transaction()
        return _PlainTransaction(self.ledger)

    def _within_caps(self, share: RelayShare, size: int, now: float) -> tuple[int, str | None]:
        """Return how many rows the relay's caps let this claim take, and the cap that limits it."""
        wanted, capped = size, None
        for name, cap, window in (("hourly", share.hourly_cap, 3600), ("daily", share.daily_cap, 86400)):
            if cap is None:
                continue
            used = self._used(share, now - window, now)
            if cap - used < wanted:
                wanted, capped = max(0, cap - used), name
        return wanted, capped

    def _used(self, share: RelayShare, since: float, now: float) -> int:
        """Count what the relay sent (or is sending) since `since` and what is claimed for it, unsent; the
        default relay counts too what `publish` sent itself, through the one relay it knows."""
        names = share.channels
        marks = ",".join("?" * len(names))
        return self.db.execute(
            f"SELECT COUNT(*) FROM deliveries WHERE channel IN ({marks}) AND (relay = ? OR (? AND relay IS NULL)) AND"
            " ((status IN ('sent', 'uncertain') AND updated_at >= ?) OR (status = 'pending' AND lease_until > ?))",
            (*names, share.relay, not share.domains, since, now)).fetchone()[0]

    def _claim(self, drain: Drain, share: RelayShare, wanted: int, now: float,
               first_slot: float) -> tuple[DeliveryRow, ...]:
        from distributor.ledger.store import DeliveryRow
        postgres = self.ledger.dialect == "postgresql"
        route, route_values = _route_filter(share)
        until = max(now, first_slot + wanted / share.per_second if share.per_second else now) + self.lease_seconds
        claimed = [row[0] for row in self.db.execute(
            "UPDATE deliveries SET lease_owner = ?, lease_until = ?, relay = ?"
            " WHERE (issue_key, channel, recipient) IN (SELECT issue_key, channel, recipient FROM deliveries"
            " WHERE issue_key = ? AND channel = ? AND status = 'pending' AND (lease_until IS NULL OR lease_until <= ?)"
            f" AND lower(recipient) NOT IN (SELECT address FROM suppressions){route}"
            f" ORDER BY recipient LIMIT ?{' FOR UPDATE SKIP LOCKED' if postgres else ''}) RETURNING recipient",
            (self.holder, until, share.relay, drain.issue_key, drain.channel, now, *route_values, wanted))]
        if not claimed:
            return ()
        marks = ",".join("?" * len(claimed))
        return tuple(DeliveryRow(*row) for row in self.db.execute(
            "SELECT d.recipient, d.name, d.status, d.attempts, d.last_error, d.reply, d.message_id, d.content_hash,"
            " s.id FROM deliveries d LEFT JOIN subscriber_ids s ON s.address = lower(d.recipient)"
            f" WHERE d.issue_key = ? AND d.channel = ? AND d.recipient IN ({marks}) ORDER BY d.recipient",
            (drain.issue_key, drain.channel, *claimed)))

    def renew(self) -> int:
        """Extend the lease of every row this worker holds: those it has not handed over, and those it
        is handing over (an outcome ends the lease: `Ledger.mark`); return how many."""
        now = self.ledger.clock()
        return self.db.execute(
            "UPDATE deliveries SET lease_until = CASE WHEN lease_until > ? THEN lease_until ELSE ? END"
            " WHERE lease_owner = ? AND status IN ('pending', 'uncertain')",
            (now + self.lease_seconds, now + self.lease_seconds, self.holder)).rowcount

    def release(self, relay: str | None = None) -> int:
        """Give back the rows this worker holds and has not handed over (of `relay` only, when named)."""
        return self.db.execute(
            "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ? AND status = 'pending'"
            + (" AND relay = ?" if relay else ""), (self.holder, *((relay,) if relay else ()))).rowcount

    # --- relays -----------------------------------------------------------------------------

    def pause_relay(self, relay: str, seconds: float, reason: str) -> None:
        """No worker claims rows for `relay` for `seconds` (it refused the session, or is unreachable)."""
        self.db.execute("INSERT INTO relay_pauses VALUES (?, ?, ?) ON CONFLICT (relay) DO UPDATE"
                        " SET until = excluded.until, reason = excluded.reason",
                        (relay, self.ledger.clock() + seconds, reason))

    def paused_relays(self) -> dict[str, str]:
        """Return the relays paused now, each with why."""
        return dict(self.db.execute("SELECT relay, reason FROM relay_pauses WHERE until > ?", (self.ledger.clock(),)))


def _route_filter(share: RelayShare) -> tuple[str, tuple[str, ...]]:
    """Return the SQL condition (and its values) that keeps the rows `share`'s relay sends."""
    if share.domains:
        return f" AND domain IN ({','.join('?' * len(share.domains))})", share.domains
    if share.routed_elsewhere:
        return (f" AND (domain IS NULL OR domain NOT IN ({','.join('?' * len(share.routed_elsewhere))}))",
                share.routed_elsewhere)
    return "", ()


class _PlainTransaction:
    """A transaction that takes no lock of its own: on PostgreSQL, a claim that only SKIP LOCKED keeps
    apart from the others."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def __enter__(self) -> None:
        self.ledger.db.plain_begin()        # type: ignore[union-attr]   # PostgreSQL only (see claim_batch)

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        self.ledger.db.execute("COMMIT" if kind is None else "ROLLBACK")
