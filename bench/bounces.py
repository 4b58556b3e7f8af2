"""Time `distributor bounces` over a Maildir of 10,000 bounce and complaint messages.

    .venv/bin/python bench/bounces.py
    .venv/bin/python bench/bounces.py --messages 2000

A fresh ledger in a temporary folder gets one delivery row per reader (`reader000001@example.net`...),
each with the Message-ID a publish would have recorded, as one transaction in this script's process.
The Maildir gets one message per reader: 60 % delivery status notifications of a hard bounce (RFC
3464, 5.1.1, with the returned headers), 25 % soft ones (4.2.2, mailbox full), 10 % feedback reports
(RFC 5965, the complainant redacted: found by the returned Message-ID), 5 % non-standard bounces that
only flufl.bounce reads (a qmail-style text). Then `python -m distributor --settings S bounces` runs as
its own process, once over the full Maildir (every message new) and once more (nothing left but
what it left): the wall seconds of the whole process (start-up included), its user+system CPU seconds
and peak RSS (from `os.wait4`), messages per second of wall time, and its summary line. Every run is
stopped after --deadline seconds; the folder is removed at the end.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distributor.ledger.store import Ledger  # noqa: E402  (the checkout's package, as the runs use)


def message_id(number: int) -> str:
    return f"<{number:040x}@example.org>"


def dsn(number: int, status: str, action: str) -> bytes:
    address = f"reader{number:06d}@example.net"
    return (f"From: MAILER-DAEMON@mx.example.net\r\nTo: bounces@example.org\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn.{number}@mx.example.net>\r\n"
            f"MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="B{number}"\r\n\r\n'
            f"--B{number}\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
            f"--B{number}\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; {address}\r\n"
            f"Action: {action}\r\nStatus: {status}\r\nDiagnostic-Code: smtp; 550 {status} {address}: no\r\n"
            f"\r\n--B{number}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"From: Example Weekly <news@example.org>\r\nTo: {address}\r\nMessage-ID: {message_id(number)}\r\n"
            f"Subject: weekly\r\n\r\n--B{number}--\r\n").encode("ascii")


def arf(number: int) -> bytes:
    return (f"From: fbl@isp.example.net\r\nTo: abuse@example.org\r\nSubject: complaint\r\n"
            f"Message-ID: <arf.{number}@isp.example.net>\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=feedback-report; boundary="F{number}"\r\n\r\n'
            f"--F{number}\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n"
            f"--F{number}\r\nContent-Type: message/feedback-report\r\n\r\n"
            f"Feedback-Type: abuse\r\nUser-Agent: ExampleFBL/1.0\r\nVersion: 1\r\n"
            f"\r\n--F{number}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"From: news@example.org\r\nTo: redacted@example.net\r\nMessage-ID: {message_id(number)}\r\n"
            f"\r\n--F{number}--\r\n").encode("ascii")


def qmail(number: int) -> bytes:
    address = f"reader{number:06d}@example.net"
    return (f"From: MAILER-DAEMON@qmail.example.net\r\nTo: bounces@example.org\r\n"
            f"Subject: failure notice\r\n\r\n"
            f"Hi. This is the qmail-send program at qmail.example.net.\r\n"
            f"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
            f"This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
            f"<{address}>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
            f"--- Below this line is a copy of the message.\r\n\r\nMessage-ID: {message_id(number)}\r\n"
            ).encode("ascii")


def message(number: int) -> bytes:
    kind = number % 20
    if kind < 12:
        return dsn(number, "5.1.1", "failed")
    if kind < 17:
        return dsn(number, "4.2.2", "delayed")
    if kind < 19:
        return arf(number)
    return qmail(number)


def prepare(folder: Path, messages: int) -> None:
    maildir = folder / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    with Ledger(folder / "ledger.sqlite3") as ledger, ledger.transaction():
        ledger.plan("weekly", "email", "hash", ((f"reader{n:06d}@example.net", None) for n in range(messages)))
        for number in range(messages):
            address = f"reader{number:06d}@example.net"
            ledger.subscriber_id(address)
            ledger.claim("weekly", "email", address, message_id(number), ("pending",))
            ledger.mark("weekly", "email", address, "sent", reply="250 ok", error=None)
    for number in range(messages):
        (maildir / "new" / f"{number:06d}.bench").write_bytes(message(number))
    (folder / "settings.yaml").write_text(
        f"bounces:\n  maildir: {maildir}\n  max_messages_per_run: {messages}\n"
        f"channels:\n  email:\n    return_path: bounces@example.org\n"
        f"ledger:\n  path: {folder / 'ledger.sqlite3'}\n", encoding="utf-8")


def run_bounces(folder: Path, deadline: float) -> tuple[float, float, float, int, str]:
    command = [sys.executable, "-m", "distributor", "--settings", str(folder / "settings.yaml"), "bounces"]
    output = folder / "output.txt"
    with output.open("wb") as sink:
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        # wait4 (not Popen.poll, which would reap the child and lose its rusage), bounded by the deadline
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        while pid == 0 and time.monotonic() - started < deadline:
            time.sleep(0.05)
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == 0:
            process.send_signal(signal.SIGKILL)
            _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)     # reaped here: Popen must not wait again
        seconds = time.monotonic() - started
    lines = output.read_text(encoding="utf-8", errors="replace").splitlines()
    return (seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status),
            lines[0] if lines else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--deadline", type=float, default=600.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-bounces-") as name:
        folder = Path(name)
        started = time.monotonic()
        prepare(folder, args.messages)
        print(f"# prepared {args.messages} messages and their deliveries in {time.monotonic() - started:.1f} s")
        print("| run | messages | wall s | msgs/s | CPU s | CPU µs/msg | peak RSS | exit | summary |")
        print("|---|---|---|---|---|---|---|---|---|")
        for which in ("first", "again"):
            seconds, cpu, rss, code, summary = run_bounces(folder, args.deadline)
            found = re.search(r"read (\d+) messages", summary)
            read = int(found.group(1)) if found else 0
            per_message = f"{cpu / read * 1e6:.0f}" if read else "-"
            print(f"| {which} | {read} | {seconds:.2f} | {read / seconds:.0f} | {cpu:.2f} | {per_message} | "
                  f"{rss:.1f} MB | {code} | {summary} |")


if __name__ == "__main__":
    main()
