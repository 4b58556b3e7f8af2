"""`distributor publish`: validate everything first, plan the deliveries, then send.

Nothing is sent until the issue, the settings, the subscriber files and every rendition have
been checked, so bad input never leaves a run half-sent. A dry run is this same path with a
console sink for the relay and an in-memory copy of the ledger.
"""
from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from distributor import registry
from distributor.audience.lists import lists_by_channel, routes, sharing
from distributor.audience.subscriber_files import BadRow, read_subscribers
from distributor.channel import RowChannel, StepChannel, StepState
from distributor.delivery.run_report import ChannelOutcome, PublishResult, standing
from distributor.delivery.send import RowPlan, StepPlan, Transports, deliver_issue, deliver_steps, send_test_copy
from distributor.delivery.step_run import recorded_steps
from distributor.errors import InputError
from distributor.files import write_files
from distributor.ledger.identity import check_identity, record_identity, take_over_legacy_rows
from distributor.ledger.store import Ledger, open_ledger, snapshot_ledger
from distributor.ledger.subscribers import SubscriberStore
from distributor.models import Issue
from distributor.render.renditions import Renditions, render_issue
from distributor.settings import Settings, missing_env

_BAD_ROWS_SHOWN = 20


@dataclass(frozen=True)
class PublishOptions:
    issue: Path
    channels: tuple[str, ...]          # empty: every channel enabled in settings
    dry_run: bool = False
    to: str | None = None
    yes: bool = False
    force: bool = False
    resend_failed: bool = False
    resend_uncertain: bool = False
    to_wechat: str | None = None
    title: str | None = None           # --title: replaces the file's title (the only one a file without a header has)
    via_workers: bool = False          # leave the rows to `distributor worker` processes, watching their progress

    def statuses(self) -> tuple[str, ...]:
        """The ledger states this run sends to: new rows, plus those the operator asked again."""
        return ("pending",) + ("failed",) * self.resend_failed + ("uncertain",) * self.resend_uncertain


def publish(options: PublishOptions, settings: Settings, *, out: TextIO | None = None,
            err: TextIO | None = None, interrupt: threading.Event | None = None) -> PublishResult:
    """Publish the issue on the chosen channels and return how it went; what the run does on the way
    (the plan, warnings, progress) goes to `out` and `err` (stdout and stderr by default). Setting
    `interrupt` (from a signal handler) lets the messages being handed over finish and starts no new
    one: the run then stops early (exit 3) and a later publish resumes it."""
    out, err = out or sys.stdout, err or sys.stderr
    channels = options.channels or tuple(name for name in registry.names() if settings.channels[name].enabled)
    if options.to_wechat:
        channels = ("wechat",)
    renditions = render_issue(options.issue, settings, channels, title=options.title)
    _check_publishable(renditions, options)
    problems = configuration_problems(settings, channels, test_copy=bool(options.to))
    if problems and not options.dry_run:
        raise InputError("; ".join(problems))
    if options.dry_run:
        print(f"dry run: {renditions.issue.title} [{renditions.issue.key}]; nothing is sent", file=out)
        for problem in problems:
            print(f"  note: a real publish stops here: {problem}", file=out)
    rows = registry.row_channels(channels)
    subscriber_files = {channel.name: path for channel in rows if (path := channel.recipients_file(settings))}
    # A reader's format is read against every row channel's lists, not only this run's channels.
    served = lists_by_channel(registry.row_channels(registry.names()), settings)
    list_channels = [channel.name for channel in rows if channel.name in served]
    with_recipients = tuple(channel for channel in rows if channel.name in subscriber_files or channel.name in served)
    # A real run has the secret (its absence is a configuration problem, refused above); a dry run's links
    # are never sent.
    secret = os.environ.get(settings.unsubscribe_secret_env) or ("dry-run" if options.dry_run else "")
    transports = Transports(settings, sink=out if options.dry_run else None)
    if options.to:
        copies = asyncio.run(send_test_copy(options.to, renditions, rows, settings, transports, secret))
        return PublishResult(renditions.issue.key, tuple(copies), test_copy=True)
    mail = [channel.name for channel in with_recipients]
    for path in subscriber_files.values():     # every file read to its end before the ledger is touched
        _warn_bad_rows(check_subscribers(path), err)
    ledger = snapshot_ledger(settings.ledger) if options.dry_run else open_ledger(settings.ledger)
    with ledger.storage_errors(), ledger:
        steps = tuple(StepPlan(channel, channel.steps(renditions[channel.name], renditions.issue, settings, ledger,
                                                      sink=out if options.dry_run else None,
                                                      preview_to=options.to_wechat))
                      for channel in registry.step_channels(channels))
        claim = check_identity(ledger, renditions.issue, err)     # another issue under this key: refused here
        take_over_legacy_rows(ledger, claim, err, dry_run=options.dry_run)
        _write_archives(renditions, settings, options.dry_run, out)
        for name, path in subscriber_files.items():
            _plan(ledger, renditions, name, _file_recipients(path), f"in {path}", err)
        store = SubscriberStore(ledger)
        for name in list_channels:
            readers = store.recipients(routes(name, served), issue_key=renditions.issue.key,
                                       reached_by=sharing(name, served))
            _plan(ledger, renditions, name, readers, f"active on {', '.join(served[name])}", err)
        key = renditions.issue.key
        totals = {name: ledger.count(key, name, options.statuses(), only_planned=True) for name in mail}
        _describe(renditions, settings, channels, totals, out)
        if not options.dry_run and not options.yes and sys.stdin.isatty() and not _confirm():
            return PublishResult(key, (), declined=True)
        if not options.to_wechat:       # the run commits to this issue: its key is its from now on
            record_identity(ledger, claim)
        if not options.dry_run and (options.via_workers or settings.smtp.relays):
            outcomes = asyncio.run(deliver_steps(steps, key, settings, ledger))
            outcomes += _send_by_drains(options, renditions, with_recipients, totals, ledger, settings, err, interrupt)
        else:
            plan = RowPlan(with_recipients, totals, options.statuses(), transports, secret,
                           live_progress=err.isatty() and not options.dry_run)
            outcomes = asyncio.run(deliver_issue(steps, plan, renditions, settings, ledger, err, interrupt=interrupt))
        states = {plan.channel.name: _step_state(plan.channel, ledger, renditions.issue, settings, options.issue)
                  for plan in steps}
        return PublishResult(key, tuple(outcomes), tuple(mail), standing(ledger, key, mail), states,
                             dry_run=options.dry_run)


