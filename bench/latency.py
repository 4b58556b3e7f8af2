"""Send benchmark over a link with latency: `distributor publish` through `../shared/bench/delay_proxy.py`
(every chunk held 10 ms each way: a 20 ms round trip) into Postfix's smtp-sink (PIPELINING, no
CHUNKING) and into a real Postfix smtpd that discards the mail (PIPELINING and CHUNKING), next to
`smtp-source -d` over the same proxy and number of sessions, and next to the floor of that link and
server (`round_trip_floor.py`: the fewest round trips a message, nothing else).

    .venv/bin/python bench/latency.py                     # pool 5, 500 recipients, 20 ms
    .venv/bin/python bench/latency.py --count 1000 --sessions 10 --delay-ms 25

On such a link the round trips set the rate: pool / (round trips a message x RTT). A message takes
4 round trips one command at a time (MAIL, RCPT, DATA, end of data), 2 with PIPELINING, 1 with
CHUNKING (MAIL, RCPT and BDAT LAST with the message in one write). publish's rate is read from the
ledger (the span of the rows' final marks), so start-up and the connections' set-up are left out;
the floor's once its sessions are open; smtp-source's from its whole process. The floor shows what
pool/RTT leaves out: the server's own time per message and what the proxy adds to each hop. Postfix
keeps its queue in /dev/shm where there is one, so its fsync of each queue file does not stand in
for the link.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from postfix_sink import HOST, SMTP_SOURCE, SmtpSink, ensure_postfix_tools, free_port
from postfix_smtpd import PostfixSmtpd
from report import machine_line
from send import Message, pick_issue, prepare_message, python_executable, write_settings, write_subscribers

REPO = Path(__file__).resolve().parents[1]
DELAY_PROXY = REPO.parent / "shared" / "bench" / "delay_proxy.py"


class DelayProxy:
    """delay_proxy.py from `listen` to `target`, holding each chunk `delay_ms` each way."""

    def __init__(self, listen: int, target: int, delay_ms: float, max_seconds: int):
        self.listen, self.target, self.delay_ms, self.max_seconds = listen, target, delay_ms, max_seconds
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DelayProxy:
        if not DELAY_PROXY.exists():
            sys.exit(f"{DELAY_PROXY} is missing")
        self.process = subprocess.Popen([sys.executable, str(DELAY_PROXY), str(self.listen), str(self.target),
                                         str(self.delay_ms), str(self.max_seconds)], stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        if not self.process.stdout.readline().startswith(b"PORT"):
            sys.exit("the delay proxy did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def publish_rate(message: Message, port: int, count: int, sessions: int, workdir: Path) -> tuple[float, float, int]:
    """Run publish to `port`; return (msgs/s over the send phase from the ledger, whole seconds, rows sent)."""
    run_dir = Path(tempfile.mkdtemp(prefix="latency-", dir=workdir))
    subscribers, settings, ledger = run_dir / "subscribers.csv", run_dir / "settings.yaml", run_dir / "ledger.sqlite3"
    write_subscribers(subscribers, count)
    write_settings(settings, subscribers, port, sessions, ledger)
    started = time.monotonic()
    subprocess.run([python_executable(), "-m", "distributor", "--settings", str(settings), "publish",
                    str(message.issue), "--channel", "email", "--yes"], cwd=REPO, capture_output=True,
                   env={"DISTRIBUTOR_UNSUBSCRIBE_SECRET": "bench-only-secret", "PATH": "/usr/bin:/bin"}, timeout=900)
    whole = time.monotonic() - started
    with sqlite3.connect(ledger) as db:
        sent, first, last = db.execute(
            "SELECT COUNT(*), MIN(updated_at), MAX(updated_at) FROM deliveries WHERE status = 'sent'").fetchone()
    rate = (sent - 1) / (last - first) if sent > 1 and last > first else 0.0
    return rate, whole, sent


def smtp_source_rate(message: Message, port: int, count: int, sessions: int) -> float:
    started = time.monotonic()
    subprocess.run([SMTP_SOURCE, "-s", str(sessions), "-d", "-N", "-m", str(count), "-F", str(message.lf_path),
                    "-f", "newsletter@example.org", "-t", "user@example.org", "-M", "bench.example.org",
                    f"{HOST}:{port}"], check=True, capture_output=True, timeout=900)
    return count / (time.monotonic() - started)


def floor_rate(message: Message, port: int, count: int, sessions: int, chunking: bool) -> float:
    """The link's and server's ceiling: round_trip_floor.py, as its own process."""
    command = [python_executable(), str(Path(__file__).with_name("round_trip_floor.py")), str(port),
               "--message", str(message.crlf_path), "--count", str(count), "--sessions", str(sessions)]
    done = subprocess.run(command + (["--chunking"] if chunking else []), check=True, capture_output=True,
                          timeout=900)
    return float(json.loads(done.stdout)["msgs_per_s"])


def _memory_folder() -> str | None:
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=500, help="recipients (default 500)")
    parser.add_argument("--sessions", type=int, default=5, help="SMTP connections (default 5)")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="delay each way (default 10: 20 ms RTT)")
    parser.add_argument("--issue", type=Path, help="issue to send (default: largest TinyLab post)")
    args = parser.parse_args()
    ensure_postfix_tools()
    rtt = 2 * args.delay_ms / 1000
    # Postfix's queue lives in memory (/dev/shm): its fsync per message measures the disk, not the link.
    with tempfile.TemporaryDirectory(prefix="distributor-latency-") as tmp, \
            tempfile.TemporaryDirectory(prefix="distributor-postfix-", dir=_memory_folder()) as queue:
        workdir = Path(tmp)
        Path(queue).chmod(0o755)
        workdir.chmod(0o755)        # Postfix's own processes read their folder in it
        message = prepare_message(pick_issue(args.issue), workdir)
        print(machine_line())
        print(f"# issue={message.issue.name}  message={message.wire_bytes:,} B  pool={args.sessions}  "
              f"recipients={args.count}  RTT={rtt * 1000:.0f} ms")
        print(f"{'server':<38}{'client':<24}{'msgs/s':>8}{'limit':>8}{'ratio':>7}  target")
        sink_port = free_port(2700)
        with SmtpSink(sink_port, workdir, max_seconds=3600) as _, \
                PostfixSmtpd(free_port(2800), Path(queue) / "postfix") as postfix:
            servers = (("smtp-sink (PIPELINING)", sink_port, 2), ("Postfix smtpd (PIPELINING, CHUNKING)",
                                                                  postfix.port, 1))
            for name, port, round_trips in servers:
                limit = args.sessions / (round_trips * rtt)
                with DelayProxy(free_port(2900), port, args.delay_ms, 3600) as proxy:
                    source = smtp_source_rate(message, proxy.listen, args.count, args.sessions)
                    floor = floor_rate(message, proxy.listen, args.count, args.sessions, round_trips == 1)
                    rate, whole, sent = publish_rate(message, proxy.listen, args.count, args.sessions, workdir)
                verdict = "met" if rate >= 0.8 * limit else "NOT MET"
                print(f"{name:<38}{'smtp-source -d':<24}{source:>8.1f}{limit:>8.0f}{source / limit:>7.2f}")
                floor_client = f"floor, {round_trips} round trip{'s' if round_trips > 1 else ''}"
                print(f"{name:<38}{floor_client:<24}{floor:>8.1f}{limit:>8.0f}{floor / limit:>7.2f}")
                print(f"{name:<38}{'publish':<24}{rate:>8.1f}{limit:>8.0f}{rate / limit:>7.2f}  "
                      f">= 0.8 of pool/({round_trips}·RTT): {verdict}; {rate / floor:.2f} of the floor"
                      f"  ({sent} sent, {whole:.1f} s whole process)")
            print(f"# Postfix's discard transport took {postfix.messages_taken()} messages")


if __name__ == "__main__":
    main()
