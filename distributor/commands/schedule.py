"""`distributor schedule add|list|cancel`: the jobs that publish an issue at a later time. Adding one
checks now what would fail then; `distributor run-due` and `distributor worker` run them."""
from __future__ import annotations

import argparse
import functools
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

from distributor.commands import channel_names
from distributor.errors import EXIT_FAILED, EXIT_OK, InputError
from distributor.ledger.store import open_ledger
from distributor.schedule.jobs import MAX_TRIES, Job, JobStore
from distributor.schedule.timezones import display_zone_name, read_local_time, show
from distributor.settings import Settings

Clock = Callable[[], float]


def add_parser(subparsers: argparse._SubParsersAction, now: Clock = time.time) -> None:
    """Add `schedule` and its actions (add, list, cancel) to the `distributor` command line; `now` is the
    clock they read (seconds since the epoch)."""
    schedule = subparsers.add_parser("schedule", help="send an issue at a later time: add, list or cancel jobs")
    actions = schedule.add_subparsers(dest="schedule_command", required=True)
    add = actions.add_parser("add", help="validate the issue and the relay now, and send it at --at")
    add.add_argument("issue", type=Path)
    add.add_argument("--at", required=True, metavar='"YYYY-MM-DD HH:MM"', help="wall-clock time in --tz")
    add.add_argument("--tz", metavar="ZONE", help="IANA zone of --at, e.g. Asia/Shanghai "
                                                  "(default: schedule.timezone, else the system's zone)")
    add.add_argument("--channel", choices=channel_names(), action="append", help="only this channel (repeatable)")
    add.add_argument("--title", metavar="TEXT", help="the issue's title, instead of the file's own; the job "
                                                     "publishes with it")
    add.set_defaults(run=functools.partial(run_add, now=now))
    listing = actions.add_parser("list", help="every job: time, issue, channels, state and why")
    listing.set_defaults(run=run_list)
    cancel = actions.add_parser("cancel", help="cancel a job that has not started")
    cancel.add_argument("job", type=int)
    cancel.set_defaults(run=functools.partial(run_cancel, now=now))


def run_add(args: argparse.Namespace, settings: Settings, *, now: Clock) -> int:
    """Check the issue, the channels and the services as a publish at `--at` would, then store the job."""
    zone_name = args.tz or display_zone_name(settings)
    local = read_local_time(args.at, zone_name)
    if local.timestamp() <= now():
        raise InputError(f"{show(local.timestamp(), zone_name)} is in the past "
                         f"(it is {show(now(), zone_name)} in {zone_name}): pick a later time")
    issue = args.issue.expanduser().resolve()
    channels = tuple(args.channel or (name for name in channel_names() if getattr(settings.channels, name).enabled))
    if not channels:
        raise InputError("no channel is enabled in the settings: nothing to schedule")
    status = _validate(issue, channels, settings, args.title)
    if status != EXIT_OK:
        return status
    with open_ledger(settings.ledger) as ledger, ledger.storage_errors():
        job = JobStore.of(ledger).add(str(issue), channels, local.timestamp(), zone_name, title=args.title)
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
    from distributor.commands.check import check_services  # the delivery stack loads only when needed
    from distributor.delivery.publish import PublishOptions, configuration_problems, publish
    dry_run = io.StringIO()
    result = publish(PublishOptions(issue=issue, channels=channels, yes=True, dry_run=True, title=title), settings,
                     out=dry_run, err=dry_run)
    status = result.exit_status
    if status != EXIT_OK:
        sys.stdout.write(dry_run.getvalue())
        print("\n".join(result.lines(f"distributor status {issue}")))
        print(f"distributor: not scheduled: the dry run ended with exit status {status}", file=sys.stderr)
        return status
    problems = configuration_problems(settings, channels)
    if problems:
        raise InputError("not scheduled: a real publish would refuse it: " + "; ".join(problems))
    checks = tuple(check_services(settings))
    if not all(check.healthy for check in checks):
        for check in checks:
            print(check.line())
        print("distributor: not scheduled: a service check failed (see `distributor check`)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    """Print every job with its time in the display zone, its state and why it is in it."""
    if not settings.ledger.url and not Path(settings.ledger.path).expanduser().exists():
        print("no jobs")
        return EXIT_OK
    with open_ledger(settings.ledger) as ledger, ledger.storage_errors():
        jobs = JobStore.of(ledger).jobs()
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


def run_cancel(args: argparse.Namespace, settings: Settings, *, now: Clock) -> int:
    """Cancel a job that has not started; exit 1 for one that is running or done."""
    with open_ledger(settings.ledger) as ledger, ledger.storage_errors():
        jobs = JobStore.of(ledger)
        before = jobs.job(args.job)
        after = jobs.cancel(args.job, now()) if before is not None else None
    if before is None or after is None:
        raise InputError(f"no job {args.job} (see distributor schedule list)")
    if after.state == "cancelled":
        print(f"job {args.job} was already cancelled" if before.state == "cancelled" else f"job {args.job} cancelled")
        return EXIT_OK
    held = f" (runner {after.lease_owner} holds it; stop that runner first)" if after.state == "running" else ""
    print(f"distributor: job {args.job} is {after.state} and cannot be cancelled{held}", file=sys.stderr)
    return EXIT_FAILED
