"""The `schedule add|list|cancel`, `run-due` and `worker` commands.

Each command is `run(args, settings) -> exit status`; an `InputError` leaves as exit status 2.
"""
from __future__ import annotations

import argparse
import functools
import io
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from distributor.errors import EXIT_FAILED, EXIT_OK, InputError
from distributor.schedule.jobs import MAX_TRIES, Job, JobStore
from distributor.ledger.store import open_ledger
from distributor.render.renditions import CHANNELS
from distributor.settings import Settings
from distributor.schedule.timezones import display_zone_name, read_local_time, show

Clock = Callable[[], float]


def add_commands(subparsers: argparse._SubParsersAction, now: Clock = time.time) -> None:
    """Add `schedule` (add, list, cancel), `run-due` and `worker` to the command line; `now` is the
    clock they read (seconds since the epoch)."""
    schedule = subparsers.add_parser("schedule", help="send an issue at a later time: add, list or cancel jobs")
    actions = schedule.add_subparsers(dest="schedule_command", required=True)
    add = actions.add_parser("add", help="validate the issue and the relay now, and send it at --at")
    add.add_argument("issue", type=Path)
    add.add_argument("--at", required=True, metavar='"YYYY-MM-DD HH:MM"', help="wall-clock time in --tz")
    add.add_argument("--tz", metavar="ZONE", help="IANA zone of --at, e.g. Asia/Shanghai "
                                                  "(default: schedule.timezone, else the system's zone)")
    add.add_argument("--channel", choices=CHANNELS, action="append", help="only this channel (repeatable)")
    add.add_argument("--title", metavar="TEXT", help="the issue's title, instead of the file's own; the job "
                                                     "publishes with it")
    add.set_defaults(run=functools.partial(_add, now=now))
    listing = actions.add_parser("list", help="every job: time, issue, channels, state and why")
    listing.set_defaults(run=_list)
    cancel = actions.add_parser("cancel", help="cancel a job that has not started")
    cancel.add_argument("job", type=int)
    cancel.set_defaults(run=functools.partial(_cancel, now=now))

    run_due = subparsers.add_parser("run-due", help="run every job that is due, then exit (for cron or a timer)")
    run_due.set_defaults(run=functools.partial(_run_due, now=now))
    worker = subparsers.add_parser("worker", help="keep running jobs as they come due; SIGTERM stops it cleanly")
    worker.set_defaults(run=functools.partial(_worker, now=now))


def _add(args: argparse.Namespace, settings: Settings, *, now: Clock) -> int:
    zone_name = args.tz or display_zone_name(settings)
    local = read_local_time(args.at, zone_name)
    if local.timestamp() <= now():
        raise InputError(f"{show(local.timestamp(), zone_name)} is in the past "
                         f"(it is {show(now(), zone_name)} in {zone_name}): pick a later time")
    issue = args.issue.expanduser().resolve()
    channels = tuple(args.channel or (name for name in CHANNELS if getattr(settings.channels, name).enabled))
    if not channels:
        raise InputError("no channel is enabled in the settings: nothing to schedule")
    status = _validate(issue, channels, settings, args.title)
    if status != EXIT_OK:
        return status
    ledger = open_ledger(settings.ledger)
    try:
        with ledger.storage_errors():
            job = JobStore.of(ledger).add(str(issue), channels, local.timestamp(), zone_name, title=args.title)
    finally:
        ledger.close()
    print(f"job {job.id} scheduled: {issue} on {', '.join(channels)} at {show(job.run_at, zone_name)} {zone_name}")
    shown_in = display_zone_name(settings)
    if shown_in != zone_name:
        print(f"  that is {show(job.run_at, shown_in)} {shown_in}")
    if local.note:
        print(f"  note: {local.note}")
    return EXIT_OK


