"""The `distributor` command. Exit status: 0 done, 1 some deliveries failed or are uncertain,
2 bad input, 3 the run stopped early (a later run resumes it)."""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from distributor.commands import schedule as schedule_commands
from distributor.web import server as serve
from distributor.commands import subscribers as subscriber_commands
from distributor.validate.addresses import explained_address_problem
from distributor.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_STOPPED, InputError, StorageError
from distributor.render.renditions import CHANNELS, render_issue
from distributor.render.preview import preview_files, summarise, write_files
from distributor.settings import Settings, load_settings


_TITLE_HELP = "the issue's title, instead of the file's own (needed when it has no front matter and no '# ' line)"


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` and return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.settings or os.environ.get("DISTRIBUTOR_SETTINGS"))
        return args.run(args, settings)
    except InputError as exc:
        print(f"distributor: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StorageError as exc:
        print(f"distributor: error: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt:
        print("distributor: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distributor", description=__doc__.split("\n")[0])
    parser.add_argument("--settings", metavar="FILE",
                        help="settings YAML (default: $DISTRIBUTOR_SETTINGS, else built-in defaults)")
    commands = parser.add_subparsers(dest="command", required=True)

    preview = commands.add_parser("preview", help="write every rendition to a folder; send nothing")
    preview.add_argument("issue", type=Path)
    preview.add_argument("--channel", choices=(*CHANNELS, "all"), default="all")
    preview.add_argument("--title", metavar="TEXT", help=_TITLE_HELP)
    preview.add_argument("--out", type=Path, default=Path("preview"), help="folder (default: ./preview)")
    preview.add_argument("--serve", action="store_true",
                         help="serve a live page with the renditions side by side on 127.0.0.1 instead")
    preview.add_argument("--port", type=int, default=8000, help="port of --serve (default 8000; 0: any free port)")
    preview.set_defaults(run=_preview)

    publish = commands.add_parser("publish", help="deliver the issue on every enabled channel")
    publish.add_argument("issue", type=Path)
    publish.add_argument("--channel", choices=CHANNELS, action="append",
                         help="only this channel (repeatable)")
    publish.add_argument("--dry-run", action="store_true", help="show what would be sent; send nothing")
    publish.add_argument("--title", metavar="TEXT", help=_TITLE_HELP)
    publish.add_argument("--to", metavar="ADDRESS", help="send one test copy to ADDRESS, outside the ledger")
    publish.add_argument("--to-wechat", metavar="WXNAME",
                         help="send one preview of the WeChat article to this WeChat account (draft made if needed)")
    publish.add_argument("--yes", action="store_true", help="do not ask before sending (cron)")
    publish.add_argument("--force", action="store_true", help="publish even with draft: true")
    publish.add_argument("--resend-failed", action="store_true", help="try recipients recorded as failed again")
    publish.add_argument("--resend-uncertain", action="store_true",
                         help="send again to recipients whose delivery is uncertain (may duplicate)")
    publish.set_defaults(run=_publish)

    status = commands.add_parser("status", help="who got the issue, and who did not")
    status.add_argument("issue", type=Path)
    status.add_argument("--title", metavar="TEXT", help=_TITLE_HELP)
    formats = status.add_mutually_exclusive_group()
    formats.add_argument("--json", dest="format", action="store_const", const="json")
    formats.add_argument("--csv", dest="format", action="store_const", const="csv")
    status.set_defaults(run=_status, format="table")

    check = commands.add_parser("check", help="connect and log in to the relay (and WeChat) without sending")
    check.set_defaults(run=_check)

    serve.add_commands(commands)
    subscriber_commands.add_commands(commands)
    schedule_commands.add_commands(commands)
    return parser


def _preview(args: argparse.Namespace, settings: Settings) -> int:
    if args.serve:
        from distributor.web.preview_server import serve_preview
        return serve_preview(args.issue, settings, port=args.port, out=sys.stdout, title=args.title)
    channels = CHANNELS if args.channel == "all" else (args.channel,)
    renditions = render_issue(args.issue, settings, channels, title=args.title)
    write_files(preview_files(renditions, settings), args.out)
    print(f"{renditions.issue.title}  [{renditions.issue.key}]  → {args.out}/")
    for summary in summarise(renditions):
        print("  " + summary.line())
        for warning in summary.warnings:
            print(f"    warning: {warning}")
    return EXIT_OK


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from distributor.render.issue import load_issue
    from distributor.ledger.store import open_ledger
    from distributor.ledger.status import write_status
    from distributor.channels.wechat.state import wechat_state
    if not Path(settings.ledger.path).expanduser().exists():
        raise InputError("no ledger yet: nothing has been published", path=settings.ledger.path)
    ledger = open_ledger(settings.ledger)
    try:
        issue = load_issue(args.issue, settings.site, title=args.title)
        publish_again = shlex.join(["distributor", *(["--settings", args.settings] if args.settings else []),
                                    "publish", str(args.issue), "--channel", "wechat",
                                    *(["--title", args.title] if args.title else [])])
        wechat = wechat_state(ledger, issue.key, issue.content_hash, publish_again, settings.channels.wechat.mode)
        write_status(ledger, issue.key, args.format, sys.stdout, wechat=wechat)
    finally:
        ledger.close()
    return EXIT_OK


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from distributor.commands.check import check_services
    return EXIT_OK if check_services(settings, sys.stdout) else EXIT_FAILED


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    from distributor.delivery.publish import PublishOptions, publish   # the delivery stack loads only when needed
    if args.to is not None and (problem := explained_address_problem(args.to)):
        raise InputError(f"--to: {problem}")
    options = PublishOptions(issue=args.issue, channels=tuple(args.channel or ()), dry_run=args.dry_run,
                             to=args.to, yes=args.yes, force=args.force, resend_failed=args.resend_failed,
                             resend_uncertain=args.resend_uncertain, to_wechat=args.to_wechat, title=args.title)
    interrupt = threading.Event()

    def stop_gracefully(signum: int, frame: object) -> None:
        if interrupt.is_set():          # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        print("\ndistributor: stopping after the messages in flight (again to stop at once)", file=sys.stderr)
        interrupt.set()

    signal.signal(signal.SIGINT, stop_gracefully)
    signal.signal(signal.SIGTERM, stop_gracefully)
    return publish(options, settings, interrupt=interrupt)