def _send_by_drains(options: PublishOptions, renditions: Renditions, channels: tuple[RowChannel, ...],
                    totals: dict[str, int], ledger: Ledger, settings: Settings, err: TextIO,
                    interrupt: threading.Event | None) -> list[ChannelOutcome]:
    """Send the rows through drains (distributor/workers/publishing.py): by the workers, or by this
    process's own worker when the settings name several relays. Rows asked again (--resend-*) go back
    to pending first, as only pending rows are claimed."""
    from distributor.workers.publishing import DrainPlan, send_by_drains
    again = tuple(status for status in options.statuses() if status != "pending")
    with ledger.transaction():
        for channel in channels:
            ledger.requeue(renditions.issue.key, channel.name, again)
    plan = DrainPlan(options.issue, tuple(channel.name for channel in channels if totals.get(channel.name)),
                     options.title, send_here=not options.via_workers)
    if not plan.channels:
        return []
    return send_by_drains(plan, renditions, ledger, settings, err, interrupt or threading.Event())


def _step_state(channel: StepChannel, ledger: Ledger, issue: Issue, settings: Settings,
                issue_path: Path) -> StepState | None:
    """What `status` shows of the channel's steps after this run, naming the command that resumes them."""
    return channel.state(recorded_steps(ledger, channel.name, issue.key), issue, settings,
                         f"distributor publish {issue_path} --channel {channel.name}")


def configuration_problems(settings: Settings, channels: tuple[str, ...], *, test_copy: bool = False) -> list[str]:
    """Say what keeps the chosen channels from delivering (empty when nothing does): a real
    publish refuses to start with any, a dry run notes them, `schedule add` refuses them."""
    rows, steps = registry.row_channels(channels), registry.step_channels(channels)
    problems = [problem for channel in rows
                for problem in channel.configuration_problems(settings, test_copy=test_copy)]
    if any(channel.recipients_file(settings) or channel.recipient_lists(settings) for channel in rows) \
            or (test_copy and rows):
        # Every row channel's messages carry unsubscribe links, signed by the core with this secret.
        problems += missing_env(settings.unsubscribe_secret_env, "the unsubscribe links' secret")
    problems += [problem for channel in steps for problem in channel.configuration_problems(settings)]
    return list(dict.fromkeys(problems))


