"""The one retry policy: capped exponential backoff with full jitter, an attempt limit and an
overall deadline. Adapters only classify errors; this is the only place that waits and tries again."""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar

from .errors import TransientDeliveryError
from .settings import RetrySettings

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay_seconds: float = 1.0
    max_delay_seconds: float = 60.0
    deadline_seconds: float = 900.0
    random: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> "RetryPolicy":
        return cls(settings.attempts, settings.base_delay_seconds, settings.max_delay_seconds,
                   settings.deadline_seconds)

    def delay_seconds(self, attempt: int, retry_after_seconds: float | None) -> float:
        """Return the wait before attempt `attempt + 1`: a random point below the capped
        exponential step, never shorter than what the other side asked for."""
        step = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        wait = self.random.uniform(step / 2, step)
        return max(wait, retry_after_seconds or 0.0)

    async def run(self, attempt: Callable[[], Awaitable[T]], *,
                  on_retry: Callable[[int, TransientDeliveryError], None] | None = None,
                  clock: Callable[[], float] = time.monotonic) -> T:
        """Call `attempt` until it returns, retrying only `TransientDeliveryError`; re-raise the
        last one when the attempts or the deadline run out. Other errors pass straight through."""
        deadline = clock() + self.deadline_seconds
        for number in range(1, self.attempts + 1):
            try:
                return await attempt()
            except TransientDeliveryError as exc:
                wait = self.delay_seconds(number, exc.retry_after_seconds)
                if number == self.attempts or clock() + wait > deadline:
                    raise
                if on_retry is not None:
                    on_retry(number, exc)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")
