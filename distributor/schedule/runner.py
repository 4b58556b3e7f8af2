"""Run scheduled jobs: claim a due job under a lease, keep the lease while publishing, record the end.

Any number of runners (cron's `run-due`, a `worker`) may share one ledger. A runner claims a job
with one write transaction; the claim is a lease that a thread renews every lease/3 on its own
SQLite connection. A runner that dies stops renewing; once the lease lapses another runner takes
the job and publishes it again through the normal path, which never resends what the ledger
records as sent (or as uncertain). A runner that cannot renew its lease in time stops publishing,
since another runner may have taken the job by then. A job that stopped early is tried again
later, backing off (see `jobs.retry_delay`).
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from distributor.delivery.publish import PublishOptions, publish
from distributor.delivery.run_report import PublishResult
from distributor.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_STOPPED, InputError, StorageError
from distributor.ledger.status import problems
from distributor.ledger.store import DATABASE_ERRORS, Ledger, open_ledger
from distributor.render.issue import load_issue
from distributor.schedule import timezones
from distributor.schedule.jobs import MAX_TRIES, Job, JobStore, retry_delay
from distributor.schedule.operator_report import JobReport, deliver_report
from distributor.settings import LedgerSettings, Settings

# A job started later than this after its time gets a warning (cron runs once a minute).
_ON_TIME_SECONDS = 60.0
# How often the lease thread looks for a stop request between renewals.
_TICK_SECONDS = 0.1


@dataclass(frozen=True)
class JobOutcome:
    job_id: int
    state: str            # the job's state afterwards: done, failed, missed, or scheduled (to resume)
    exit_status: int
    reason: str | None
    retry_at: float | None = None     # when a job that stopped early is tried again
    publish: PublishResult | None = None   # how the job's publish went, when one ran


class LeaseKeeper:
    """Renew `owner`'s lease on a job every lease/3 from a thread with its own ledger connection, and
    pass a stop request on to the job. Once the job turns out to be another runner's, or the lease
    could not be renewed before it ran out (`held_until`), the lease is `lost` and the job is stopped:
    another runner may take it from then on."""

    def __init__(self, ledger_settings: LedgerSettings, job_id: int, owner: str, lease_seconds: float,
                 held_until: float, now: Callable[[], float], stop_requested: threading.Event):
        self.ledger_settings, self.job_id, self.owner = ledger_settings, job_id, owner
        self.lease_seconds, self.held_until, self.now = lease_seconds, held_until, now
        self.stop_requested = stop_requested
        self.job_stop = threading.Event()    # what the job's publish watches
        self.lost = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-job-{job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        interval = self.lease_seconds / 3
        # A renewal waits for a busy ledger no longer than until the next one is due.
        try:
            ledger = open_ledger(dataclasses.replace(self.ledger_settings, lock_timeout_seconds=interval))
        except StorageError as exc:          # no renewal can be made: the job stops, as with a lease lost
            print(f"distributor: warning: cannot keep the lease on job {self.job_id}: {exc}", file=sys.stderr)
            self.lost = True
            self.job_stop.set()
            return
        jobs = JobStore.of(ledger)
        next_renewal = time.monotonic() + interval
        try:
            while not self._done.wait(min(_TICK_SECONDS, interval)):
                if self.stop_requested.is_set():
                    self.job_stop.set()
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + interval
                    self._renew(jobs)
                if self.lost or self.now() > self.held_until:
                    self.lost = True
                    self.job_stop.set()
                    return
        finally:
            ledger.close()

    def _renew(self, jobs: JobStore) -> None:
        until = self.now() + self.lease_seconds
        try:
            renewed = jobs.renew_lease(self.job_id, self.owner, until)
        except DATABASE_ERRORS as exc:     # a busy ledger: try again next time, while the lease still holds
            print(f"distributor: warning: could not renew the lease on job {self.job_id}: {exc}", file=sys.stderr)
            return
        if renewed:
            self.held_until = until
        else:
            self.lost = True


class Scheduler:
    """Run the jobs in the ledger of `settings` that are due by the clock `now` (seconds since the epoch)."""

    def __init__(self, settings: Settings, *, now: Callable[[], float] = time.time,
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr):
        self.settings, self.now, self.out, self.err = settings, now, out, err
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    def run_due(self, interrupt: threading.Event) -> int:
        """Run every job that is due (or abandoned by a dead runner) and return the worst exit status;
        stop taking jobs once `interrupt` is set. A ledger locked past ledger.lock_timeout_seconds
        is a `StorageError`."""
        with open_ledger(self.settings.ledger) as ledger:
            return self._run_due(ledger, interrupt)

    def _run_due(self, ledger: Ledger, interrupt: threading.Event) -> int:
        worst = EXIT_OK
        with ledger.storage_errors():
            jobs = JobStore.of(ledger)
            while not interrupt.is_set():
                job = jobs.claim(self.owner, self.now(), self.settings.schedule.lease_seconds)
                if job is None:
                    break
                worst = max(worst, self.run_job(ledger, jobs, job, interrupt).exit_status)
        return worst

    def work(self, interrupt: threading.Event, *, between_polls: Callable[[], float] | None = None) -> None:
        """Run due jobs as they come due until `interrupt` is set, sleeping until the next job's time
        but never longer than `schedule.poll_seconds` (jobs may be added meanwhile). The ledger is
        opened once per poll; a poll that finds it locked (a publish holding it a moment) or
        otherwise unusable warns in one line and the next poll tries again. `between_polls` (the
        bounce mailbox's reader) runs after each poll and returns the seconds until it wants to run
        again, which the sleep does not exceed."""
        poll = self.settings.schedule.poll_seconds
        while not interrupt.is_set():
            try:
                with open_ledger(self.settings.ledger) as ledger:
                    self._run_due(ledger, interrupt)
                    wait = self.seconds_until_next(ledger)
            except StorageError as exc:
                print(f"distributor: warning: {exc}; trying again in {poll:g} s", file=self.err, flush=True)
                wait = poll
            if between_polls is not None and not interrupt.is_set():
                wait = min(wait, between_polls())
            interrupt.wait(wait)

    def seconds_until_next(self, ledger: Ledger | None = None) -> float:
        """Return how long to sleep before a job may next be due, at most `schedule.poll_seconds`
        (read from `ledger` when given, else from a connection of its own)."""
        if ledger is None:
            with open_ledger(self.settings.ledger) as own:
                return self.seconds_until_next(own)
        with ledger.storage_errors():
            upcoming = JobStore.of(ledger).next_due_time()
        poll = self.settings.schedule.poll_seconds
        return poll if upcoming is None else min(poll, max(0.0, upcoming - self.now()))

    def run_job(self, ledger: Ledger, jobs: JobStore, job: Job, interrupt: threading.Event) -> JobOutcome:
        """Publish one claimed job, unless it was found too late, and record how it ended."""
        lateness = self.now() - job.run_at
        limit = self.settings.schedule.max_lateness_seconds
        if job.started_at is None and lateness > limit:
            reason = (f"found {timezones.duration(lateness)} after its time, later than schedule.max_lateness_seconds "
                      f"({timezones.duration(limit)}): not sent")
            return self._finish(ledger, jobs, job, JobOutcome(job.id, "missed", EXIT_FAILED, reason), None, None)
        if job.early_stops:
            print(f"job {job.id}: resuming (try {job.early_stops + 1} of {MAX_TRIES}; it stopped early: "
                  f"{job.reason})", file=self.out)
        elif job.started_at is not None:
            print(f"job {job.id}: resuming (attempt {job.attempts}; its earlier runner stopped)", file=self.out)
        elif lateness > _ON_TIME_SECONDS:
            print(f"distributor: warning: job {job.id} is {timezones.duration(lateness)} late "
                  f"(due {timezones.show(job.run_at, job.zone)}); sending now", file=self.err)
        jobs.start(job.id, self.owner, self.now())
        print(f"job {job.id}: publishing {job.issue_path} on {', '.join(job.channels) or 'every channel'}",
              file=self.out)
        assert job.lease_until is not None, "a claimed job is leased"
        with LeaseKeeper(self.settings.ledger, job.id, self.owner, self.settings.schedule.lease_seconds,
                         job.lease_until, self.now, interrupt) as keeper:
            outcome, issue_key, content_hash = self._publish(job, keeper.job_stop)
        if keeper.lost:
            print(f"distributor: warning: job {job.id}: its lease ran out or another runner took it; "
                  "stopped publishing and left it to the next runner", file=self.err)
            return JobOutcome(job.id, "running", EXIT_STOPPED, "lease lost")
        return self._finish(ledger, jobs, job, outcome, issue_key, content_hash)

    def _publish(self, job: Job, stop: threading.Event) -> tuple[JobOutcome, str | None, str | None]:
        """Validate the issue file as it is now and publish it; nothing is sent if it does not validate."""
        issue_key = content_hash = None
        try:
            issue = load_issue(job.issue_path, self.settings.site, title=job.title)
            issue_key, content_hash = issue.key, issue.content_hash
            options = PublishOptions(issue=Path(job.issue_path), channels=job.channels, yes=True, title=job.title)
            result = publish(options, self.settings, out=self.out, err=self.err, interrupt=stop)
        except InputError as exc:
            reason = f"the issue does not validate any more: {exc}"
            return JobOutcome(job.id, "failed", EXIT_BAD_INPUT, reason), issue_key, None
        except StorageError as exc:     # a locked or full ledger may be fine later: an early stop, tried again
            return self._stopped_early(job, EXIT_STOPPED, str(exc)), issue_key, None
        except Exception as exc:  # record any other failure instead of leaving the job to be retried forever
            reason = f"{exc.__class__.__name__}: {exc}"
            return JobOutcome(job.id, "failed", EXIT_FAILED, reason), issue_key, None
        print("\n".join(result.lines(f"distributor status {job.issue_path}")), file=self.out)
        status = result.exit_status
        if status == EXIT_OK:
            return JobOutcome(job.id, "done", status, None, publish=result), issue_key, content_hash
        if status == EXIT_FAILED:
            reason = "some deliveries failed or are uncertain (see distributor status ISSUE)"
            return JobOutcome(job.id, "done", status, reason, publish=result), issue_key, content_hash
        if stop.is_set():
            reason = "interrupted; the next run resumes it"
            return JobOutcome(job.id, "scheduled", status, reason, publish=result), issue_key, content_hash
        reason = "; ".join(result.stop_reasons()) or f"publish ended with exit status {status}"
        return self._stopped_early(job, status, reason, result), issue_key, content_hash

    def _stopped_early(self, job: Job, status: int, reason: str, result: PublishResult | None = None) -> JobOutcome:
        """Try the job again later, backing off, unless it has stopped early `MAX_TRIES` times."""
        stops = job.early_stops + 1
        if stops >= MAX_TRIES:
            return JobOutcome(job.id, "failed", status, f"stopped early {stops} times; the last time: {reason}",
                              publish=result)
        return JobOutcome(job.id, "scheduled", status, reason, retry_at=self.now() + retry_delay(stops), publish=result)

    def _finish(self, ledger: Ledger, jobs: JobStore, job: Job, outcome: JobOutcome, issue_key: str | None,
                content_hash: str | None) -> JobOutcome:
        if outcome.retry_at is not None:
            recorded = jobs.retry_later(job.id, self.owner, outcome.retry_at, reason=outcome.reason or "",
                                        exit_status=outcome.exit_status, issue_key=issue_key,
                                        content_hash=content_hash)
        else:
            recorded = jobs.finish(job.id, self.owner, outcome.state, self.now(), reason=outcome.reason,
                                   issue_key=issue_key, content_hash=content_hash, exit_status=outcome.exit_status)
        if not recorded:
            print(f"distributor: warning: job {job.id} is no longer this runner's; its end was not recorded",
                  file=self.err)
        elif outcome.retry_at is not None:
            print(f"job {job.id}: stopped early ({outcome.reason}); trying again at "
                  f"{timezones.show(outcome.retry_at, job.zone)} (try {job.early_stops + 2} of {MAX_TRIES})",
                  file=self.out)
        elif outcome.state == "scheduled":
            print(f"job {job.id}: {outcome.reason}", file=self.out)
        else:
            self._report(ledger, job, outcome, issue_key)
        return outcome

    def _report(self, ledger: Ledger, job: Job, outcome: JobOutcome, issue_key: str | None) -> None:
        """Print the job's report and mail it to the operator when one is configured."""
        counts = ledger.counts(issue_key) if issue_key else {}
        report = JobReport(job.id, job.issue_path, issue_key, outcome.state, outcome.reason,
                           timezones.show(job.run_at, job.zone), counts,
                           tuple(problems(ledger, issue_key, sorted(counts))) if issue_key else (),
                           publish=outcome.publish)
        deliver_report(report, self.settings, self.out, self.err)
