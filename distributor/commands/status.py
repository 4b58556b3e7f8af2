"""`distributor status`: who got an issue and who did not, and how far its steps went on each step channel."""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from distributor.channel import StepState
from distributor.commands import TITLE_HELP
from distributor.errors import EXIT_OK, InputError
from distributor.ledger.feedback import FeedbackLedger
from distributor.ledger.status import problems
from distributor.ledger.store import Ledger
from distributor.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `status` to the `distributor` command line."""
    status = subparsers.add_parser("status", help="who got the issue, and who did not")
    status.add_argument("issue", type=Path)
    status.add_argument("--title", metavar="TEXT", help=TITLE_HELP)
    formats = status.add_mutually_exclusive_group()
    formats.add_argument("--json", dest="format", action="store_const", const="json")
    formats.add_argument("--csv", dest="format", action="store_const", const="csv")
    status.set_defaults(run=run, format="table")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the ledger's account of `args.issue` as a table, JSON or CSV."""
    from distributor import registry
    from distributor.delivery.step_run import recorded_steps
    from distributor.ledger.store import open_ledger
    from distributor.render.issue import load_issue
    if not settings.ledger.url and not Path(settings.ledger.path).expanduser().exists():
        raise InputError("no ledger yet: nothing has been published", path=settings.ledger.path)
    with open_ledger(settings.ledger) as ledger:
        issue = load_issue(args.issue, settings.site, title=args.title)
        steps = {channel.name: channel.state(recorded_steps(ledger, channel.name, issue.key), issue, settings,
                                             _publish_again(args, channel.name))
                 for channel in registry.step_channels(registry.names())}
        write_status(ledger, issue.key, args.format, sys.stdout, steps=steps)
    return EXIT_OK


def _publish_again(args: argparse.Namespace, channel: str) -> str:
    """Return the command line that goes on with the issue's steps on `channel`, with the settings and title given."""
    return shlex.join(["distributor", *(["--settings", args.settings] if args.settings else []),
                       "publish", str(args.issue), "--channel", channel,
                       *(["--title", args.title] if args.title else [])])


def write_status(ledger: Ledger, issue_key: str, fmt: str, out: TextIO, *,
                 steps: Mapping[str, StepState | None] | None = None) -> None:
    """Write the counts per channel and status, and the problem rows, as a table, JSON or CSV; and
    what `steps` holds of each step channel (None: nothing recorded; not in CSV, which lists recipients)."""
    steps = steps or {}
    counts = ledger.counts(issue_key)
    found = problems(ledger, issue_key, sorted(counts))
    feedback = FeedbackLedger(ledger).counts(issue_key)
    if fmt == "json":
        shown = {name: asdict(state) if state else None for name, state in steps.items()}
        json.dump({"issue": issue_key, "counts": counts, "feedback": feedback, "problems": [asdict(p) for p in found],
                   **shown}, out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(["channel", "recipient", "state", "attempts", "reply", "error"])
        for problem in found:
            writer.writerow([problem.channel, problem.recipient, problem.state, problem.attempts,
                             problem.reply or "", problem.error or ""])
    else:
        print(f"issue {issue_key}", file=out)
        if not counts and not any(steps.values()):
            print("  nothing recorded yet", file=out)
        for channel, by_status in sorted(counts.items()):
            summary = ", ".join(f"{by_status.get(status, 0)} {status}"
                                for status in ("sent", "failed", "uncertain", "pending"))
            print(f"  {channel}: {summary}", file=out)
            if channel in feedback:
                print(f"  {channel}: {_feedback_line(feedback[channel])} (from the bounce mailbox)", file=out)
        for problem in found:
            print(f"  {problem.state:9} {problem.channel}: {problem.recipient}: "
                  f"{problem.reply or problem.error or ''}", file=out)
        for name, state in steps.items():
            if state is None:
                continue
            print(f"  {name}:", file=out)
            for line in state.lines():
                print(f"    {line}", file=out)


def _feedback_line(kinds: Mapping[str, int]) -> str:
    """The bounces and complaints the mailbox gave back for a channel's mails of the issue, in words."""
    words = (("hard", "hard bounces"), ("soft", "soft bounces"), ("complaint", "complaints"),
             ("policy", "refusals of the sender"))
    return ", ".join(f"{kinds[kind]} {label}" for kind, label in words if kinds.get(kind))
