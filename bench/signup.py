"""Signup benchmark: POST signups of distinct addresses to `distributor serve` over concurrent keep-alive
clients, and time how long until every confirmation mail reached a local SMTP sink.

    .venv/bin/python bench/signup.py                    # 10,000 signups over 20 clients
    .venv/bin/python bench/signup.py --count 2000 --clients 10 --sink aiosmtpd

`distributor serve` runs as a subprocess on 127.0.0.1 with a ledger in a temporary folder, the
per-client limit at its maximum and `signup.min_fill_seconds` 0 (every POST comes from one client,
with one form token). The sink is Postfix's `smtp-sink` when installed, else an aiosmtpd sink in
this process. The clients are raw HTTP/1.1 over asyncio streams, one connection each. Prints
requests per second, the latency percentiles of the POSTs, and the seconds from the first POST
until the sink counted every mail. Every process started here is stopped on exit.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

from postfix_sink import HOST, SMTP_SINK, SmtpSink, free_port, stop_process

REPO = Path(__file__).resolve().parents[1]
SECRET = "bench-signup-secret"
_TOKEN = re.compile(rb'name="form_token" value="([^"]+)"')


def python_executable() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


class AiosmtpdSink:
    """An aiosmtpd server on 127.0.0.1 that counts and discards what it is sent (when smtp-sink is missing)."""

    def __init__(self, port: int) -> None:
        from aiosmtpd.controller import Controller

        self.port = port
        self.messages = 0
        self._lock = threading.Lock()
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
                with sink._lock:
                    sink.messages += 1
                return "250 2.0.0 Ok"

        self._controller = Controller(Handler(), hostname=HOST, port=port)

    def __enter__(self) -> AiosmtpdSink:
        self._controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._controller.stop()

    def count(self) -> int:
        with self._lock:
            return self.messages


def write_settings(folder: Path, smtp_port: int, http_port: int) -> Path:
    path = folder / "settings.yaml"
    path.write_text(f"""
site: {{name: Bench Weekly, language: en}}
channels:
  email:
    from_address: news@example.org
    unsubscribe_url: http://{HOST}:{http_port}/unsubscribe/{{token}}
    lists: [weekly]
  wechat: {{enabled: false}}
  text: {{enabled: false}}
smtp: {{host: {HOST}, port: {smtp_port}, security: plain, timeout_seconds: 10.0}}
ledger: {{path: {folder / 'ledger.sqlite3'}}}
signup: {{min_fill_seconds: 0, requests_per_client_per_day: 1000000}}
""", encoding="utf-8")
    return path


def start_serve(settings: Path, port: int, log: Path, deadline: float) -> subprocess.Popen[bytes]:
    """Start `distributor serve` and wait (until `deadline`) for it to answer /healthz."""
    with log.open("wb") as err:
        process = subprocess.Popen(
            [python_executable(), "-m", "distributor", "--settings", str(settings), "serve", "--port", str(port)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
            env={**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": SECRET})
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"distributor serve ended: {log.read_text(errors='replace')[-2000:]}")
        try:
            status, _ = asyncio.run(one_request(port, b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"))
            if status == 200:
                return process
        except OSError:
            pass
        time.sleep(0.1)
    stop_process(process)
    sys.exit("distributor serve did not answer in time")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head)[1])
    return status, await reader.readexactly(length)


async def one_request(port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
    try:
        writer.write(raw)
        return await asyncio.wait_for(read_response(reader), 10)
    finally:
        writer.close()


def signup_request(index: int, token: str) -> bytes:
    body = urlencode({"email": f"reader{index:06d}@example.org", "name": "", "list": "weekly", "lang": "en",
                      "website": "", "form_token": token}).encode()
    return (b"POST /subscribe HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


async def post_all(port: int, count: int, clients: int, token: str, deadline: float) -> tuple[list[float], int]:
    """POST `count` signups over `clients` keep-alive connections; return each latency and the failures."""
    requests = iter(range(count))
    latencies: list[float] = []
    failures = 0

    async def client() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            for index in requests:          # shared: each signup is taken by one client
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                writer.write(signup_request(index, token))
                status, _ = await asyncio.wait_for(read_response(reader), 30)
                latencies.append(time.perf_counter() - started)
                failures += status != 200
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), max(1.0, deadline - time.monotonic()))
    return latencies, failures


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds for the whole run (600)")
    parser.add_argument("--sink", choices=("auto", "smtp-sink", "aiosmtpd"), default="auto",
                        help="auto: Postfix's smtp-sink when installed, else aiosmtpd")
    args = parser.parse_args()
    deadline = time.monotonic() + args.deadline
    with tempfile.TemporaryDirectory(prefix="signup-bench-") as temporary:
        folder = Path(temporary)
        smtp_port, http_port = free_port(2525), free_port(8650)
        postfix = args.sink == "smtp-sink" or (args.sink == "auto" and os.access(SMTP_SINK, os.X_OK))
        sink: SmtpSink | AiosmtpdSink = SmtpSink(smtp_port, folder, int(args.deadline) + 60) if postfix \
            else AiosmtpdSink(smtp_port)
        with sink:
            def delivered() -> int:
                return sink.counters().messages if isinstance(sink, SmtpSink) else sink.count()

            serve = start_serve(write_settings(folder, smtp_port, http_port), http_port, folder / "serve.log",
                                deadline)
            try:
                status, page = asyncio.run(one_request(http_port, b"GET /subscribe HTTP/1.1\r\nHost: b\r\n\r\n"))
                token = _TOKEN.search(page)[1].decode()
                started = time.monotonic()
                latencies, failures = asyncio.run(post_all(http_port, args.count, args.clients, token, deadline))
                posted = time.monotonic()
                while delivered() < len(latencies) and time.monotonic() < deadline:
                    time.sleep(0.01)
                mailed = time.monotonic()
                count = delivered()
            finally:
                stop_process(serve)
    seconds = posted - started
    print(f"sink: {'smtp-sink' if postfix else 'aiosmtpd'}; {args.clients} keep-alive clients; "
          f"{len(latencies)} POSTs, {failures} not 200")
    print(f"requests/s: {len(latencies) / seconds:,.0f}  ({seconds:.2f} s for all POSTs)")
    print(f"latency ms: p50 {percentile(latencies, 0.50) * 1000:.1f}  p99 {percentile(latencies, 0.99) * 1000:.1f}"
          f"  max {max(latencies) * 1000:.1f}")
    print(f"mails at the sink: {count} of {len(latencies)}, all {mailed - started:.2f} s after the first POST"
          f" ({mailed - posted:.2f} s after the last)")


if __name__ == "__main__":
    main()
