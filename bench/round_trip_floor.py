"""The floor of a link and server: K connections each send one pre-built message, in the fewest round
trips the server allows, and do nothing else (no rendering, no ledger, no per-recipient message).

With CHUNKING a message costs one round trip: the connection writes `BDAT n LAST`, the message and the
next message's MAIL FROM and RCPT TO together, and waits for their replies. With PIPELINING alone it
costs two: MAIL FROM, RCPT TO and DATA in one write, then the message and its final '.'. `latency.py`
runs this next to publish, so that what the server itself takes per message, and what the delay proxy
adds to its 2 × delay, show as the ceiling any client reaches on that link.

    .venv/bin/python bench/round_trip_floor.py PORT --chunking      # one JSON line
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

HOST = "127.0.0.1"   # loopback only, never configurable
_ENVELOPE = b"MAIL FROM:<newsletter@example.org>\r\nRCPT TO:<user@example.org>\r\n"
_REPLY_SECONDS = 30  # a server that stops answering ends the run rather than hanging it


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """Read one whole reply (the last line of a multi-line one); raise unless it is 2xx or 3xx."""
    while True:
        line = await asyncio.wait_for(reader.readline(), _REPLY_SECONDS)
        if line[3:4] != b"-":
            if line[:1] not in (b"2", b"3"):
                raise RuntimeError(f"the server answered {line!r}")
            return line


Session = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _open(port: int) -> Session:
    reader, writer = await asyncio.open_connection(HOST, port)
    await _reply(reader)
    writer.write(b"EHLO floor.example.org\r\n")
    await _reply(reader)
    return reader, writer


async def _send(session: Session, wire: bytes, count: int, chunking: bool) -> None:
    """Send `count` messages over one session; `wire` is the message with CRLF line ends."""
    reader, writer = session
    if chunking:
        body = b"BDAT %d LAST\r\n" % len(wire) + wire
        writer.write(_ENVELOPE)
        for _ in range(2):
            await _reply(reader)
        for sent in range(1, count + 1):
            ahead = _ENVELOPE if sent < count else b""
            writer.write(body + ahead)
            for _ in range(3 if ahead else 1):
                await _reply(reader)
    else:
        stuffed = (b"." + wire if wire.startswith(b".") else wire).replace(b"\r\n.", b"\r\n..")
        for _ in range(count):
            writer.write(_ENVELOPE + b"DATA\r\n")
            for _ in range(3):
                await _reply(reader)
            writer.write(stuffed + b".\r\n")
            await _reply(reader)
    writer.write(b"QUIT\r\n")
    writer.close()


async def floor_rate(port: int, wire: bytes, count: int, sessions: int, chunking: bool) -> float:
    """Messages per second over `sessions` connections sending `count` messages in all, timed from
    when every session is open (EHLO answered) to the last reply."""
    shares = [count // sessions + (1 if index < count % sessions else 0) for index in range(min(count, sessions))]
    opened = await asyncio.gather(*(_open(port) for _ in shares))
    started = time.monotonic()
    await asyncio.gather(*(_send(session, wire, share, chunking)
                           for session, share in zip(opened, shares, strict=True)))
    return count / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--message", type=Path, required=True, help="the message, LF or CRLF line ends")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--chunking", action="store_true", help="the server offers CHUNKING")
    args = parser.parse_args()
    wire = args.message.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    rate = asyncio.run(floor_rate(args.port, wire, args.count, args.sessions, args.chunking))
    print(json.dumps({"msgs_per_s": rate}))


if __name__ == "__main__":
    main()
