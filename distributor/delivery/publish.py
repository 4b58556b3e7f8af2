"""`distributor publish`: validate everything first, plan the deliveries, then send.

Nothing is sent until the issue, the settings, the subscriber files and every rendition have
been checked, so bad input never leaves a run half-sent. A dry run is this same path with a
console sink for the relay and an in-memory copy of the ledger.
"""
from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from distributor.channels.mail.message import Recipient
from distributor.channels.mail.sender import MailTransport
from distributor.channels.mail.console_sink import ConsoleSink
from distributor.channels.mail.smtp import SmtpPool
from distributor.channels.wechat.article import content_as_sent, limit_violations

from distributor.delivery import run_report
from distributor.commands.check import smtp_config
from distributor.delivery.send import MailPlan, deliver, message_templates, send_test_copy, unsubscribe_links
from distributor.errors import EXIT_OK, InputError
from distributor.ledger.identity import check_identity, record_identity, take_over_legacy_rows
from distributor.ledger.store import Ledger, open_ledger
from distributor.models import UNSUBSCRIBE_PLACEHOLDER
from distributor.render.renditions import CHANNELS, Renditions, render_issue
from distributor.render.preview import write_files
from distributor.settings import Settings
from distributor.audience.subscriber_files import BadRow, read_subscribers

MAIL_CHANNELS = ("email", "text")
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

    def statuses(self) -> tuple[str, ...]:
        """The ledger states this run sends to: new rows, plus those the operator asked again."""
        return ("pending",) + ("failed",) * self.resend_failed + ("sending",) * self.resend_uncertain


def publish(options: PublishOptions, settings: Settings, *, out: TextIO = sys.stdout,
            err: TextIO = sys.stderr, interrupt: threading.Event | None = None) -> int:
    """Publish the issue on the chosen channels and return the exit status. Setting `interrupt`
    (from a signal handler) lets the messages being handed over finish and starts no new one:
    the run then stops early (exit 3) and a later publish resumes it."""
    channels = options.channels or tuple(name for name in CHANNELS
                                         if getattr(settings.channels, name).enabled)
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
    mails = bool(options.to) or any(_subscriber_file(settings, name) for name in channels if name in MAIL_CHANNELS)
    secret = (os.environ.get(settings.unsubscribe_secret_env) or "dry-run") if mails else ""
    transport = _transport(settings, options.dry_run, out) if mails else None
    if options.to:
        return asyncio.run(send_test_copy(options.to, renditions, settings, transport, secret, out))
    mail = [name for name in channels if name in MAIL_CHANNELS and _subscriber_file(settings, name)]
    for name in mail:                   # every file read to its end before the ledger is touched
        _warn_bad_rows(check_subscribers(_subscriber_file(settings, name)), err)
    ledger = Ledger.snapshot(settings.ledger.path, lock_timeout_seconds=settings.ledger.lock_timeout_seconds) \
        if options.dry_run else open_ledger(settings.ledger)
    wechat = renditions.wechat if "wechat" in channels and not options.dry_run else None
    with ledger.storage_errors():
        try:
            claim = check_identity(ledger, renditions.issue, err)     # another issue under this key: refused here
            take_over_legacy_rows(ledger, claim, err, dry_run=options.dry_run)
            _write_text_file(renditions, settings, options.dry_run, out)
            for name in mail:
                _plan(ledger, renditions, name, _subscriber_file(settings, name), err)
            key = renditions.issue.key
            totals = {name: ledger.count(key, name, options.statuses(), only_planned=True) for name in mail}
            _describe(renditions, settings, channels, totals, out)
            if not options.dry_run and not options.yes and sys.stdin.isatty() and not _confirm():
                print("nothing sent", file=out)
                return EXIT_OK
            if not options.to_wechat:       # the run commits to this issue: its key is its from now on
                record_identity(ledger, claim)
            plan = MailPlan(totals, options.statuses(), transport, secret,
                            live_progress=err.isatty() and not options.dry_run)
            outcomes = asyncio.run(deliver(renditions, wechat, plan, settings, ledger, err,
                                           to_wechat=options.to_wechat, interrupt=interrupt))
            lines, status = run_report.summary(outcomes, run_report.standing(ledger, key, mail), mail,
                                               "handed to the dry-run sink" if options.dry_run else "sent",
                                               f"distributor status {options.issue}")
            print("\n".join(lines), file=out)
            return status
        finally:
            ledger.close()


