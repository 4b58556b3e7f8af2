"""`distributor publish`: deliver an issue on every enabled channel (or those named), a dry run, a test
copy or a WeChat preview. The delivery itself is `distributor.delivery.publish`."""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from distributor.commands import TITLE_HELP, channel_names, stop_on_signals
from distributor.errors import InputError
from distributor.settings import Settings
from distributor.validate.addresses import explained_address_problem

if TYPE_CHECKING:
    from distributor.delivery.publish import PublishOptions


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `publish` to the `distributor` command line."""
    publish = subparsers.add_parser("publish", help="deliver the issue on every enabled channel")
    publish.add_argument("issue", type=Path)
    publish.add_argument("--channel", choices=channel_names(), action="append",
                         help="only this channel (repeatable)")
    publish.add_argument("--dry-run", action="store_true", help="show what would be sent; send nothing")
    publish.add_argument("--title", metavar="TEXT", help=TITLE_HELP)
    publish.add_argument("--to", metavar="ADDRESS", help="send one test copy to ADDRESS, outside the ledger")
    publish.add_argument("--to-wechat", metavar="WXNAME",
                         help="send one preview of the WeChat article to this WeChat account (draft made if needed)")
    publish.add_argument("--yes", action="store_true", help="do not ask before sending (cron)")
    publish.add_argument("--force", action="store_true", help="publish even with draft: true")
    publish.add_argument("--resend-failed", action="store_true", help="try recipients recorded as failed again")
    publish.add_argument("--resend-uncertain", action="store_true",
                         help="send again to recipients whose delivery is uncertain (may duplicate)")
    publish.add_argument("--via-workers", action="store_true",
                         help="plan the rows and leave them to `distributor worker` processes, showing their progress")
    publish.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Publish `args.issue`; the first Ctrl-C or SIGTERM lets the messages in flight finish."""
    from distributor.delivery.publish import PublishOptions  # the delivery stack loads only when needed
    if args.to is not None and (problem := explained_address_problem(args.to)):
        raise InputError(f"--to: {problem}")
    if args.via_workers and (args.dry_run or args.to or args.to_wechat):
        raise InputError("--via-workers leaves a real send to the workers: not with --dry-run, --to or --to-wechat")
    options = PublishOptions(issue=args.issue, channels=tuple(args.channel or ()), dry_run=args.dry_run,
                             to=args.to, yes=args.yes, force=args.force, resend_failed=args.resend_failed,
                             resend_uncertain=args.resend_uncertain, to_wechat=args.to_wechat, title=args.title,
                             via_workers=args.via_workers)
    interrupt = stop_on_signals("stopping after the messages in flight (again to stop at once)")
    return publish_and_report(options, settings, interrupt=interrupt)


def publish_and_report(options: PublishOptions, settings: Settings, *, out: TextIO | None = None,
                       err: TextIO | None = None, interrupt: threading.Event | None = None) -> int:
    """Publish, print the report of how it went, and return its exit status."""
    from distributor.delivery.publish import publish
    out = out or sys.stdout
    result = publish(options, settings, out=out, err=err, interrupt=interrupt)
    print("\n".join(result.lines(f"distributor status {options.issue}")), file=out)
    return result.exit_status
