"""`publish` through drains: the planned rows are left in the ledger (one drain per row channel) and sent
by workers, `distributor worker` processes on any machine (`--via-workers`) or, when the settings name
several relays, a worker inside `publish` itself. Either way `publish` reads its progress from the
ledger, so what it shows is what every worker together has done.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from distributor.delivery.run_report import ChannelOutcome
from distributor.ledger.store import Ledger, open_ledger
from distributor.ledger.work import Drain, WorkLedger
from distributor.render.renditions import Renditions
from distributor.settings import Settings
from distributor.workers.worker import DrainWorker

_SHOW_EVERY_SECONDS = 2.0


@dataclass(frozen=True)
class DrainPlan:
    """What `publish` leaves to the workers: the issue file, the row channels with rows to send, the
    --title, and whether this process sends them itself."""

    issue_path: Path
    channels: tuple[str, ...]
    title: str | None
    send_here: bool


def send_by_drains(plan: DrainPlan, renditions: Renditions, ledger: Ledger, settings: Settings, err: TextIO,
                   interrupt: threading.Event, *, clock: Callable[[], float] = time.monotonic) -> list[ChannelOutcome]:
    """Open the drains, send through a worker of this process when `plan.send_here`, and watch the ledger
    until every row is done, the rows left wait on a paused relay, or `interrupt` is set."""
    issue = renditions.issue
    before = ledger.counts(issue.key)
    work = WorkLedger(ledger, "publish", settings.workers.lease_seconds)
    for channel in plan.channels:
        work.open_drain(Drain(issue.key, channel, str(plan.issue_path.resolve()), issue.content_hash, plan.title))
    worker = _InProcessWorker(settings, err) if plan.send_here else None
    if worker is None:
        print(f"distributor: {', '.join(plan.channels)}: left to `distributor worker`; progress follows "
              "(Ctrl-C stops watching, not the workers)", file=err, flush=True)
    with worker or contextlib.nullcontext():
        stopped = _watch(work, issue.key, plan.channels, settings, err, interrupt, worker, clock)
    after = ledger.counts(issue.key)

    def gained(channel: str, status: str) -> int:
        return max(0, after.get(channel, {}).get(status, 0) - before.get(channel, {}).get(status, 0))

    return [ChannelOutcome(channel, gained(channel, "sent"), gained(channel, "failed"), gained(channel, "uncertain"),
                           stopped if work.remaining(issue.key, channel) else None) for channel in plan.channels]


def _watch(work: WorkLedger, issue_key: str, channels: tuple[str, ...], settings: Settings, err: TextIO,
           interrupt: threading.Event, worker: _InProcessWorker | None, clock: Callable[[], float]) -> str | None:
    """Print the drains' progress from the ledger until no row is left (None), or return why the rest waits."""
    last_change, shown, last_line = clock(), clock(), ""
    stall = settings.workers.lease_seconds + settings.workers.poll_seconds
    while True:
        counts = work.ledger.counts(issue_key)
        left = sum(work.remaining(issue_key, channel) for channel in channels)
        line = "  ".join(f"{channel} {counts.get(channel, {}).get('sent', 0)} sent, "
                         f"{counts.get(channel, {}).get('failed', 0)} failed, "
                         f"{counts.get(channel, {}).get('uncertain', 0)} uncertain" for channel in channels)
        line += f", {left} to send"
        if line != last_line:
            last_change = clock()
        if line != last_line and (clock() - shown >= _SHOW_EVERY_SECONDS or not left):
            print(f"distributor: {line}", file=err, flush=True)
            shown, last_line = clock(), line
        if not left:
            return None
        if interrupt.is_set():
            return "interrupted; the rows left wait for `distributor worker` or another publish"
        paused = work.paused_relays()
        quiet = (worker is not None and not worker.alive()) or clock() - last_change > stall
        if paused and quiet:
            return "; ".join(f"relay {relay} paused: {reason}" for relay, reason in paused.items()) + \
                " (the workers try it again after workers.relay_pause_seconds)"
        if worker is not None and worker.failure:
            return worker.failure
        interrupt.wait(min(settings.workers.poll_seconds, 0.5))


class _InProcessWorker:
    """A drain worker on a thread of `publish`, with a ledger connection of its own, until the watch ends
    (which it does soon after the user's interrupt: the messages in flight finish, no new one starts)."""

    def __init__(self, settings: Settings, err: TextIO):
        self.stop = threading.Event()
        self.failure: str | None = None
        self.worker = DrainWorker(settings, lambda: open_ledger(settings.ledger), self.stop)
        self.err = err
        self.thread = threading.Thread(target=self._run, name="publish-worker", daemon=True)
        self.poll = settings.workers.poll_seconds

    def __enter__(self) -> _InProcessWorker:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        from distributor.errors import DistributorError
        try:
            while not self.stop.is_set():
                report = self.worker.run_pass(self.err)
                if report.refused:
                    self.failure = "; ".join(why for _, why in report.refused)
                    return
                sent = any(outcome.sent or outcome.failed or outcome.uncertain for _, outcome in report.outcomes)
                if not sent and all(outcome.stopped for _, outcome in report.outcomes):
                    return                  # every relay it tried stopped: the watch says why
                if not sent:
                    self.stop.wait(self.poll)
        except DistributorError as exc:
            self.failure = str(exc)