def _check_publishable(renditions: Renditions, options: PublishOptions) -> None:
    where = str(renditions.issue.source_path)
    if renditions.issue.draft and not options.force:
        raise InputError("the front matter says draft: true; publish with --force to send it anyway", path=where)
    problems = [problem for name, rendition in renditions.items()
                for problem in registry.channel(name).refusals(rendition)]
    if problems:
        raise InputError("; ".join(problems), path=where)


@dataclass(frozen=True)
class SubscriberCheck:
    """A subscriber file read to its end: its bad rows (the first few kept), how many in all."""

    bad_rows: tuple[BadRow, ...]
    bad_total: int


def check_subscribers(path: str) -> SubscriberCheck:
    """Read the whole subscriber file once, as the plan will, keeping nothing but the first bad rows:
    a file refused at its last line (not UTF-8, a NUL byte, an unterminated quote) raises
    `InputError` before a single row is planned or a message sent."""
    shown: list[BadRow] = []
    total = 0
    for row in read_subscribers(path):
        if isinstance(row, BadRow):
            total += 1
            if len(shown) < _BAD_ROWS_SHOWN:
                shown.append(row)
    return SubscriberCheck(tuple(shown), total)


def _warn_bad_rows(check: SubscriberCheck, err: TextIO) -> None:
    for row in check.bad_rows:
        print(f"distributor: warning: skipped {row}", file=err)
    if check.bad_total > len(check.bad_rows):
        print(f"distributor: warning: skipped {check.bad_total - len(check.bad_rows)} more bad rows", file=err)


def _file_recipients(path: str) -> Iterator[tuple[str, str | None]]:
    """Yield (address, name) of each good row of the subscriber file (read a second time, streamed). A row
    whose `status` column says anything but active (an export of the subscriber store used as the file)
    is not mailed: the reader refused, or never confirmed."""
    return ((row.address, row.name) for row in read_subscribers(path)
            if not isinstance(row, BadRow) and row.status in (None, "active"))


def _plan(ledger: Ledger, renditions: Renditions, channel: str, recipients: Iterable[tuple[str, str | None]],
          where: str, err: TextIO) -> None:
    """Make the channel's plan match its recipients as they are now (streamed, in one transaction): new
    addresses are added, the pending rows of those no longer `where` they were (e.g. "in FILE") dropped."""
    issue = renditions.issue
    result = ledger.plan(issue.key, channel, issue.content_hash, recipients)
    if result.removed:
        print(f"distributor: {channel}: not mailing {_recipients(result.removed)} no longer {where} "
              "(planned by an earlier run)", file=err)
    if result.resumed and result.added:
        print(f"distributor: {channel}: {_recipients(result.added)} new {where} added to the plan", file=err)
    earlier = ledger.content_hashes(issue.key, channel) - {issue.content_hash}
    if earlier:
        print(f"distributor: warning: {channel}: the issue file changed since earlier recipients got it",
              file=err)


def _recipients(count: int) -> str:
    return f"{count} recipient{'s' * (count != 1)}"


def _describe(renditions: Renditions, settings: Settings, channels: tuple[str, ...],
              totals: dict[str, int], out: TextIO) -> None:
    """Print what each channel is about to deliver: target, subject, size (of a sample message,
    built the way each recipient's will be)."""
    issue = renditions.issue
    for name in channels:
        channel = registry.channel(name)
        if isinstance(channel, RowChannel) and name in totals:
            print(f"  {name}: {channel.describe(renditions[name], issue, settings, totals[name])}", file=out)
        elif isinstance(channel, StepChannel) and name in renditions:
            print(f"  {name}: {channel.describe(renditions[name], settings)}", file=out)


def _confirm() -> bool:
    return input("Send now? [y/N] ").strip().lower() in ("y", "yes")


def _write_archives(renditions: Renditions, settings: Settings, dry_run: bool, out: TextIO) -> None:
    """Write the files the channels keep of a published issue (the text channel's archive copy)."""
    for name, rendition in renditions.items():
        archive = registry.channel(name).archive(rendition, renditions.issue, settings)
        if archive is None:
            continue
        if dry_run:
            print(f"  {name}: would write {archive.path}", file=out)
            continue
        write_files({archive.path.name: archive.data}, archive.path.parent)     # whole, or not at all
        print(f"  {name}: wrote {archive.path}", file=out)
