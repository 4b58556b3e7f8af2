"""`distributor run-due` and `distributor worker`: run the scheduled jobs that are due, once (for cron
or a timer) or as they come due. One module, as they are the same runner (distributor.schedule.runner)
with the same clock and the same stop: the first SIGTERM or Ctrl-C lets the message in flight finish
and puts the job back to resume."""
from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

from distributor.commands import stop_on_signals
from distributor.errors import EXIT_OK
from distributor.settings import Settings

Clock = Callable[[], float]


def add_parser(subparsers: argparse._SubParsersAction, now: Clock = time.time) -> None:
    """Add `run-due` and `worker` to the `distributor` command line; `now` is the clock they read
    (seconds since the epoch)."""
    due = subparsers.add_parser("run-due", help="run every job that is due, then exit (for cron or a timer)")
    due.set_defaults(run=functools.partial(run_due, now=now))
    worker = subparsers.add_parser("worker", help="keep running jobs as they come due; SIGTERM stops it cleanly")
    worker.set_defaults(run=functools.partial(run_worker, now=now))


def run_due(args: argparse.Namespace, settings: Settings, *, now: Clock) -> int:
    """`run-due`: run every job that is due, then return the exit status of the runs."""
    from distributor.schedule.runner import Scheduler
    interrupt = stop_on_signals("stopping after the message in flight")
    return Scheduler(settings, now=now).run_due(interrupt)


def run_worker(args: argparse.Namespace, settings: Settings, *, now: Clock) -> int:
    """`worker`: run jobs as they come due until SIGTERM or Ctrl-C."""
    from distributor.schedule.runner import Scheduler
    interrupt = stop_on_signals("stopping after the message in flight")
    schedule = settings.schedule
    print(f"worker: running due jobs (poll {schedule.poll_seconds:g} s, lease {schedule.lease_seconds:g} s)",
          flush=True)
    Scheduler(settings, now=now).work(interrupt)
    print("worker: stopped", flush=True)
    return EXIT_OK
