"""What a publish ends with: a `PublishResult` for the whole issue, not only this run, its exit
status and the lines the command prints.

A run that sends nothing new still exits 1 while earlier runs left rows failed or uncertain (a
killed run's `uncertain` rows, say), and its last line says how many and where to look:
"3 uncertain, 20 failed from earlier runs: distributor status ISSUE".
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from distributor.channel import StepState
from distributor.errors import EXIT_FAILED, EXIT_OK, EXIT_STOPPED
from distributor.ledger.store import Ledger


@dataclass(frozen=True)
class ChannelOutcome:
    """What one run did on one channel: its counts, why it stopped early if it did, and a channel's own
    account of what it did (WeChat: the article's fate; a test copy: the relay's reply)."""

    channel: str
    sent: int
    failed: int
    uncertain: int
    stopped: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Standing:
    """The issue's rows that did not get it, as the ledger has them after the run."""

    failed: int = 0
    uncertain: int = 0


def standing(ledger: Ledger, issue_key: str, channels: list[str]) -> Standing:
    """Count the failed and uncertain rows of the issue on `channels`."""
    counts = ledger.counts(issue_key)
    return Standing(sum(counts.get(name, {}).get("failed", 0) for name in channels),
                    sum(counts.get(name, {}).get("uncertain", 0) for name in channels))


@dataclass(frozen=True)
class PublishResult:
    """How a publish ended: each channel's outcome of this run (counts, why it stopped, a step
    channel's own account), what the ledger holds for the whole issue, and each step channel's state."""

    issue_key: str
    outcomes: tuple[ChannelOutcome, ...]
    row_channels: tuple[str, ...] = ()             # the per-recipient channels this run planned
    standing: Standing = Standing()
    steps: Mapping[str, StepState | None] = field(default_factory=dict)
    dry_run: bool = False
    declined: bool = False                         # the operator answered no: nothing was sent
    test_copy: bool = False                        # `--to`: one copy per channel, outside the ledger

    @property
    def exit_status(self) -> int:
        """3 when a channel stopped early, else 1 when this run or an earlier one left a row failed or
        uncertain (or a step channel failed), else 0."""
        if any(outcome.stopped for outcome in self.outcomes):
            return EXIT_STOPPED
        if any(outcome.failed or outcome.uncertain for outcome in self.outcomes) or any(self.earlier()):
            return EXIT_FAILED
        return EXIT_OK

    def stop_reasons(self) -> list[str]:
        """Say, per channel that stopped early, why."""
        return [f"{outcome.channel}: stopped: {outcome.stopped}" for outcome in self.outcomes if outcome.stopped]

    def earlier(self) -> tuple[int, int]:
        """Return the (uncertain, failed) rows that earlier runs left, beyond this run's own."""
        this_run = [outcome for outcome in self.outcomes if outcome.channel in self.row_channels]
        return (max(self.standing.uncertain - sum(outcome.uncertain for outcome in this_run), 0),
                max(self.standing.failed - sum(outcome.failed for outcome in this_run), 0))

    def lines(self, status_command: str) -> list[str]:
        """Return the report: a line per channel, why it stopped, and what earlier runs left."""
        if self.declined:
            return ["nothing sent"]
        sent_label = "handed to the dry-run sink" if self.dry_run else "sent"
        lines = []
        for outcome in self.outcomes:
            if outcome.detail:
                lines.append(f"  {outcome.channel}: {outcome.detail}")
            else:
                lines.append(f"  {outcome.channel}: {outcome.sent} {sent_label}, {outcome.failed} failed, "
                             f"{outcome.uncertain} uncertain")
            if outcome.stopped and not self.test_copy:
                lines.append(f"  {outcome.channel}: stopped: {outcome.stopped}; publish again to resume")
        uncertain, failed = self.earlier()
        if uncertain or failed:
            parts = [f"{uncertain} uncertain"] * bool(uncertain) + [f"{failed} failed"] * bool(failed)
            lines.append(f"  {', '.join(parts)} from earlier runs: {status_command}")
        return lines
