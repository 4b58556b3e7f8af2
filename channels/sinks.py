"""Transports that stand in for the SMTP relay: a dry run's console, and an in-memory sink.

They take the same calls as `SmtpPool`, so a dry run goes through the real pipeline (render,
plan, rate limit, retry, personalise) and only the hand-over differs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class MemorySink:
    """Keep every message handed over, as (envelope sender, recipient, bytes)."""

    messages: list[tuple[str, str, bytes]] = field(default_factory=list)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, envelope_from: str, recipient: str, wire: bytes) -> str:
        self.messages.append((envelope_from, recipient, wire))
        return "250 kept in memory"


@dataclass
class ConsoleSink:
    """Count what would be sent and name the first few recipients; send nothing."""

    stream: TextIO
    shown: int = 5
    count: int = 0
    total_bytes: int = 0

    async def open(self) -> None:
        return None

    async def send(self, envelope_from: str, recipient: str, wire: bytes) -> str:
        self.count += 1
        self.total_bytes += len(wire)
        if self.count <= self.shown:
            print(f"  would send {len(wire) / 1024:.1f} KB to {recipient}", file=self.stream)
        return "250 dry run: not sent"

    async def close(self) -> None:
        if self.count > self.shown:
            print(f"  … and {self.count - self.shown} more", file=self.stream)
