"""Send-rate limits as relays impose them: messages per second, hourly and daily caps, and the
slow-down a relay asks for when it throttles the sender (450 4.7.1 at MAIL FROM)."""
from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from distributor.errors import ChannelStoppedError

# After a throttle the spacing shrinks by this factor with every message the relay takes, until it is
# back to the configured one: a relay's window recovers gradually, and so does the rate.
_RECOVERY = 0.95
_FIRST_SLOWDOWN_SECONDS = 0.05      # spacing after a throttle when no send rate was measured yet
_RECENT = 32                        # successes whose times measure the rate the relay last took


class RateLimiter:
    """Space sends `1/per_second` apart (0: no spacing) and stop the channel when a cap is reached.
    `sent_last_hour` and `sent_last_day` are what earlier runs already sent, from the ledger.

    `throttled` pauses every sender of the channel and halves the rate it was sending at;
    `succeeded` lets the rate recover a little with each message the relay takes."""

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
        self.slowdown = 0.0               # spacing imposed by throttles (0: none); never below `interval`
        self.paused_until = 0.0           # no send starts before this
        self.throttles = 0                # throttles since the relay last took a message
        self.recent: collections.deque[float] = collections.deque(maxlen=_RECENT)

    async def acquire(self, *, counted: bool = True) -> None:
        """Wait for the next free slot; raise `ChannelStoppedError` when a cap is used up. A retry
        of a message already counted passes `counted=False`: it waits its turn, uses no cap."""
        if counted:
            for name, cap, already in self.caps:
                if already + self.granted >= cap:
                    raise ChannelStoppedError(f"the {name} cap of {cap} messages is reached; "
                                              "run publish again when the window has passed to go on")
            self.granted += 1
        spacing = max(self.interval, self.slowdown)
        if not spacing and not self.paused_until:
            return
        async with self.lock:
            now = self.clock()
            start = max(now, self.next_slot, self.paused_until)
            self.next_slot = start + spacing
        if start > now:
            await asyncio.sleep(start - now)

    def throttled(self, pause_seconds: float) -> None:
        """The relay refused the sender for now: no send starts for `pause_seconds`. The first refusal
        since the relay last took a message also halves the rate it was taking them at; refusals that
        follow before it takes one again only pause (the caller makes their pauses longer). Every
        connection that was in a transaction hears the same refusal: those that come while the
        pause is on extend it and count for nothing else."""
        now = self.clock()
        if now < self.paused_until:
            self.paused_until = max(self.paused_until, now + pause_seconds)
            return
        if not self.throttles:
            self.slowdown = 2 * max(self.interval, self._measured_spacing() or _FIRST_SLOWDOWN_SECONDS)
        self.throttles += 1
        self.paused_until = now + pause_seconds

    def succeeded(self) -> None:
        """The relay took a message: note when, and let a throttled rate recover a step."""
        self.recent.append(self.clock())
        self.throttles = 0
        if self.slowdown:
            self.slowdown *= _RECOVERY
            if self.slowdown <= self.interval or self.slowdown < 1e-3:
                self.slowdown = 0.0

    def _measured_spacing(self) -> float:
        """Return the mean time between the recent successes (0 when too few to tell)."""
        if len(self.recent) < 2:
            return 0.0
        return (self.recent[-1] - self.recent[0]) / (len(self.recent) - 1)
