"""The drain worker: send the rows that `publish --via-workers` left in the ledger, side by side with any
number of other workers on this machine or others sharing the ledger (PostgreSQL for several machines).

Each pass takes every open drain in turn and, for each relay its rows go through, claims and sends
batches until nothing is left to claim (distributor/workers/drain_run.py), the relays running side
by side. A worker renders the issue itself from the drain's file and sends only when its content is
the one that was published (the same path on every machine: a shared or deployed checkout). A drain
is done when none of its rows is pending.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from distributor import registry
from distributor.delivery.progress import Progress
from distributor.delivery.retry import RetryPolicy
from distributor.delivery.send import group_of, unsubscribe_links
from distributor.errors import InputError
from distributor.ledger.store import Ledger
from distributor.ledger.work import Drain, WorkLedger
from distributor.render.renditions import Renditions, render_issue
from distributor.settings import Settings
from distributor.workers.drain_run import DrainOutcome, drain_through, routes


def worker_name() -> str:
    """A name no other worker has: host, process, and a random part (a process id is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class PassReport:
    """What one pass over the open drains did: per drain and relay, and the drains it could not send."""

    outcomes: tuple[tuple[Drain, DrainOutcome], ...] = ()
    refused: tuple[tuple[Drain, str], ...] = ()     # a drain whose file this worker cannot send, and why
    finished: tuple[Drain, ...] = ()

    def lines(self) -> list[str]:
        shown = [f"worker: {drain.issue_key} {drain.channel} via {outcome.relay}: {outcome.sent} sent, "
                 f"{outcome.failed} failed, {outcome.uncertain} uncertain"
                 + (f" (stopped: {outcome.stopped})" if outcome.stopped else "")
                 for drain, outcome in self.outcomes if outcome.sent or outcome.failed or outcome.uncertain
                 or outcome.stopped]
        shown += [f"worker: warning: {drain.issue_key} {drain.channel}: {why}" for drain, why in self.refused]
        shown += [f"worker: {drain.issue_key} {drain.channel}: every row is done" for drain in self.finished]
        return shown


@dataclass
class DrainWorker:
    """Drain the ledger's open drains as `holder`, reading the ledger through `open_ledger`."""

    settings: Settings
    open_ledger: Callable[[], Ledger]
    interrupt: threading.Event
    holder: str = field(default_factory=worker_name)
    _renditions: dict[tuple[str, str, str | None], Renditions] = field(default_factory=dict)

    def run_pass(self, err: TextIO) -> PassReport:
        """Send what can be claimed now of every open drain; return what was done."""
        outcomes: list[tuple[Drain, DrainOutcome]] = []
        refused: list[tuple[Drain, str]] = []
        finished: list[Drain] = []
        with self.open_ledger() as ledger, ledger.storage_errors():
            work = WorkLedger(ledger, self.holder, self.settings.workers.lease_seconds)
            for drain in work.open_drains():
                if self.interrupt.is_set():
                    break
                try:
                    renditions = self._ready(drain)
                except InputError as exc:
                    refused.append((drain, str(exc)))
                    continue
                outcomes += [(drain, outcome) for outcome in asyncio.run(self._drain(drain, renditions, work, err))]
                if work.finish_if_drained(drain):
                    finished.append(drain)
        return PassReport(tuple(outcomes), tuple(refused), tuple(finished))

    def _ready(self, drain: Drain) -> Renditions:
        """Render the drain's issue (once per file, title and channel), refusing a file that is not
        the one that was published and settings this worker cannot send with (a secret missing)."""
        from distributor.delivery.publish import configuration_problems
        problems = configuration_problems(self.settings, (drain.channel,))
        if problems:
            raise InputError("; ".join(problems))
        key = (drain.issue_path, drain.channel, drain.title)
        if key not in self._renditions:
            self._renditions[key] = render_issue(Path(drain.issue_path), self.settings, (drain.channel,),
                                                 title=drain.title)
        renditions = self._renditions[key]
        if renditions.issue.content_hash != drain.content_hash or renditions.issue.key != drain.issue_key:
            del self._renditions[key]
            raise InputError("the issue file here is not the one that was published (its content differs); "
                             "this worker leaves its rows to the others", path=drain.issue_path)
        return renditions

    async def _drain(self, drain: Drain, renditions: Renditions, work: WorkLedger,
                     err: TextIO) -> list[DrainOutcome]:
        """Send the drain's rows through each relay that is not paused, the relays side by side."""
        (channel,) = registry.row_channels((drain.channel,))
        group = tuple(other.name for other in registry.row_channels(registry.names())
                      if group_of(other) == group_of(channel))
        secret = os.environ.get(self.settings.unsubscribe_secret_env, "")
        links = unsubscribe_links(self.settings, secret)
        policy = RetryPolicy.from_settings(self.settings.retry)
        progress = Progress(err, live=False)
        paused = work.paused_relays()
        workers = self.settings.workers
        runs = [drain_through(drain, route, channel, renditions, work, links, policy, progress,
                              batch_size=workers.batch_size, pause_seconds=workers.relay_pause_seconds,
                              interrupt=self.interrupt)
                for route in routes(channel, self.settings, group) if route.share.relay not in paused]
        return list(await asyncio.gather(*runs))
