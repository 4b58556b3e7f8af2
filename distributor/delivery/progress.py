"""Counts of a publish run, and a one-line progress display for terminals."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TextIO


@dataclass
class ChannelCounts:
    total: int = 0
    sent: int = 0
    failed: int = 0
    uncertain: int = 0
    retries: int = 0

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.uncertain


class Progress:
    """Count outcomes per channel; on a terminal, redraw one status line while sending."""

    def __init__(self, stream: TextIO, *, live: bool, clock=time.monotonic):
        self.stream = stream
        self.live = live
        self.clock = clock
        self.started = clock()
        self.channels: dict[str, ChannelCounts] = {}

    def counts(self, channel: str) -> ChannelCounts:
        return self.channels.setdefault(channel, ChannelCounts())

    def expect(self, channel: str, total: int) -> None:
        self.counts(channel).total = total

    def sent(self, channel: str) -> None:
        self.counts(channel).sent += 1

    def failed(self, channel: str) -> None:
        self.counts(channel).failed += 1

    def unfailed(self, channel: str) -> None:
        """Take back a failure: the row went back to be sent later."""
        self.counts(channel).failed -= 1

    def uncertain(self, channel: str) -> None:
        self.counts(channel).uncertain += 1

    def retried(self, channel: str) -> None:
        self.counts(channel).retries += 1

    def line(self) -> str:
        """Return the status line: per channel sent/total, failed, retrying; overall rate and ETA."""
        elapsed = max(self.clock() - self.started, 1e-6)
        done = sum(counts.done for counts in self.channels.values())
        left = sum(max(counts.total - counts.done, 0) for counts in self.channels.values())
        rate = done / elapsed
        eta = f"{int(left / rate) // 60}:{int(left / rate) % 60:02d}" if rate > 0 and left else "-"
        parts = [f"{name} {c.sent}/{c.total} sent, {c.failed} failed, {c.uncertain} uncertain,"
                 f" {c.retries} retries" for name, c in self.channels.items()]
        return "  ".join(parts) + f"  {rate:.0f} msg/s  ETA {eta}"

    async def show_while_running(self, interval_seconds: float = 0.5) -> None:
        """Redraw the status line until cancelled (only on a terminal)."""
        if not self.live:
            return
        try:
            while True:
                self.stream.write("\r\x1b[2K" + self.line())
                self.stream.flush()
                await asyncio.sleep(interval_seconds)
        finally:
            self.stream.write("\r\x1b[2K" + self.line() + "\n")
            self.stream.flush()
