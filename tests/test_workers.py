"""Workers on a shared PostgreSQL ledger: `distributor worker` processes drain what `publish --via-workers`
planned, each message handed over once even when a worker is killed half way, the caps held by all
of them together, and a relay that fails holding back only its own share. Real processes, a real
PostgreSQL server (tests/postgres_server.py) and the aiosmtpd test server."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from .conftest import EXAMPLE, ROOT
from .conftest import UNSUBSCRIBE_SECRET as SECRET
from .postgres_server import postgres_server
from .publish_helpers import received_by
from .smtp_server import FaultySmtpServer

_DRAIN_SECONDS = 300        # the longest any test here waits for its rows to be drained


def write_settings(tmp_path: Path, url: str, smtp: str, addresses: list[str], *, workers: str = "") -> Path:
    subscribers = tmp_path / "subscribers.csv"
    subscribers.write_text("email\n" + "".join(f"{address}\n" for address in addresses), encoding="utf-8")
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"""
channels:
  email:
    subscribers: {subscribers}
    from_address: news@example.org
    unsubscribe_url: https://example.org/unsubscribe/{{token}}
  wechat: {{enabled: false}}
  text: {{enabled: false}}
smtp:
{smtp}
retry: {{attempts: 3, base_delay_seconds: 0.01, max_delay_seconds: 0.05}}
ledger: {{url: "{url}", lock_timeout_seconds: 20}}
workers: {{lease_seconds: 5, poll_seconds: 0.1, relay_pause_seconds: 600, {workers}}}
""", encoding="utf-8")
    return settings


def smtp_block(server: FaultySmtpServer, **extra: object) -> str:
    keys = {"host": "127.0.0.1", "port": server.port, "security": "plain", "pool_size": 4, "timeout_seconds": 5,
            **extra}
    return "".join(f"  {key}: {value}\n" for key, value in keys.items())


def command(settings: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "distributor", "--settings", str(settings), *args]


def environment() -> dict[str, str]:
    return {**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": SECRET}


@contextmanager
def workers(settings: Path, count: int, logs: Path) -> Iterator[list[subprocess.Popen]]:
    """Run `count` worker processes; stop them (SIGTERM, then SIGKILL) when the block ends."""
    started = []
    for number in range(count):
        with (logs / f"worker-{number}.log").open("wb") as log:
            started.append(subprocess.Popen(command(settings, "worker"), stdout=log, stderr=subprocess.STDOUT,
                                            cwd=ROOT, env=environment()))
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def migrated_database(settings: Path) -> None:
    done = subprocess.run(command(settings, "migrate"), capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and "made the ledger" in done.stdout, done.stdout + done.stderr


def statuses(url: str) -> dict[str, str]:
    with psycopg.connect(url) as db:
        return dict(db.execute("SELECT recipient, status FROM deliveries").fetchall())


def count_sent(url: str) -> int:
    with psycopg.connect(url) as db:
        return db.execute("SELECT COUNT(*) FROM deliveries WHERE status = 'sent'").fetchone()[0]


def test_four_workers_drain_20000_rows_each_once_though_one_is_killed_half_way(tmp_path):
    url = postgres_server().new_database()
    addresses = [f"reader{n:05d}@example.org" for n in range(20_000)]
    with FaultySmtpServer() as server:
        settings = write_settings(tmp_path, url, smtp_block(server), addresses)
        migrated_database(settings)
        with workers(settings, 4, tmp_path) as running:
            publish = subprocess.Popen(command(settings, "publish", str(EXAMPLE), "--via-workers", "--yes"),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                       env=environment())
            deadline = time.monotonic() + _DRAIN_SECONDS
            while count_sent(url) < 10_000 and time.monotonic() < deadline and publish.poll() is None:
                time.sleep(0.05)
            running[0].kill()                   # SIGKILL: its claimed rows wait for its lease to lapse
            out, err = publish.communicate(timeout=_DRAIN_SECONDS)
        assert running[0].wait(timeout=10) == -signal.SIGKILL
        assert publish.returncode in (0, 1), out + err          # 1: some rows the killed worker left uncertain
        received = received_by(server)
    rows = statuses(url)
    assert len(rows) == 20_000
    uncertain = {address for address, status in rows.items() if status == "uncertain"}
    assert {status for status in rows.values()} <= {"sent", "uncertain"}
    assert len(uncertain) <= 4 * 4                              # at most the killed worker's messages in flight
    assert all(count == 1 for count in received.values())      # nobody twice
    assert set(received) >= set(addresses) - uncertain          # everybody else once
    # publish stopped watching once no row was pending and no hand-over in flight under a live lease
    # (a worker stalled past its lease may still record an outcome after that: the ledger has the last word).
    final = re.search(r"email (\d+) sent, 0 failed, (\d+) uncertain, 0 to send\n$", err)
    assert final and int(final[1]) + int(final[2]) == 20_000 and int(final[2]) >= len(uncertain), err[-300:]
    assert err.count(" to send\n") >= 2                         # progress on the way, read from the ledger


def test_the_hourly_cap_holds_across_workers_together(tmp_path):
    url = postgres_server().new_database()
    addresses = [f"reader{n:04d}@example.org" for n in range(1_000)]
    with FaultySmtpServer() as server:
        settings = write_settings(tmp_path, url, smtp_block(server, hourly_cap=300), addresses,
                                  workers="batch_size: 50")
        migrated_database(settings)
        with workers(settings, 3, tmp_path):
            done = subprocess.run(command(settings, "publish", str(EXAMPLE), "--via-workers", "--yes"),
                                  capture_output=True, text=True, timeout=_DRAIN_SECONDS, cwd=ROOT, env=environment())
        received = received_by(server)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "the hourly cap of relay smtp is reached" in done.stdout
    assert len(received) == 300 and set(received.values()) == {1}
    assert sorted(statuses(url).values()).count("sent") == 300


def test_a_failing_relay_stops_only_its_share_across_workers(tmp_path):
    url = postgres_server().new_database()
    addresses = [f"reader{n:03d}@example.org" for n in range(300)] + [f"friend{n:03d}@qq.example" for n in range(60)]
    with FaultySmtpServer() as main, FaultySmtpServer(greeting="421 4.3.2 shutting down") as routed:
        relays = (f"  relays:\n    - {{name: main, host: 127.0.0.1, port: {main.port}, security: plain,"
                  " pool_size: 3}\n"
                  f"    - {{name: qq, host: 127.0.0.1, port: {routed.port}, security: plain, pool_size: 2,"
                  " domains: [qq.example]}\n")
        settings = write_settings(tmp_path, url, relays, addresses)
        migrated_database(settings)
        with workers(settings, 2, tmp_path):
            done = subprocess.run(command(settings, "publish", str(EXAMPLE), "--via-workers", "--yes"),
                                  capture_output=True, text=True, timeout=_DRAIN_SECONDS, cwd=ROOT, env=environment())
        assert done.returncode == 3, done.stdout + done.stderr
        assert "relay qq paused" in done.stdout
        assert received_by(main) == {address: 1 for address in addresses if address.endswith("@example.org")}
        assert received_by(routed) == {}
    rows = statuses(url)
    assert {address for address, status in rows.items() if status == "pending"} == \
        {address for address in addresses if address.endswith("@qq.example")}


def test_a_worker_leaves_a_drain_whose_file_differs_from_the_one_published(tmp_path):
    url = postgres_server().new_database()
    issue = tmp_path / "issue.md"
    issue.write_bytes(EXAMPLE.read_bytes())
    with FaultySmtpServer() as server:
        settings = write_settings(tmp_path, url, smtp_block(server), ["reader@example.org"])
        migrated_database(settings)
        publish = subprocess.Popen(command(settings, "publish", str(issue), "--via-workers", "--yes"),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                   env=environment())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and publish.poll() is None:
            with psycopg.connect(url) as db:
                if db.execute("SELECT COUNT(*) FROM drains").fetchone()[0]:
                    break
            time.sleep(0.05)
        issue.write_text(issue.read_text(encoding="utf-8") + "\nA line added after publishing.\n", encoding="utf-8")
        worker = subprocess.Popen(command(settings, "worker"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, cwd=ROOT, env=environment())
        try:
            line = ""
            while "not the one that was published" not in line and time.monotonic() < deadline:
                line = worker.stdout.readline()
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
            publish.send_signal(signal.SIGINT)
            publish.communicate(timeout=30)
        assert "not the one that was published" in line
        assert received_by(server) == {}
    assert statuses(url) == {"reader@example.org": "pending"}


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_migrate_makes_and_upgrades_the_ledger_and_a_mismatch_is_refused_clearly(tmp_path, engine):
    if engine == "sqlite":
        ledger = f"ledger: {{path: {tmp_path / 'ledger.sqlite3'}}}"
    else:
        url = postgres_server().new_database()
        ledger = f'ledger: {{url: "{url}"}}'
    settings = tmp_path / "settings.yaml"
    settings.write_text(ledger + "\n", encoding="utf-8")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(command(settings, *args), capture_output=True, text=True, timeout=60, cwd=ROOT)

    if engine == "postgresql":
        before = run("subscribers", "list")
        assert before.returncode == 3 and "holds no ledger yet: run `distributor migrate`" in before.stderr
    made = run("migrate")
    assert made.returncode == 0 and "made the ledger (layout 4)" in made.stdout, made.stdout + made.stderr
    assert "layout 4 already" in run("migrate").stdout
    if engine == "postgresql":
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("UPDATE ledger_layout SET version = 3")
        older = run("subscribers", "list")
        assert older.returncode == 3 and "earlier layout (3" in older.stderr and "distributor migrate" in older.stderr
        assert "upgraded the ledger from layout 3 to 4" in run("migrate").stdout
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("UPDATE ledger_layout SET version = 99")
        for args in (("subscribers", "list"), ("migrate",)):
            newer = run(*args)
            assert newer.returncode == 3 and "written by a newer distributor (layout 99" in newer.stderr
            assert "Traceback" not in newer.stderr