def configuration_problems(settings: Settings, channels: tuple[str, ...], *, test_copy: bool = False) -> list[str]:
    """Say what keeps the chosen channels from delivering (empty when nothing does): a real
    publish refuses to start with any, a dry run notes them, `schedule add` refuses them."""
    problems = []
    mails = test_copy
    for name in channels:
        if name in MAIL_CHANNELS and _subscriber_file(settings, name):
            mails = True
        elif name in MAIL_CHANNELS and not test_copy and not (name == "text" and settings.channels.text.output_dir):
            problems.append(f"channels.{name}.subscribers is not set: no one to send the {name} channel to")
    if mails:
        problems += _missing_env(settings.unsubscribe_secret_env, "the unsubscribe links' secret")
        if settings.smtp.username:
            problems += _missing_env(settings.smtp.password_env, "the SMTP password (smtp.username is set)")
    if "wechat" in channels:
        wechat = settings.channels.wechat
        if not wechat.app_id:
            problems.append("channels.wechat.app_id is not set (or set channels.wechat.enabled: false)")
        problems += _missing_env(wechat.app_secret_env, "the WeChat AppSecret")
    return problems


def _missing_env(variable: str, what: str) -> list[str]:
    return [] if os.environ.get(variable) else [f"set the environment variable {variable} ({what})"]


def _check_publishable(renditions: Renditions, options: PublishOptions) -> None:
    where = str(renditions.issue.source_path)
    if renditions.issue.draft and not options.force:
        raise InputError("the front matter says draft: true; publish with --force to send it anyway", path=where)
    if renditions.wechat is not None:
        problems = limit_violations(renditions.wechat)
        if problems:
            raise InputError("; ".join(problems), path=where)


def _subscriber_file(settings: Settings, channel: str) -> str | None:
    return getattr(settings.channels, channel).subscribers


def _transport(settings: Settings, dry_run: bool, out: TextIO) -> MailTransport:
    if dry_run:
        return ConsoleSink(out)
    return SmtpPool(smtp_config(settings))


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


def _plan(ledger: Ledger, renditions: Renditions, channel: str, path: str, err: TextIO) -> None:
    """Make the channel's plan match the subscriber file as it is now (read a second time, streamed,
    in one transaction): new addresses are added, the pending rows of removed ones dropped."""
    issue = renditions.issue
    result = ledger.plan(issue.key, channel, issue.content_hash,
                         ((row.address, row.name) for row in read_subscribers(path) if not isinstance(row, BadRow)))
    if result.removed:
        print(f"distributor: {channel}: not mailing {_recipients(result.removed)} no longer in {path} "
              "(planned by an earlier run)", file=err)
    if result.resumed and result.added:
        print(f"distributor: {channel}: {_recipients(result.added)} new in {path} added to the plan", file=err)
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
    templates = message_templates(renditions, settings)
    sample = Recipient("reader@example.org", None, "sample")
    sample_link = unsubscribe_links(settings, "sample")(sample)
    for name in channels:
        if name in totals:
            size = len(templates[name].render(sample, sample_link))
            print(f"  {name}: {totals[name]} recipients, subject {renditions.issue.title!r}, "
                  f"{size / 1024:.1f} KB per message", file=out)
        elif name == "wechat" and renditions.wechat is not None:
            article = renditions.wechat
            content, uploads = content_as_sent(article)
            print(f"  wechat: a {settings.channels.wechat.mode} article {article.title!r} for account "
                  f"{settings.channels.wechat.app_id or '(app_id not set)'}, at most {len(content)} characters "
                  f"as sent, {uploads} images to upload", file=out)


def _confirm() -> bool:
    return input("Send now? [y/N] ").strip().lower() in ("y", "yes")


def _write_text_file(renditions: Renditions, settings: Settings, dry_run: bool, out: TextIO) -> None:
    folder = settings.channels.text.output_dir
    if renditions.text is None or not folder:
        return
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", renditions.issue.key).strip("-") or "issue"
    target = Path(folder).expanduser() / f"{name}.txt"
    if dry_run:
        print(f"  text: would write {target}", file=out)
        return
    # The file is for readers of an archive, not for a subscriber: no unsubscribe line.
    lines = renditions.text.text.splitlines(keepends=True)
    text = "".join(line for line in lines if UNSUBSCRIBE_PLACEHOLDER not in line)
    write_files({target.name: text.encode("utf-8")}, target.parent)     # whole, or not at all
    print(f"  text: wrote {target}", file=out)
