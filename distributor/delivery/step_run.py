"""The checkpointed step run: a channel delivered as a few steps for one account (upload, draft,
publish), each step's result recorded the moment it is known, so a re-run starts after the last one.

The channel's steps say what to call and what to record, through a `StepContext`; this run owns the
rest: the lease that keeps a second run off the issue's steps, the retry policy every call goes
through, the checkpoints and the record of the last failure that `status` shows.

Only one run at a time drives an issue's steps on a channel: it holds the ledger lease
"<channel>:<issue key>", renewed every third of lease_seconds while it works and given up at the end;
a second run waits for it (at most lease_wait_seconds), then reads what the first one recorded, or
stops. A run writes nothing once its lease is lost.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from distributor.channel import KeyValueCache, RecordedSteps, StepFailure, StepOutcome, Steps
from distributor.delivery.retry import RetryPolicy
from distributor.errors import (
    ChannelStoppedError,
    DistributorError,
    InputError,
    StorageError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from distributor.ledger.store import DATABASE_ERRORS, Ledger

T = TypeVar("T")
# How often a run waiting for another run's lease asks for it again.
LEASE_POLL_SECONDS = 0.2
# A poll waits at most this long between two questions; it ends at its own deadline.
POLL_CAP_SECONDS = 60.0
# A poll ends at its deadline; this only bounds the attempts (and keeps 2**n a float).
POLL_ATTEMPTS = 1000
FAILURE_STEP = "failure"


def lease_name(channel: str, issue_key: str) -> str:
    return f"{channel}:{issue_key}"


def recorded_steps(ledger: Ledger, channel: str, issue_key: str) -> RecordedSteps:
    """Read back the issue's steps on `channel`, the last run's failure, and who holds them now."""
    lease = ledger.lease(lease_name(channel, issue_key))
    steps = dict(ledger.checkpoints(issue_key, channel))
    failure = json.loads(steps.pop(FAILURE_STEP)) if FAILURE_STEP in steps else None
    return RecordedSteps(steps, StepFailure(**failure) if failure else None, lease.holder if lease else None,
                         lease.expires_at if lease else None)


OutcomeT = TypeVar("OutcomeT", bound=StepOutcome)


async def run_steps(steps: Steps[OutcomeT], ledger: Ledger, issue_key: str, *, channel: str, label: str,
                    policy: RetryPolicy, lease_seconds: float, lease_wait_seconds: float) -> OutcomeT:
    """Take the issue's lease on the channel, run its steps, record why they ended early (or forget an
    earlier failure once they succeed) and give the lease up; the outcome's detail says when this run
    had to wait for another one."""
    lease = StepsLease(ledger, lease_name(channel, issue_key), label, lease_seconds,
                       lease_wait_seconds)
    async with lease:
        context = LedgerStepContext(ledger, issue_key, channel, policy, lease)
        try:
            outcome = await steps.run(context)
        except DistributorError as exc:
            if lease.held():    # else another run has taken the steps over, and owns the record
                _record_failure(ledger, issue_key, channel, context.step, exc)
            raise
        ledger.drop_checkpoint(issue_key, channel, FAILURE_STEP)
    return replace(outcome, detail=outcome.detail + lease.waited_note())  # type: ignore[type-var]


class StepsLease:
    """This run's hold on one issue's steps on a channel: the ledger lease `name`, taken on entry (waiting
    for another holder at most `wait_seconds`, then ChannelStoppedError), renewed in the background
    every third of `seconds`, and given up on exit."""

    def __init__(self, ledger: Ledger, name: str, label: str, seconds: float, wait_seconds: float):
        self.ledger, self.name, self.label = ledger, name, label
        self.seconds, self.wait_seconds = seconds, wait_seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.held_until = 0.0
        self.waited: float | None = None       # seconds spent waiting for another run, if any
        self._renewing: asyncio.Future | None = None

    async def __aenter__(self) -> StepsLease:
        started = time.monotonic()
        lease = self.ledger.take_lease(self.name, self.holder, self.seconds)
        while lease.holder != self.holder:
            left = started + self.wait_seconds - time.monotonic()
            if left <= 0:
                raise ChannelStoppedError(self._held_by_another_run(lease.holder, lease.expires_at))
            await asyncio.sleep(min(LEASE_POLL_SECONDS, left))
            lease = self.ledger.take_lease(self.name, self.holder, self.seconds)
            self.waited = time.monotonic() - started
        self.held_until = lease.expires_at
        self._renewing = asyncio.ensure_future(self._renew())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)
        self.ledger.release_lease(self.name, self.holder)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.seconds / 3)
            until = self.ledger.clock() + self.seconds
            try:
                renewed = self.ledger.renew_lease(self.name, self.holder, self.seconds)
            except (*DATABASE_ERRORS, StorageError):  # type: ignore[misc]   # a tuple of exception classes
                continue   # a busy ledger: try again next time, while the lease still runs
            if not renewed:
                self.held_until = 0.0
                return
            self.held_until = until

    def held(self) -> bool:
        return self.ledger.clock() < self.held_until

    def ensure_held(self) -> None:
        """Raise ChannelStoppedError once the lease has run out or another run has taken it over."""
        if not self.held():
            raise ChannelStoppedError(
                f"this run lost its lease on the issue's {self.label} steps (it could not renew it in time, or "
                "another run took them over); nothing more is recorded: publish again to resume")

    def waited_note(self) -> str:
        if self.waited is None:
            return ""
        return f" (waited {self.waited:.1f} s for another run of this issue to finish its {self.label} steps)"

    def _held_by_another_run(self, holder: str, expires_at: float) -> str:
        until = datetime.fromtimestamp(expires_at).astimezone()
        return (f"another run ({holder}) holds the lease on this issue's {self.label} steps, renewed while it "
                f"works (now until {until:%H:%M:%S %z}); waited {self.wait_seconds:g} s for it: publish again "
                "once that run has ended, and it resumes after the last step recorded")


class LedgerStepContext:
    """What a channel's steps work with: the issue's recorded steps (written only while the lease holds),
    the ledger's cache and clock, and calls made under the run's retry policy. `step` names the step
    under way, for the failure record."""

    def __init__(self, ledger: Ledger, issue_key: str, channel: str, policy: RetryPolicy, lease: StepsLease):
        self._ledger, self._key, self._channel = ledger, issue_key, channel
        self._policy, self._lease = policy, lease
        self.step = ""

    @property
    def cache(self) -> KeyValueCache:
        return self._ledger

    def clock(self) -> float:
        """Return the ledger's time (epoch seconds), the one the recorded steps are dated by."""
        return self._ledger.clock()

    def recorded(self, step: str) -> str | None:
        return self._ledger.checkpoint(self._key, self._channel, step)

    def record(self, step: str, value: str) -> None:
        self._lease.ensure_held()
        self._ledger.save_checkpoint(self._key, self._channel, step, value)

    def forget(self, step: str) -> None:
        self._lease.ensure_held()
        self._ledger.drop_checkpoint(self._key, self._channel, step)

    def start(self, step: str) -> float:
        """Record that `step`'s call is about to go out ("<step>_started"), so a later run knows to
        look first; return the time recorded."""
        started = self.clock()
        self.record(f"{step}_started", repr(started))
        return started

    async def call(self, function: Callable[..., T], *args: Any, repeatable: bool = False, **kwargs: Any) -> T:
        """Run a blocking call in a thread under the retry policy; a `repeatable` call (one whose
        repeat does no harm) is also retried when its reply was lost."""
        async def attempt() -> T:
            try:
                return await asyncio.to_thread(function, *args, **kwargs)
            except UncertainDeliveryError as exc:
                if not repeatable:
                    raise
                raise TransientDeliveryError(f"{exc}; repeating it is harmless", reply=exc.reply) from exc
        return await self._policy.run(attempt)

    async def poll(self, ask: Callable[[], T], *, every_seconds: float, for_seconds: float) -> T:
        """Run the blocking `ask` in a thread until it returns: each TransientDeliveryError it raises (a
        job still running, a failed read) means ask again, backing off from `every_seconds` up to a
        minute, until `for_seconds` have passed; then the last one is raised."""
        polling = RetryPolicy(attempts=POLL_ATTEMPTS, base_delay_seconds=every_seconds,
                              max_delay_seconds=POLL_CAP_SECONDS, deadline_seconds=for_seconds)
        return await polling.run(lambda: asyncio.to_thread(ask))


def _record_failure(ledger: Ledger, issue_key: str, channel: str, step: str, error: DistributorError) -> None:
    """Record why the run ended early and at which step, for `status`."""
    kind = ("stopped" if isinstance(error, (ChannelStoppedError, TransientDeliveryError)) else
            "uncertain" if isinstance(error, UncertainDeliveryError) else
            "bad input" if isinstance(error, InputError) else "failed")
    ledger.save_checkpoint(issue_key, channel, FAILURE_STEP, json.dumps(
        {"step": step, "kind": kind, "reason": str(error)}, ensure_ascii=False))
