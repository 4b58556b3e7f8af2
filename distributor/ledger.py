"""The ledger: one SQLite file that remembers what was sent, to whom, and what must not be sent.

Deliveries are unique on (issue key, channel, recipient) and move pending → sending → sent or
failed. A row left in `sending` is uncertain: the message may have been handed over, so it is
not sent again unless asked. The file runs in WAL mode with synchronous=NORMAL: a commit
costs tens of microseconds and survives a killed process (only a power cut can lose the
last commits, and then the row is still `sending`, i.e. uncertain, not lost).
"""
from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .errors import InputError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    issue_key TEXT NOT NULL, channel TEXT NOT NULL, recipient TEXT NOT NULL,
    name TEXT, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, reply TEXT, message_id TEXT, content_hash TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (issue_key, channel, recipient)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriber_ids (
    id TEXT PRIMARY KEY, address TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS suppressions (
    address TEXT PRIMARY KEY, reason TEXT, source TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    issue_key TEXT NOT NULL, channel TEXT NOT NULL, step TEXT NOT NULL, value TEXT NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY (issue_key, channel, step));
CREATE TABLE IF NOT EXISTS cache (
    kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, expires_at REAL,
    PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, issue_path TEXT NOT NULL, channels TEXT NOT NULL,
    run_at REAL NOT NULL, zone TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'scheduled',
    lease_owner TEXT, lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0, started_at REAL,
    finished_at REAL, reason TEXT, issue_key TEXT, content_hash TEXT, exit_status INTEGER,
    created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, run_at);
"""
STATUSES = ("pending", "sending", "sent", "failed")
_PLAN_BATCH = 2000


@dataclass(frozen=True)
class DeliveryRow:
    recipient: str
    name: str | None
    status: str
    attempts: int
    last_error: str | None
    reply: str | None
    message_id: str | None
    content_hash: str | None
    subscriber_id: str | None


JOB_STATES = ("scheduled", "running", "done", "failed", "missed", "cancelled")
_JOB_COLUMNS = ("id, issue_path, channels, run_at, zone, state, lease_owner, lease_until, attempts, started_at,"
                " finished_at, reason, issue_key, content_hash, exit_status")


@dataclass(frozen=True)
class Job:
    """A scheduled send: publish `issue_path` on `channels` at `run_at` (UTC seconds), as read in `zone`.
    A `running` job belongs to `lease_owner` until `lease_until`; after that any runner may take it."""

    id: int
    issue_path: str
    channels: tuple[str, ...]
    run_at: float
    zone: str
    state: str
    lease_owner: str | None
    lease_until: float | None
    attempts: int
    started_at: float | None
    finished_at: float | None
    reason: str | None
    issue_key: str | None
    content_hash: str | None
    exit_status: int | None

    @classmethod
    def from_row(cls, row: tuple) -> "Job":
        values = list(row)
        values[2] = tuple(name for name in values[2].split(",") if name)
        return cls(*values)


class Ledger:
    """The SQLite ledger at `path` (":memory:" for one that vanishes, as a dry run wants)."""

    def __init__(self, path: str | Path, *, clock=time.time):
        self.clock = clock
        target = str(path)
        if target != ":memory:":
            target_path = Path(target).expanduser()
            try:
                target_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"cannot create the ledger folder: {exc}", path=str(target_path)) from exc
            target = str(target_path)
        # Blocking channel calls run in worker threads and reach the ledger from there (the WeChat
        # token store); SQLite's serialized mode makes one shared connection safe for that.
        self.db = sqlite3.connect(target, isolation_level=None, timeout=30.0, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    @classmethod
    def snapshot(cls, path: str | Path) -> "Ledger":
        """Return an in-memory copy of the ledger at `path` (empty if there is none): a dry run
        sees what a real run would see, and whatever it writes is gone when it ends."""
        copy = cls(":memory:")
        source = Path(path).expanduser()
        if source.exists():
            original = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
            try:
                original.backup(copy.db)
            finally:
                original.close()
        return copy

    def close(self) -> None:
        self.commit()
        self.db.close()

    def begin(self) -> None:
        """Open a transaction unless one is open: later writes wait for `commit` to become durable."""
        if not self.db.in_transaction:
            self.db.execute("BEGIN")

    def commit(self) -> None:
        """Make every write since `begin` durable, in one commit."""
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    # --- subscribers and suppression -------------------------------------------------------

    def subscriber_id(self, address: str) -> str:
        """Return the opaque id that stands for `address` in unsubscribe links, making one if new."""
        folded = address.lower()
        row = self.db.execute("SELECT id FROM subscriber_ids WHERE address = ?", (folded,)).fetchone()
        if row:
            return row[0]
        new_id = secrets.token_urlsafe(12)
        self.db.execute("INSERT OR IGNORE INTO subscriber_ids (id, address) VALUES (?, ?)", (new_id, folded))
        return self.db.execute("SELECT id FROM subscriber_ids WHERE address = ?", (folded,)).fetchone()[0]

    def address_for(self, subscriber_id: str) -> str | None:
        row = self.db.execute("SELECT address FROM subscriber_ids WHERE id = ?", (subscriber_id,)).fetchone()
        return row[0] if row else None

    def suppress(self, address: str, *, reason: str, source: str) -> None:
        """Never send to `address` again (until `unsuppress`); repeating it changes nothing."""
        self.db.execute("INSERT OR IGNORE INTO suppressions VALUES (?, ?, ?, ?)",
                        (address.lower(), reason, source, self.clock()))

    def unsuppress(self, address: str) -> bool:
        return self.db.execute("DELETE FROM suppressions WHERE address = ?", (address.lower(),)).rowcount > 0

    def suppressions(self) -> Iterator[tuple[str, str, str, float]]:
        yield from self.db.execute("SELECT address, reason, source, created_at FROM suppressions ORDER BY address")

    def is_suppressed(self, address: str) -> bool:
        return self.db.execute("SELECT 1 FROM suppressions WHERE address = ?", (address.lower(),)).fetchone() is not None

    def suppression(self, address: str) -> tuple[str, str | None, str, float] | None:
        """Return (address, reason, source, time) if `address` is suppressed, else None."""
        return self.db.execute("SELECT address, reason, source, created_at FROM suppressions WHERE address = ?",
                               (address.lower(),)).fetchone()

    # --- deliveries ------------------------------------------------------------------------

    def plan(self, issue_key: str, channel: str, content_hash: str,
             recipients: Iterable[tuple[str, str | None]]) -> None:
        """Add a pending row for each (address, name) not yet known for this issue and channel,
        and give each new address its opaque subscriber id, in batched transactions."""
        now = self.clock()
        batch: list[tuple] = []
        for address, name in recipients:
            batch.append((issue_key, channel, address, name, content_hash, now, now))
            if len(batch) >= _PLAN_BATCH:
                self._insert(batch)
                batch = []
        self._insert(batch)

    def _insert(self, batch: list[tuple]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR IGNORE INTO deliveries (issue_key, channel, recipient, name, content_hash,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
            self.db.executemany("INSERT OR IGNORE INTO subscriber_ids (id, address) VALUES (?, ?)",
                                [(secrets.token_urlsafe(12), row[2].lower()) for row in batch])

    def rows(self, issue_key: str, channel: str, statuses: Iterable[str], *,
             skip_suppressed: bool = True) -> Iterator[DeliveryRow]:
        """Yield the rows of this issue and channel whose status is one of `statuses` (leaving out
        suppressed addresses unless asked); a page at a time in recipient order, so rows may be
        updated while this runs and none is seen twice."""
        wanted = tuple(statuses)
        marks = ",".join("?" * len(wanted))
        last = ""
        while True:
            page = self.db.execute(
                "SELECT d.recipient, d.name, d.status, d.attempts, d.last_error, d.reply, d.message_id,"
                " d.content_hash, s.id FROM deliveries d LEFT JOIN subscriber_ids s"
                " ON s.address = lower(d.recipient) WHERE d.issue_key = ? AND d.channel = ?"
                f" AND d.status IN ({marks}) AND d.recipient > ?"
                f" AND (? OR lower(d.recipient) NOT IN (SELECT address FROM suppressions))"
                " ORDER BY d.recipient LIMIT 500",
                (issue_key, channel, *wanted, last, not skip_suppressed)).fetchall()
            if not page:
                return
            for row in page:
                yield DeliveryRow(*row)
            last = page[-1][0]

    def count(self, issue_key: str, channel: str, statuses: Iterable[str]) -> int:
        """Count the rows that `rows()` would yield."""
        wanted = tuple(statuses)
        return self.db.execute(
            f"SELECT COUNT(*) FROM deliveries WHERE issue_key = ? AND channel = ? AND status IN"
            f" ({','.join('?' * len(wanted))}) AND lower(recipient) NOT IN (SELECT address FROM suppressions)",
            (issue_key, channel, *wanted)).fetchone()[0]

    def sent_since(self, since: float) -> int:
        """Count messages handed to the relay (or being handed over) since `since`, for its caps."""
        return self.db.execute("SELECT COUNT(*) FROM deliveries WHERE status IN ('sent', 'sending')"
                               " AND updated_at >= ?", (since,)).fetchone()[0]

    def mark_sending(self, issue_key: str, channel: str, recipient: str, message_id: str) -> None:
        """Record that the message is about to be handed over: from now on a crash leaves it uncertain."""
        self.db.execute(
            "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, message_id = ?,"
            " updated_at = ? WHERE issue_key = ? AND channel = ? AND recipient = ?",
            (message_id, self.clock(), issue_key, channel, recipient))

    def mark(self, issue_key: str, channel: str, recipient: str, status: str, *,
             reply: str | None = None, error: str | None = None) -> None:
        """Set the row's status with what the other side said (`sent`, `failed`, or back to `pending`)."""
        if status not in STATUSES:
            raise ValueError(status)
        self.db.execute(
            "UPDATE deliveries SET status = ?, reply = COALESCE(?, reply), last_error = ?, updated_at = ?"
            " WHERE issue_key = ? AND channel = ? AND recipient = ?",
            (status, reply, error, self.clock(), issue_key, channel, recipient))

    def counts(self, issue_key: str) -> dict[str, dict[str, int]]:
        """Return {channel: {status: count}} for the issue."""
        result: dict[str, dict[str, int]] = {}
        for channel, status, count in self.db.execute(
                "SELECT channel, status, COUNT(*) FROM deliveries WHERE issue_key = ?"
                " GROUP BY channel, status", (issue_key,)):
            result.setdefault(channel, {})[status] = count
        return result

    def content_hashes(self, issue_key: str, channel: str) -> set[str]:
        rows = self.db.execute("SELECT DISTINCT content_hash FROM deliveries WHERE issue_key = ? AND"
                               " channel = ? AND status != 'pending'", (issue_key, channel))
        return {row[0] for row in rows if row[0]}

    # --- step checkpoints and caches ---------------------------------------------------------

    def checkpoint(self, issue_key: str, channel: str, step: str) -> str | None:
        row = self.db.execute("SELECT value FROM checkpoints WHERE issue_key = ? AND channel = ? AND step = ?",
                              (issue_key, channel, step)).fetchone()
        return row[0] if row else None

    def save_checkpoint(self, issue_key: str, channel: str, step: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                        (issue_key, channel, step, value, self.clock()))

    def cached(self, kind: str, key: str) -> str | None:
        """Return the cached value unless it has expired."""
        row = self.db.execute("SELECT value, expires_at FROM cache WHERE kind = ? AND key = ?",
                              (kind, key)).fetchone()
        if row is None or (row[1] is not None and row[1] <= self.clock()):
            return None
        return row[0]

    def cache(self, kind: str, key: str, value: str, expires_at: float | None = None) -> None:
        self.db.execute("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?)", (kind, key, value, expires_at))

    def uncache(self, kind: str, key: str) -> None:
        self.db.execute("DELETE FROM cache WHERE kind = ? AND key = ?", (kind, key))

    # --- scheduled jobs ----------------------------------------------------------------------

    def add_job(self, issue_path: str, channels: Iterable[str], run_at: float, zone: str) -> Job:
        """Store a job in state `scheduled` and return it."""
        cursor = self.db.execute("INSERT INTO jobs (issue_path, channels, run_at, zone, created_at)"
                                 " VALUES (?, ?, ?, ?, ?)", (issue_path, ",".join(channels), run_at, zone,
                                                             self.clock()))
        return self.job(cursor.lastrowid)

    def job(self, job_id: int) -> Job | None:
        row = self.db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def jobs(self) -> list[Job]:
        """Return every job, earliest run time first."""
        return [Job.from_row(row) for row in self.db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY run_at, id")]

    def cancel_job(self, job_id: int, now: float) -> Job | None:
        """Cancel the job if no runner holds it (it is `scheduled`, or `running` with a lapsed lease);
        return it as it is now (None if unknown)."""
        self.db.execute("UPDATE jobs SET state = 'cancelled', finished_at = ?, lease_owner = NULL, lease_until = NULL"
                        " WHERE id = ? AND (state = 'scheduled' OR (state = 'running' AND lease_until < ?))",
                        (now, job_id, now))
        return self.job(job_id)

    def claim_job(self, owner: str, now: float, lease_seconds: float) -> Job | None:
        """Take the earliest job that is due, or whose runner's lease lapsed, for `owner` until
        now + lease_seconds; None when there is none. Two runners never get the same job: the
        choice and the claim happen under one write lock."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            rows = self.db.execute(
                "UPDATE jobs SET state = 'running', lease_owner = ?, lease_until = ?, attempts = attempts + 1"
                " WHERE id = (SELECT id FROM jobs WHERE (state = 'scheduled' AND run_at <= ?)"
                " OR (state = 'running' AND lease_until < ?) ORDER BY run_at, id LIMIT 1)"
                f" RETURNING {_JOB_COLUMNS}", (owner, now + lease_seconds, now, now)).fetchall()
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return Job.from_row(rows[0]) if rows else None

    def renew_lease(self, job_id: int, owner: str, until: float) -> bool:
        """Extend `owner`'s lease on a running job; False if the job is no longer `owner`'s."""
        return self.db.execute("UPDATE jobs SET lease_until = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
                               (until, job_id, owner)).rowcount == 1

    def start_job(self, job_id: int, owner: str, now: float) -> None:
        """Record when the job first began to publish (a job taken over keeps its first start)."""
        self.db.execute("UPDATE jobs SET started_at = COALESCE(started_at, ?) WHERE id = ? AND lease_owner = ?",
                        (now, job_id, owner))

    def finish_job(self, job_id: int, owner: str, state: str, now: float, *, reason: str | None = None,
                   issue_key: str | None = None, content_hash: str | None = None,
                   exit_status: int | None = None) -> bool:
        """Move `owner`'s running job to `state` (back to `scheduled` to resume later) and drop the
        lease; False if the job is no longer `owner`'s."""
        if state not in JOB_STATES or state == "running":
            raise ValueError(state)
        return self.db.execute(
            "UPDATE jobs SET state = ?, reason = ?, issue_key = COALESCE(?, issue_key),"
            " content_hash = COALESCE(?, content_hash), exit_status = ?, lease_owner = NULL, lease_until = NULL,"
            " finished_at = CASE WHEN ? = 'scheduled' THEN NULL ELSE ? END"
            " WHERE id = ? AND lease_owner = ? AND state = 'running'",
            (state, reason, issue_key, content_hash, exit_status, state, now, job_id, owner)).rowcount == 1

    def next_job_time(self) -> float | None:
        """Return when a job next becomes claimable: the earliest scheduled run time or lease end."""
        return self.db.execute("SELECT MIN(CASE state WHEN 'scheduled' THEN run_at ELSE lease_until END)"
                               " FROM jobs WHERE state IN ('scheduled', 'running')").fetchone()[0]
