"""The one retry policy: capped exponential backoff with full jitter, an attempt limit and an
overall deadline. Adapters only classify errors; this is the only place that waits and tries again."""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from typing import TypeVar

from distributor.errors import SenderThrottledError, TransientDeliveryError
from distributor.settings import RetrySettings

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy(RetrySettings):
    """The `retry.*` settings, with the waiting and trying again they govern. A policy is built
    from the settings (`from_settings`) or, for a policy of its own (the WeChat publish poll),
    from the same keywords; `random` draws the jitter."""

    random: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> RetryPolicy:
        return cls(**{item.name: getattr(settings, item.name) for item in fields(RetrySettings)})

    def delay_seconds(self, attempt: int, retry_after_seconds: float | None) -> float:
        """Return the wait before attempt `attempt + 1`: a random point below the capped
        exponential step, never shorter than what the other side asked for."""
        step = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        wait = self.random.uniform(step / 2, step)
        return max(wait, retry_after_seconds or 0.0)

    async def run(self, attempt: Callable[[], Awaitable[T]], *,
                  on_retry: Callable[[int, TransientDeliveryError], None] | None = None,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> T:
        """Call `attempt` until it returns, retrying only `TransientDeliveryError`; re-raise the
        last one when the attempts or the deadline run out. A `SenderThrottledError` is about the
        sender, not this delivery: it does not count against the attempts and backs off on its own
        count, but the deadline bounds it too. Other errors pass straight through. `on_retry` gets
        the number of counted attempts so far and the error, before each wait. `clock` and `sleep`
        are what the deadline is measured and the waits are spent on."""
        deadline = clock() + self.deadline_seconds
        counted = throttled = 0
        while True:
            try:
                return await attempt()
            except TransientDeliveryError as exc:
                if isinstance(exc, SenderThrottledError):
                    throttled += 1
                    wait = self.delay_seconds(throttled, exc.retry_after_seconds)
                else:
                    counted += 1
                    wait = self.delay_seconds(counted, exc.retry_after_seconds)
                    if counted >= self.attempts:
                        raise
                if clock() + wait > deadline:
                    raise
                if on_retry is not None:
                    on_retry(counted, exc)
                await sleep(wait)
