"""`distributor status`: who got the issue, and who did not (failed or uncertain, with the reply);
and how far its WeChat steps are, with what to run next."""
from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TextIO

from distributor.channel import StepState
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


def write_status(ledger: Ledger, issue_key: str, fmt: str, out: TextIO, *,
                 steps: Mapping[str, StepState | None] | None = None) -> None:
    """Write the counts per channel and status, and the problem rows, as a table, JSON or CSV; and
    what `steps` holds of each step channel (None: nothing recorded; not in CSV, which lists recipients)."""
    steps = steps or {}
    counts = ledger.counts(issue_key)
    found = problems(ledger, issue_key, sorted(counts))
    if fmt == "json":
        shown = {name: asdict(state) if state else None for name, state in steps.items()}
        json.dump({"issue": issue_key, "counts": counts, "problems": [asdict(p) for p in found], **shown},
                  out, ensure_ascii=False, indent=2)
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
        for problem in found:
            print(f"  {problem.state:9} {problem.channel}: {problem.recipient}: "
                  f"{problem.reply or problem.error or ''}", file=out)
        for name, state in steps.items():
            if state is None:
                continue
            print(f"  {name}:", file=out)
            for line in state.lines():
                print(f"    {line}", file=out)
