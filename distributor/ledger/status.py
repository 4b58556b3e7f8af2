"""Who did not get an issue, as the ledger has it: each failed or uncertain row, with the reply."""
from __future__ import annotations

from dataclasses import dataclass

from distributor.ledger.store import Ledger


@dataclass(frozen=True)
class Problem:
    channel: str
    recipient: str
    state: str            # failed | uncertain
    attempts: int
    reply: str | None
    error: str | None


def problems(ledger: Ledger, issue_key: str, channels: list[str]) -> list[Problem]:
    """Return the failed and uncertain deliveries of the issue, channel by channel."""
    found = []
    for channel in channels:
        for row in ledger.rows(issue_key, channel, ("failed", "uncertain"), skip_suppressed=False):
            found.append(Problem(channel, row.recipient, row.status, row.attempts, row.reply,
                                 row.last_error))
    return found
