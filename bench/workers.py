"""Scale benchmark: 1, 2 and 4 `distributor worker` processes on this machine draining what
`publish --via-workers` planned, on a PostgreSQL ledger (a throwaway cluster, as the tests make one),
into Postfix's smtp-sink directly and through `../shared/bench/delay_proxy.py` (20 ms round trip).

    .venv/bin/python bench/workers.py                        # 20,000 rows direct, 2,000 through the proxy
    .venv/bin/python bench/workers.py --count 5000 --proxy-count 1000 --sessions 5

Per row: messages per second over the send phase (the span of the rows' final marks in the
ledger), the whole `publish --via-workers` run, the CPU of the workers together per message, and
duplicates: messages the sink counted beyond the rows marked sent (0 expected).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from latency import DelayProxy
from postfix_sink import SmtpSink, ensure_postfix_tools, free_port
from report import machine_line
from send import pick_issue, prepare_message, python_executable, write_subscribers

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.postgres_server import postgres_server  # noqa: E402   # the tests' throwaway cluster, reused


def settings_file(path: Path, subscribers: Path, port: int, sessions: int, url: str) -> Path:
    path.write_text(json.dumps({
        "channels": {"email": {"subscribers": str(subscribers), "from_address": "newsletter@example.org"},
                     "text": {"enabled": False}, "wechat": {"enabled": False}},
        "smtp": {"host": "127.0.0.1", "port": port, "security": "plain", "pool_size": sessions},
        "ledger": {"url": url},
        "workers": {"lease_seconds": 10, "poll_seconds": 0.2},
    }))
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(workers: int, issue: Path, sink: SmtpSink, port: int, count: int, sessions: int,
            workdir: Path) -> str:
    """Drain `count` rows with `workers` worker processes; return the table row."""
    url = postgres_server().new_database()
    run_dir = Path(tempfile.mkdtemp(prefix=f"workers-{workers}-", dir=workdir))
    subscribers = run_dir / "subscribers.csv"
    write_subscribers(subscribers, count)
    settings = settings_file(run_dir / "settings.json", subscribers, port, sessions, url)
    env = {**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": "bench-only-secret"}
    base = [python_executable(), "-m", "distributor", "--settings", str(settings)]
    subprocess.run([*base, "migrate"], check=True, capture_output=True, cwd=REPO, env=env, timeout=120)
    started_workers = [subprocess.Popen([*base, "worker"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        cwd=REPO, env=env) for _ in range(workers)]
    before = sink.counters().messages
    try:
        started = time.monotonic()
        subprocess.run([*base, "publish", str(issue), "--channel", "email", "--via-workers", "--yes"],
                       capture_output=True, cwd=REPO, env=env, timeout=1800)
        whole = time.monotonic() - started
        time.sleep(0.3)         # the sink prints its counters every change; let it catch up
        received = sink.counters().messages - before
        cpu = sum(cpu_seconds(process.pid) for process in started_workers)
    finally:
        for process in started_workers:
            process.send_signal(signal.SIGTERM)
        for process in started_workers:
            process.wait(timeout=60)
    with psycopg.connect(url) as db:
        sent, first, last = db.execute("SELECT COUNT(*), MIN(updated_at), MAX(updated_at) FROM deliveries"
                                       " WHERE status = 'sent'").fetchone()
        left = db.execute("SELECT COUNT(*) FROM deliveries WHERE status <> 'sent'").fetchone()[0]
    rate = (sent - 1) / (last - first) if sent > 1 and last > first else 0.0
    return (f"{workers:>7} {count:>7} {rate:>9.1f} {whole:>8.1f} {1e6 * cpu / max(sent, 1):>10.0f} "
            f"{sent:>7} {left:>5} {received - sent:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="rows straight into the sink (default 20000)")
    parser.add_argument("--proxy-count", type=int, default=2_000, help="rows through the proxy (default 2000)")
    parser.add_argument("--sessions", type=int, default=5, help="SMTP connections per worker (default 5)")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="proxy delay each way (default 10)")
    parser.add_argument("--issue", type=Path, help="issue to send (default: largest TinyLab post)")
    args = parser.parse_args()
    ensure_postfix_tools()
    with tempfile.TemporaryDirectory(prefix="distributor-workers-") as tmp:
        workdir = Path(tmp)
        message = prepare_message(pick_issue(args.issue), workdir)
        print(machine_line())
        print(f"# issue={message.issue.name}  message={message.wire_bytes:,} B  sessions per worker={args.sessions}"
              f"  ledger: PostgreSQL on loopback")
        header = (f"{'workers':>7} {'rows':>7} {'msgs/s':>9} {'whole_s':>8} {'cpu_us/msg':>10} {'sent':>7} "
                  f"{'left':>5} {'duplicates':>10}")
        with SmtpSink(free_port(2525), workdir, max_seconds=7200) as sink:
            print("# straight into smtp-sink")
            print(header)
            for workers in (1, 2, 4):
                print(one_run(workers, message.issue, sink, sink.port, args.count, args.sessions, workdir), flush=True)
            print(f"# through the delay proxy ({2 * args.delay_ms:g} ms round trip) into smtp-sink")
            print(header)
            with DelayProxy(free_port(2900), sink.port, args.delay_ms, 7200) as proxy:
                for workers in (1, 2, 4):
                    print(one_run(workers, message.issue, sink, proxy.listen, args.proxy_count, args.sessions,
                                  workdir), flush=True)


if __name__ == "__main__":
    main()
