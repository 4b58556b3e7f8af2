"""Bare aiosmtplib reference client: K reused connections send one pre-built message's bytes.

Run as its own process by `send.py` so that its CPU time and peak RSS are its own. Only the
envelope recipient changes per message; this is the floor a sender built on aiosmtplib pays
for SMTP alone, with no rendering, no per-recipient message and no bookkeeping. Every loop
stops at --count messages or after --deadline seconds. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiosmtplib

HOST = "127.0.0.1"   # loopback only, never configurable
SENDER = "newsletter@example.org"


@dataclass
class Tally:
    """Shared between the workers: the next recipient index and the outcomes so far."""

    next_index: int = 0
    sent: int = 0
    refused: int = 0
    connect_errors: int = 0


def recipient(index: int) -> str:
    """Return the address of subscriber number `index` (1-based), as in the subscriber CSV."""
    return f"user{index:05d}@example.org"


async def worker(port: int, count: int, stop_at: float, payload: bytes, tally: Tally) -> None:
    """Open one connection and send on it until `count` messages are claimed or time is up."""
    smtp = aiosmtplib.SMTP(hostname=HOST, port=port, use_tls=False, start_tls=False,
                           local_hostname="bench.example.org", timeout=30)
    try:
        await smtp.connect()
    except (aiosmtplib.SMTPException, OSError):
        tally.connect_errors += 1
        return
    try:
        while tally.next_index < count and time.monotonic() < stop_at:
            tally.next_index += 1
            try:
                refused, _ = await smtp.sendmail(SENDER, [recipient(tally.next_index)], payload)
            except aiosmtplib.SMTPException:
                tally.refused += 1
                continue
            if refused:
                tally.refused += 1
            else:
                tally.sent += 1
    finally:
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()


async def send_all(port: int, count: int, sessions: int, deadline: float, payload: bytes) -> Tally:
    """Send `count` messages over `sessions` concurrent connections."""
    tally = Tally()
    stop_at = time.monotonic() + deadline
    workers = (worker(port, count, stop_at, payload, tally) for _ in range(sessions))
    await asyncio.wait_for(asyncio.gather(*workers), timeout=deadline + 60)
    return tally


def main() -> None:
    """Parse the arguments, send, and print the tally and the sending time as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--message", type=Path, required=True, help="the message bytes (CRLF)")
    parser.add_argument("--deadline", type=float, default=300.0)
    args = parser.parse_args()
    payload = args.message.read_bytes()
    started = time.perf_counter()
    tally = asyncio.run(send_all(args.port, args.count, args.sessions, args.deadline, payload))
    print(json.dumps({**asdict(tally), "seconds": round(time.perf_counter() - started, 4)}))


if __name__ == "__main__":
    main()
