"""`distributor bounces`: read the bounce mailbox (IMAP or a Maildir) once, record its bounces and
complaints in the ledger, suppress what the rules say, and move each message read out of the way."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from distributor.commands import stop_on_signals
from distributor.errors import EXIT_OK, EXIT_STOPPED
from distributor.settings import Settings

if TYPE_CHECKING:
    from distributor.feedback.run import BounceRun

# Lines of addresses printed per section; the rest is counted (`subscribers list --bounced` has them all).
_SHOWN = 50


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `bounces` to the `distributor` command line."""
    bounces = subparsers.add_parser("bounces", help="read the bounce mailbox: record bounces and complaints, "
                                                    "suppress dead addresses")
    bounces.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Read the mailbox once and print what it held; exit 3 when interrupted before the end."""
    from distributor.feedback.run import read_mailbox
    interrupt = stop_on_signals("stopping after the message being read")
    result = read_mailbox(settings, interrupt=interrupt)
    print("\n".join(summary(result)))
    return EXIT_STOPPED if result.interrupted else EXIT_OK


def summary(result: BounceRun) -> list[str]:
    """The lines that say what one reading of the mailbox did."""
    counts = ", ".join(f"{result.count(kind)} {label}" for kind, label in (
        ("hard", "hard bounces"), ("soft", "soft bounces"), ("complaint", "complaints"),
        ("policy", "refusals of the sender")))
    lines = [f"bounces: read {result.read} messages from {result.where}: {counts}"]
    lines += _section("suppressed", [f"{f.address} ({_what(f.kind, f.status, f.detail)}{_issue(f.issue_key)})"
                                     for f in result.suppressed])
    soft = [f for f in result.recorded if f.kind == "soft" and not f.suppressed]
    lines += _section("soft bounce", [f"{f.address} ({f.soft_count} within bounces.soft_bounce_days: "
                                      f"{_what(f.kind, f.status, f.detail)})" for f in soft])
    policy = [f for f in result.recorded if f.kind == "policy"]
    lines += _section("sender refused", [f"{f.address} ({_what(f.kind, f.status, f.detail)}): about the "
                                         "sender, not the address; see distributor check --dns" for f in policy])
    lines += _section("unknown", [f"{f.address or 'no address'} ({_what(f.kind, f.status, f.detail)}): "
                                  "no such recipient in the ledger, nothing recorded" for f in result.unknown])
    lines += _section("left", [f"{message.key}: {message.reason}" for message in result.left])
    if result.repeated:
        lines.append(f"  {result.repeated} messages were recorded by an earlier run and are now moved")
    if result.interrupted:
        lines.append("  interrupted: run again to read the rest")
    return lines


def _section(label: str, items: Sequence[str]) -> list[str]:
    lines = [f"  {label}: {item}" for item in items[:_SHOWN]]
    if len(items) > _SHOWN:
        lines.append(f"  {label}: … and {len(items) - _SHOWN} more")
    return lines


def _what(kind: str, status: str | None, detail: str | None) -> str:
    return " ".join(part for part in (kind, status, (detail or "")[:120]) if part)


def _issue(issue_key: str | None) -> str:
    return f", issue {issue_key}" if issue_key else ""
