"""Scheduled jobs: the `jobs` table in the ledger, claimed by runners under a lease.

A job moves scheduled → running → done, failed or missed (or cancelled). A runner claims a due
job in one write transaction, as a lease it keeps renewing; once the lease lapses any runner may
take the job over. A job that stopped early (relay unreachable, a rate cap) goes back to
`scheduled` with a later `retry_at`, backing off from 5 minutes to an hour, for at most
`MAX_TRIES` tries.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from distributor.ledger.store import Connection, Ledger, write_transaction

_COLUMNS = ("id, issue_path, channels, run_at, zone, state, lease_owner, lease_until, attempts, started_at,"
            " finished_at, reason, issue_key, content_hash, exit_status, early_stops, retry_at, title")
# When a scheduled job may be claimed: its next try once it stopped early, else its time.
_DUE_AT = "COALESCE(retry_at, run_at)"

JOB_STATES = ("scheduled", "running", "done", "failed", "missed", "cancelled")
MAX_TRIES = 6
_FIRST_RETRY_SECONDS, _LONGEST_RETRY_SECONDS = 300.0, 3600.0


def retry_delay(early_stops: int) -> float:
    """Return how long to wait before trying again a job that has stopped early `early_stops`
    times: 5 minutes after the first stop, doubling with each, at most an hour."""
    return min(_FIRST_RETRY_SECONDS * 2 ** (early_stops - 1), _LONGEST_RETRY_SECONDS)


@dataclass(frozen=True)
class Job:
    """A scheduled send: publish `issue_path` on `channels` at `run_at` (UTC seconds), as read in `zone`.
    A `running` job belongs to `lease_owner` until `lease_until`; after that any runner may take it.
    `early_stops` counts the runs that stopped early; the next try is then at `retry_at`. `title` is
    the --title it was scheduled with (None: the file's own)."""

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
    early_stops: int
    retry_at: float | None
    title: str | None = None

    @classmethod
    def from_row(cls, row: tuple) -> Job:
        values = list(row)
        values[2] = tuple(name for name in values[2].split(",") if name)
        return cls(*values)


class JobStore:
    """The jobs in the ledger (its `jobs` table), on the ledger's connection."""

    def __init__(self, db: Connection, *, clock: Callable[[], float] = time.time):
        self.db, self.clock = db, clock

    @classmethod
    def of(cls, ledger: Ledger) -> JobStore:
        """Return the jobs of `ledger`, sharing its connection (closing the ledger closes it)."""
        return cls(ledger.db, clock=ledger.clock)

    def add(self, issue_path: str, channels: Iterable[str], run_at: float, zone: str, *,
            title: str | None = None) -> Job:
        """Store a job in state `scheduled` and return it."""
        (row,) = self.db.execute("INSERT INTO jobs (issue_path, channels, run_at, zone, created_at, title)"
                                 f" VALUES (?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
                                 (issue_path, ",".join(channels), run_at, zone, self.clock(), title)).fetchall()
        return Job.from_row(row)

    def job(self, job_id: int) -> Job | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def jobs(self) -> list[Job]:
        """Return every job, earliest run time first."""
        return [Job.from_row(row) for row in self.db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY run_at, id")]

    def cancel(self, job_id: int, now: float) -> Job | None:
        """Cancel the job if no runner holds it (it is `scheduled`, or `running` with a lapsed lease);
        return it as it is now (None if unknown)."""
        self.db.execute("UPDATE jobs SET state = 'cancelled', finished_at = ?, lease_owner = NULL, lease_until = NULL"
                        " WHERE id = ? AND (state = 'scheduled' OR (state = 'running' AND lease_until < ?))",
                        (now, job_id, now))
        return self.job(job_id)

    def claim(self, owner: str, now: float, lease_seconds: float) -> Job | None:
        """Take the earliest job that is due, or whose runner's lease lapsed, for `owner` until
        now + lease_seconds; None when there is none. Two runners never get the same job: the
        choice and the claim happen under one write lock."""
        with write_transaction(self.db):
            rows = self.db.execute(
                "UPDATE jobs SET state = 'running', lease_owner = ?, lease_until = ?, attempts = attempts + 1"
                f" WHERE id = (SELECT id FROM jobs WHERE (state = 'scheduled' AND {_DUE_AT} <= ?)"
                f" OR (state = 'running' AND lease_until < ?) ORDER BY {_DUE_AT}, id LIMIT 1)"
                f" RETURNING {_COLUMNS}", (owner, now + lease_seconds, now, now)).fetchall()
        return Job.from_row(rows[0]) if rows else None

    def renew_lease(self, job_id: int, owner: str, until: float) -> bool:
        """Extend `owner`'s lease on a running job; False if the job is no longer `owner`'s."""
        return self.db.execute("UPDATE jobs SET lease_until = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
                               (until, job_id, owner)).rowcount == 1

    def start(self, job_id: int, owner: str, now: float) -> None:
        """Record when the job first began to publish (a job taken over or tried again keeps its first start)."""
        self.db.execute("UPDATE jobs SET started_at = COALESCE(started_at, ?) WHERE id = ? AND lease_owner = ?",
                        (now, job_id, owner))

    def finish(self, job_id: int, owner: str, state: str, now: float, *, reason: str | None = None,
               issue_key: str | None = None, content_hash: str | None = None,
               exit_status: int | None = None) -> bool:
        """Move `owner`'s running job to `state` (back to `scheduled` to resume at once) and drop the
        lease; False if the job is no longer `owner`'s."""
        if state not in JOB_STATES or state == "running":
            raise ValueError(state)
        return self.db.execute(
            "UPDATE jobs SET state = ?, reason = ?, issue_key = COALESCE(?, issue_key),"
            " content_hash = COALESCE(?, content_hash), exit_status = ?, lease_owner = NULL, lease_until = NULL,"
            " retry_at = NULL, finished_at = CASE WHEN ? = 'scheduled' THEN NULL ELSE ? END"
            " WHERE id = ? AND lease_owner = ? AND state = 'running'",
            (state, reason, issue_key, content_hash, exit_status, state, now, job_id, owner)).rowcount == 1

    def retry_later(self, job_id: int, owner: str, retry_at: float, *, reason: str, exit_status: int,
                    issue_key: str | None = None, content_hash: str | None = None) -> bool:
        """Put `owner`'s running job that stopped early back to `scheduled`, to be tried again at
        `retry_at`, counting the stop; False if the job is no longer `owner`'s."""
        return self.db.execute(
            "UPDATE jobs SET state = 'scheduled', reason = ?, issue_key = COALESCE(?, issue_key),"
            " content_hash = COALESCE(?, content_hash), exit_status = ?, lease_owner = NULL, lease_until = NULL,"
            " early_stops = early_stops + 1, retry_at = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
            (reason, issue_key, content_hash, exit_status, retry_at, job_id, owner)).rowcount == 1

    def next_due_time(self) -> float | None:
        """Return when a job next becomes claimable: the earliest scheduled try or lease end."""
        return self.db.execute(f"SELECT MIN(CASE state WHEN 'scheduled' THEN {_DUE_AT} ELSE lease_until END)"
                               " FROM jobs WHERE state IN ('scheduled', 'running')").fetchone()[0]
