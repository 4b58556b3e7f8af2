"""`distributor status`: who got the issue, and who did not (failed or uncertain, with the reply);
and how far its WeChat steps are, with what to run next."""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from typing import TextIO

from distributor.channels.wechat.state import WechatState

from distributor.ledger.store import Ledger

_LABELS = {"failed": "failed", "sending": "uncertain"}


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
        for row in ledger.rows(issue_key, channel, ("failed", "sending"), skip_suppressed=False):
            found.append(Problem(channel, row.recipient, _LABELS[row.status], row.attempts, row.reply,
                                 row.last_error))
    return found


def write_status(ledger: Ledger, issue_key: str, fmt: str, out: TextIO, *,
                 wechat: WechatState | None = None) -> None:
    """Write the counts per channel and status, and the problem rows, as a table, JSON or CSV; and
    the `wechat` steps (not in CSV, which lists recipients)."""
    counts = ledger.counts(issue_key)
    found = problems(ledger, issue_key, sorted(counts))
    if fmt == "json":
        json.dump({"issue": issue_key, "counts": counts, "problems": [asdict(p) for p in found],
                   "wechat": asdict(wechat) if wechat else None}, out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(["channel", "recipient", "state", "attempts", "reply", "error"])
        for problem in found:
            writer.writerow([problem.channel, problem.recipient, problem.state, problem.attempts,
                             problem.reply or "", problem.error or ""])
    else:
        print(f"issue {issue_key}", file=out)
        if not counts and wechat is None:
            print("  nothing recorded yet", file=out)
        for channel, by_status in sorted(counts.items()):
            summary = ", ".join(f"{by_status.get(status, 0)} {_LABELS.get(status, status)}"
                                for status in ("sent", "failed", "sending", "pending"))
            print(f"  {channel}: {summary}", file=out)
        for problem in found:
            print(f"  {problem.state:9} {problem.channel}: {problem.recipient}: "
                  f"{problem.reply or problem.error or ''}", file=out)
        if wechat is not None:
            _write_wechat(wechat, out)


def _write_wechat(state: WechatState, out: TextIO) -> None:
    """Write each WeChat step done, the last failure, what it means and the command to run next."""
    print("  wechat:", file=out)
    draft = state.draft_media_id and f"media_id {state.draft_media_id}" + (
        "" if state.draft_is_current else " (made from an earlier version of the issue file)")
    done = {"images uploaded": state.images,
            "cover": state.cover_media_id and f"media_id {state.cover_media_id}",
            "draft": draft,
            "publish_id": state.publish_id,
            "article": state.article_url,
            "mass send": state.mass_msg_id and f"msg_id {state.mass_msg_id}",
            "in progress": state.held_by}
    for label, value in done.items():
        if value:
            print(f"    {label}: {value}", file=out)
    if state.failure:
        print(f"    {state.failure_kind} at {state.failed_step}: {state.failure}", file=out)
    print(f"    {state.meaning}", file=out)
    if state.next_command:
        print(f"    next: {state.next_command}", file=out)
