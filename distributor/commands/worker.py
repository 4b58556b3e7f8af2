"""`distributor run-due` and `distributor worker`: run the scheduled jobs that are due, once (for cron
or a timer) or as they come due. One module, as they are the same runner (distributor.schedule.runner)
with the same clock and the same stop: the first SIGTERM or Ctrl-C lets the message in flight finish
and puts the job back to resume. Where `bounces` names a mailbox, the worker also reads it every
`bounces.poll_minutes`, as `distributor bounces` does, and between polls sends the rows that `publish
--via-workers` left to the workers (distributor/workers/)."""
from __future__ import annotations

import argparse
import functools
import sys
import threading
import time
from collections.abc import Callable

from distributor.commands import stop_on_signals
from distributor.errors import EXIT_OK, InputError, StorageError
from distributor.settings import Settings

Clock = Callable[[], float]


def add_parser(subparsers: argparse._SubParsersAction, now: Clock = time.time) -> None:
    """Add `run-due` and `worker` to the `distributor` command line; `now` is the clock they read
    (seconds since the epoch)."""
    due = subparsers.add_parser("run-due", help="run every job that is due, then exit (for cron or a timer)")
    due.set_defaults(run=functools.partial(run_due, now=now))
    worker = subparsers.add_parser("worker", help="keep running jobs as they come due and sending the rows left to"
                                   " the workers (publish --via-workers); SIGTERM stops it cleanly")
    worker.set_defaults(run=functools.partial(run_worker, now=now))


def run_due(args: argparse.Namespace, settings: Settings, *, now: Clock) -> int:
    """`run-due`: run every job that is due, then return the exit status of the runs."""
    from distributor.schedule.runner import Scheduler
    interrupt = stop_on_signals("stopping after the message in flight")
    return Scheduler(settings, now=now).run_due(interrupt)


def run_worker(args: argparse.Namespace, settings: Settings, *, now: Clock) -> int:
    """`worker`: run jobs as they come due until SIGTERM or Ctrl-C."""
    from distributor.feedback.run import mailbox_configured
    from distributor.schedule.runner import Scheduler
    interrupt = stop_on_signals("stopping after the message in flight")
    schedule = settings.schedule
    print(f"worker: running due jobs (poll {schedule.poll_seconds:g} s, lease {schedule.lease_seconds:g} s)",
          flush=True)
    tasks: list[Callable[[], float]] = [_Drainer(settings, interrupt)]
    if mailbox_configured(settings):
        print(f"worker: reading the bounce mailbox every {settings.bounces.poll_minutes:g} minutes", flush=True)
        tasks.append(_BounceReader(settings, interrupt))
    Scheduler(settings, now=now).work(interrupt, between_polls=lambda: min(task() for task in tasks))
    print("worker: stopped", flush=True)
    return EXIT_OK


class _Drainer:
    """Send what can be claimed of the open drains (distributor/workers/worker.py), printing what each
    pass did; return how soon to look again (at once while there was work, else `workers.poll_seconds`)."""

    def __init__(self, settings: Settings, interrupt: threading.Event):
        from distributor.ledger.store import open_ledger
        from distributor.workers.worker import DrainWorker
        self.settings = settings
        self.worker = DrainWorker(settings, lambda: open_ledger(settings.ledger), interrupt)
        print(f"worker: {self.worker.holder}: sending the rows left to the workers "
              f"(lease {settings.workers.lease_seconds:g} s, batches of {settings.workers.batch_size})", flush=True)

    def __call__(self) -> float:
        try:
            report = self.worker.run_pass(sys.stderr)
        except StorageError as exc:
            print(f"distributor: warning: {exc}; trying again in {self.settings.workers.poll_seconds:g} s",
                  file=sys.stderr, flush=True)
            return self.settings.workers.poll_seconds
        for line in report.lines():
            print(line, flush=True)
        busy = any(outcome.sent or outcome.failed or outcome.uncertain for _, outcome in report.outcomes)
        return 0.0 if busy else self.settings.workers.poll_seconds


class _BounceReader:
    """Read the bounce mailbox when `bounces.poll_minutes` have passed since the last reading (the first at
    once); print its summary, or a one-line warning when the mailbox or the ledger cannot be used."""

    def __init__(self, settings: Settings, interrupt: threading.Event):
        self.settings, self.interrupt = settings, interrupt
        self.every = settings.bounces.poll_minutes * 60
        self.next_at = time.monotonic()

    def __call__(self) -> float:
        from distributor.commands.bounces import summary
        from distributor.feedback.run import read_mailbox
        if time.monotonic() >= self.next_at:
            try:
                print("\n".join(summary(read_mailbox(self.settings, interrupt=self.interrupt))), flush=True)
            except (InputError, StorageError) as exc:
                print(f"distributor: warning: bounce mailbox: {exc}; trying again in "
                      f"{self.settings.bounces.poll_minutes:g} minutes", file=sys.stderr, flush=True)
            self.next_at = time.monotonic() + self.every
        return max(0.0, self.next_at - time.monotonic())
