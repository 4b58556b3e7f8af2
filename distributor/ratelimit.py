"""Send-rate limits as relays impose them: messages per second, and hourly and daily caps."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from .errors import ChannelStoppedError


class RateLimiter:
    """Space sends `1/per_second` apart (0: no spacing) and stop the channel when a cap is reached.
    `sent_last_hour` and `sent_last_day` are what earlier runs already sent, from the ledger."""

    def __init__(self, per_second: float, *, hourly_cap: int | None = None, daily_cap: int | None = None,
                 sent_last_hour: int = 0, sent_last_day: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.caps = [(name, cap, sent) for name, cap, sent in
                     (("hourly", hourly_cap, sent_last_hour), ("daily", daily_cap, sent_last_day))
                     if cap is not None]
        self.granted = 0
        self.clock = clock
        self.next_slot = clock()
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for the next free slot; raise `ChannelStoppedError` when a cap is used up."""
        for name, cap, already in self.caps:
            if already + self.granted >= cap:
                raise ChannelStoppedError(f"the {name} cap of {cap} messages is reached; "
                                          "run publish again when the window has passed to go on")
        self.granted += 1
        if not self.interval:
            return
        async with self.lock:
            now = self.clock()
            wait = self.next_slot - now
            self.next_slot = max(now, self.next_slot) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)
