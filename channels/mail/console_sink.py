"""A transport that stands in for the SMTP relay in a dry run: it counts and shows, sends nothing.

It takes the same calls as `SmtpPool`, so a dry run goes through the real publish (render,
plan, rate limit, retry, personalise) and only the hand-over differs.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO


@dataclass
class ConsoleSink:
    """Count what would be sent and name the first few recipients; send nothing."""

    stream: TextIO
    shown: int = 5
    count: int = 0

    async def open(self) -> None:
        return None

    async def send(self, envelope_from: str, recipient: str, wire: bytes,
                   hand_over: Callable[[], Awaitable[None]] | None = None) -> str:
        if hand_over is not None:
            await hand_over()
        self.count += 1
        if self.count <= self.shown:
            print(f"  would send {len(wire) / 1024:.1f} KB to {recipient}", file=self.stream)
        return "250 dry run: not sent"

    async def close(self) -> None:
        if self.count > self.shown:
            print(f"  … and {self.count - self.shown} more", file=self.stream)
