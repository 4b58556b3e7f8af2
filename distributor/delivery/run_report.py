"""What a publish says when it ends, and its exit status: for the whole issue, not only this run.

A run that sends nothing new still exits 1 while earlier runs left rows failed or uncertain (a
killed run's `sending` rows, say), and its last line says how many and where to look:
"3 uncertain, 20 failed from earlier runs: distributor status ISSUE".
"""
from __future__ import annotations

from dataclasses import dataclass

from distributor.errors import EXIT_FAILED, EXIT_OK, EXIT_STOPPED
from distributor.ledger.store import Ledger
from distributor.delivery.row_run import ChannelOutcome


@dataclass(frozen=True)
class Standing:
    """The issue's mail rows that did not get it, as the ledger has them after the run."""

    failed: int
    uncertain: int


def standing(ledger: Ledger, issue_key: str, channels: list[str]) -> Standing:
    """Count the failed and uncertain (`sending`) rows of the issue on `channels`."""
    counts = ledger.counts(issue_key)
    return Standing(sum(counts.get(name, {}).get("failed", 0) for name in channels),
                    sum(counts.get(name, {}).get("sending", 0) for name in channels))


def summary(outcomes: list[ChannelOutcome], issue: Standing, mail_channels: list[str], sent_label: str,
            status_command: str) -> tuple[list[str], int]:
    """Return the report's lines and the exit status: 3 when a channel stopped early, else 1 when this
    run or an earlier one left a row failed or uncertain (or WeChat failed), else 0."""
    lines, status = [], EXIT_OK
    for outcome in outcomes:
        if outcome.detail:
            lines.append(f"  {outcome.channel}: {outcome.detail}")
        else:
            lines.append(f"  {outcome.channel}: {outcome.sent} {sent_label}, {outcome.failed} failed, "
                         f"{outcome.uncertain} uncertain")
        if outcome.stopped:
            lines.append(f"  {outcome.channel}: stopped: {outcome.stopped}; publish again to resume")
            status = EXIT_STOPPED
        elif outcome.failed or outcome.uncertain:
            status = max(status, EXIT_FAILED)
    this_run = [outcome for outcome in outcomes if outcome.channel in mail_channels]
    earlier_uncertain = max(issue.uncertain - sum(outcome.uncertain for outcome in this_run), 0)
    earlier_failed = max(issue.failed - sum(outcome.failed for outcome in this_run), 0)
    if earlier_uncertain or earlier_failed:
        parts = [f"{earlier_uncertain} uncertain"] * bool(earlier_uncertain) + \
                [f"{earlier_failed} failed"] * bool(earlier_failed)
        lines.append(f"  {', '.join(parts)} from earlier runs: {status_command}")
        status = max(status, EXIT_FAILED)
    return lines, status