def _validate(issue: Path, channels: tuple[str, ...], settings: Settings, title: str | None) -> int:
    """Refuse now what would fail at the job's time: the issue, the subscriber files and renditions
    (a dry run), what a real send needs that a dry run only notes (subscriber files, secrets, the
    WeChat account), and the services (as `check` does)."""
    from distributor.commands.check import check_services   # the delivery stack loads only when needed
    from distributor.delivery.publish import PublishOptions, configuration_problems, publish
    dry_run = io.StringIO()
    status = publish(PublishOptions(issue=issue, channels=channels, yes=True, dry_run=True, title=title), settings,
                     out=dry_run, err=dry_run)
    if status != EXIT_OK:
        sys.stdout.write(dry_run.getvalue())
        print(f"distributor: not scheduled: the dry run ended with exit status {status}", file=sys.stderr)
        return status
    problems = configuration_problems(settings, channels)
    if problems:
        raise InputError("not scheduled: a real publish would refuse it: " + "; ".join(problems))
    services = io.StringIO()
    if not check_services(settings, services):
        sys.stdout.write(services.getvalue())
        print("distributor: not scheduled: a service check failed (see `distributor check`)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _list(args: argparse.Namespace, settings: Settings) -> int:
    if not Path(settings.ledger.path).expanduser().exists():
        print("no jobs")
        return EXIT_OK
    ledger = open_ledger(settings.ledger)
    try:
        with ledger.storage_errors():
            jobs = JobStore.of(ledger).jobs()
    finally:
        ledger.close()
    zone_name = display_zone_name(settings)
    print(f"times in {zone_name}" if jobs else "no jobs")
    for job in jobs:
        print(f"{job.id:>4}  {show(job.run_at, zone_name)}  {job.state:<9}  {','.join(job.channels):<16}  "
              f"{job.issue_path}")
        for detail in _details(job, zone_name):
            print(f"      {detail}")
    return EXIT_OK


def _details(job: Job, zone_name: str) -> list[str]:
    if job.state == "scheduled" and job.retry_at is not None:
        details = [f"stopped early ({job.early_stops} of {MAX_TRIES} tries): {job.reason}",
                   f"next try {show(job.retry_at, zone_name)}"]
    else:
        details = [job.reason] if job.reason else []
    if job.content_hash and job.state != "scheduled":
        details.append(f"sent the file with sha256 {job.content_hash}")
    return details


def _cancel(args: argparse.Namespace, settings: Settings, *, now: Clock) -> int:
    ledger = open_ledger(settings.ledger)
    try:
        with ledger.storage_errors():
            jobs = JobStore.of(ledger)
            before = jobs.job(args.job)
            if before is None:
                raise InputError(f"no job {args.job} (see distributor schedule list)")
            after = jobs.cancel(args.job, now())
    finally:
        ledger.close()
    if after.state == "cancelled":
        print(f"job {args.job} was already cancelled" if before.state == "cancelled" else f"job {args.job} cancelled")
        return EXIT_OK
    held = f" (runner {after.lease_owner} holds it; stop that runner first)" if after.state == "running" else ""
    print(f"distributor: job {args.job} is {after.state} and cannot be cancelled{held}", file=sys.stderr)
    return EXIT_FAILED


def _run_due(args: argparse.Namespace, settings: Settings, *, now: Clock) -> int:
    from distributor.schedule.runner import Scheduler
    interrupt = _stop_on_signals()
    return Scheduler(settings, now=now).run_due(interrupt)


def _worker(args: argparse.Namespace, settings: Settings, *, now: Clock) -> int:
    from distributor.schedule.runner import Scheduler
    interrupt = _stop_on_signals()
    schedule = settings.schedule
    print(f"worker: running due jobs (poll {schedule.poll_seconds:g} s, lease {schedule.lease_seconds:g} s)",
          flush=True)
    Scheduler(settings, now=now).work(interrupt)
    print("worker: stopped", flush=True)
    return EXIT_OK


def _stop_on_signals() -> threading.Event:
    """Return an event set by the first SIGTERM or Ctrl-C: the message in flight finishes, the job is
    put back to resume, and the command ends. A second Ctrl-C stops at once."""
    interrupt = threading.Event()

    def stop_gracefully(signum: int, frame: object) -> None:
        if interrupt.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        print("\ndistributor: stopping after the message in flight", file=sys.stderr, flush=True)
        interrupt.set()

    signal.signal(signal.SIGINT, stop_gracefully)
    signal.signal(signal.SIGTERM, stop_gracefully)
    return interrupt
