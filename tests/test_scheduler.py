"""Scheduled sends: jobs in a real SQLite ledger, published to the SMTP test server on 127.0.0.1."""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import email
import email.policy
import hashlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from distributor.commands.schedule import add_parser as add_commands
from distributor.errors import InputError
from distributor.ledger.store import Ledger
from distributor.schedule.jobs import MAX_TRIES, Job, JobStore
from distributor.schedule.runner import LeaseKeeper, Scheduler
from distributor.schedule.timezones import read_local_time
from distributor.settings import LedgerSettings, load_settings

from .conftest import EXAMPLE, ROOT
from .publish_helpers import SECRET, configure, ledger_rows, received_by
from .smtp_server import FaultySmtpServer

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")

SHANGHAI = ZoneInfo("Asia/Shanghai")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, when: dt.datetime):
        self.value = when.timestamp()

    @classmethod
    def at(cls, timestamp: float) -> Clock:
        return cls(dt.datetime.fromtimestamp(timestamp, dt.timezone.utc))

    def set(self, when: dt.datetime) -> None:
        self.value = when.timestamp()

    def __call__(self) -> float:
        return self.value


def shanghai(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)


def schedule_settings(tmp_path: Path, server: FaultySmtpServer, addresses: list[str], **schedule) -> Path:
    values = {"timezone": "Asia/Shanghai", "poll_seconds": 100000, **schedule}
    block = "schedule:\n" + "".join(f"  {key}: {value}\n" for key, value in values.items())
    return configure(tmp_path, server, addresses, extra=block)


def issue_file(tmp_path: Path, name: str) -> Path:
    """Write a copy of the bundled example whose ledger key is /NAME/."""
    text = EXAMPLE.read_text(encoding="utf-8").replace("permalink: /example-weekly-11-4th-2026/",
                                                       f"permalink: /{name}/")
    path = tmp_path / f"{name}.md"
    path.write_text(text, encoding="utf-8")
    return path


def command(settings: Path, *args: str, now=time.time) -> tuple[int, str, str]:
    """Run a schedule command (distributor.commands) in this process, reading the clock `now` (the real
    command line is `distributor.cli`, which adds the same commands with the real clock)."""
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True), now=now)
    parsed = parser.parse_args(args)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = parsed.run(parsed, load_settings(settings))
        except InputError as exc:
            print(f"distributor: error: {exc}", file=sys.stderr)
            status = 2
    return status, out.getvalue(), err.getvalue()


def subprocess_command(settings: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "distributor", "--settings", str(settings), *args]


def start(settings: Path, *args: str) -> subprocess.Popen:
    environment = {**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": SECRET}
    return subprocess.Popen(subprocess_command(settings, *args), cwd=ROOT, env=environment, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_due(settings: Path, now=time.time) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = Scheduler(load_settings(settings), now=now, out=out, err=err).run_due(threading.Event())
    return status, out.getvalue(), err.getvalue()


def job(tmp_path: Path, job_id: int) -> Job:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        return JobStore.of(ledger).job(job_id)
    finally:
        ledger.close()


def add_due_job(tmp_path: Path, issue: Path, run_at: float) -> Job:
    """Store a job directly, as if it had been scheduled earlier for `run_at`."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        return JobStore.of(ledger).add(str(issue), ("email",), run_at, "Asia/Shanghai")
    finally:
        ledger.close()


def wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_due_job_runs_and_later_one_waits(tmp_path):
    addresses = ["a@example.org", "b@example.org", "c@example.org"]
    clock = Clock(shanghai("2026-12-03 20:00:00"))
    with FaultySmtpServer() as server:
        settings = schedule_settings(tmp_path, server, addresses)
        first, second = issue_file(tmp_path, "first"), issue_file(tmp_path, "second")
        status, out, _ = command(settings, "schedule", "add", str(first), "--at", "2026-12-04 08:00", now=clock)
        assert status == 0 and "job 1 scheduled" in out and "2026-12-04 08:00 CST (+08:00) Asia/Shanghai" in out
        assert command(settings, "schedule", "add", str(second), "--at", "2026-12-05 08:00", now=clock)[0] == 0
        status, _, err = command(settings, "schedule", "add", str(first), "--at", "2026-12-03 19:59", now=clock)
        assert status == 2 and "in the past" in err
        assert server.messages == []             # scheduling validated against the relay, sent nothing

        clock.set(shanghai("2026-12-04 07:59:59"))
        assert run_due(settings, clock)[0] == 0 and server.messages == []
        clock.set(shanghai("2026-12-04 08:00:30"))
        status, out, err = run_due(settings, clock)
        assert status == 0 and "late" not in err, out + err
        assert received_by(server) == {address: 1 for address in addresses}
        assert job(tmp_path, 1).state == "done" and job(tmp_path, 2).state == "scheduled"
        scheduler = Scheduler(load_settings(settings), now=clock)
        assert scheduler.seconds_until_next() == pytest.approx(24 * 3600 - 30)

        clock.set(shanghai("2026-12-05 08:00:05"))
        assert run_due(settings, clock)[0] == 0
        assert received_by(server) == {address: 2 for address in addresses}
    listing = command(settings, "schedule", "list")[1]
    assert "2026-12-04 08:00 CST (+08:00)  done" in listing and "2026-12-05 08:00 CST" in listing
    assert str(first) in listing and "email" in listing
    status, _, err = command(settings, "schedule", "cancel", "1")
    assert status == 1 and "job 1 is done" in err


def test_cancelled_job_is_never_sent(tmp_path):
    clock = Clock(shanghai("2026-12-03 20:00:00"))
    with FaultySmtpServer() as server:
        settings = schedule_settings(tmp_path, server, ["a@example.org"])
        assert command(settings, "schedule", "add", str(EXAMPLE), "--at", "2026-12-04 08:00", now=clock)[0] == 0
        assert command(settings, "schedule", "cancel", "1") == (0, "job 1 cancelled\n", "")
        assert command(settings, "schedule", "cancel", "1")[:2] == (0, "job 1 was already cancelled\n")
        status, _, err = command(settings, "schedule", "cancel", "7")
        assert status == 2 and "no job 7" in err
        clock.set(shanghai("2026-12-04 09:00:00"))
        assert run_due(settings, clock)[0] == 0
        assert server.messages == []
    assert job(tmp_path, 1).state == "cancelled"
    assert "cancelled" in command(settings, "schedule", "list")[1]


def test_two_runners_started_together_send_once(tmp_path):
    addresses = [f"r{i:02d}@example.org" for i in range(30)]
    with FaultySmtpServer(command_delay_seconds=0.005) as server:
        settings = schedule_settings(tmp_path, server, addresses)
        add_due_job(tmp_path, EXAMPLE, time.time() - 1)
        runners = [start(settings, "run-due"), start(settings, "run-due")]
        results = [runner.communicate(timeout=60) for runner in runners]
    assert [runner.returncode for runner in runners] == [0, 0], results
    assert received_by(server) == {address: 1 for address in addresses}
    assert sum("job 1: publishing" in out for out, _ in results) == 1
    finished = job(tmp_path, 1)
    assert finished.state == "done" and finished.attempts == 1


def test_killed_runner_is_taken_over_after_its_lease_lapses(tmp_path):
    addresses = [f"r{i:02d}@example.org" for i in range(60)]
    with FaultySmtpServer(command_delay_seconds=0.01) as server:
        settings = schedule_settings(tmp_path, server, addresses, lease_seconds=2.0)
        add_due_job(tmp_path, EXAMPLE, time.time() - 1)
        runner = start(settings, "run-due")
        wait_for(lambda: len(server.messages) >= 10 or runner.poll() is not None, 30)
        runner.kill()
        runner.communicate(timeout=10)
        assert 0 < len(server.messages) < len(addresses), "the kill must land half way"
        held = job(tmp_path, 1)
        assert held.state == "running" and held.lease_until is not None
        # While the dead runner's lease holds, nobody takes the job (read on a clock just before its end).
        before_lapse, after_lapse = Clock.at(held.lease_until - 0.01), Clock.at(held.lease_until + 0.01)
        assert run_due(settings, before_lapse)[0] == 0 and job(tmp_path, 1).state == "running"
        status, _, err = command(settings, "schedule", "cancel", "1", now=before_lapse)
        assert status == 1 and "is running and cannot be cancelled (runner " in err
        status, out, _ = run_due(settings, after_lapse)
        counts = received_by(server)
    assert "job 1: resuming (attempt 2" in out, out
    rows = ledger_rows(tmp_path)
    uncertain = {address for address, row in rows.items() if row[0] == "uncertain"}
    assert len(uncertain) <= 3                     # at most the messages in flight when it was killed
    assert status == (1 if uncertain else 0), out  # the rows the kill left uncertain count for the issue
    assert all(counts.get(address) == 1 for address in addresses if address not in uncertain), counts
    assert all(counts.get(address, 0) <= 1 for address in uncertain)
    assert job(tmp_path, 1).state == "done"


def test_missed_job_inside_and_outside_the_lateness_limit(tmp_path):
    now = shanghai("2026-12-04 12:00:00")
    with FaultySmtpServer() as server:
        settings = schedule_settings(tmp_path, server, ["a@example.org"], max_lateness_seconds=3600)
        add_due_job(tmp_path, issue_file(tmp_path, "too-late"), now.timestamp() - 3601)
        add_due_job(tmp_path, issue_file(tmp_path, "late"), now.timestamp() - 1800)
        status, out, err = run_due(settings, Clock(now))
        messages = server.messages
    assert status == 1
    missed, sent = job(tmp_path, 1), job(tmp_path, 2)
    assert missed.state == "missed" and "max_lateness_seconds" in missed.reason
    assert sent.state == "done" and "job 2 is 30 min late" in err
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    assert ledger.counts("/late/") == {"email": {"sent": 1}} and ledger.counts("/too-late/") == {}
    assert len(messages) == 1
    assert "job 1: missed" in out
    assert "later than schedule.max_lateness_seconds" in command(settings, "schedule", "list")[1]


def test_times_across_daylight_saving_changes_in_berlin(tmp_path):
    clock = Clock(dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc))
    with FaultySmtpServer() as server:
        settings = schedule_settings(tmp_path, server, ["a@example.org"])
        status, _, err = command(settings, "schedule", "add", str(EXAMPLE), "--at", "2026-03-29 02:30",
                                 "--tz", "Europe/Berlin", now=clock)
        assert status == 2 and "does not exist in Europe/Berlin" in err
        status, out, _ = command(settings, "schedule", "add", str(EXAMPLE), "--at", "2026-10-25 02:30",
                                 "--tz", "Europe/Berlin", now=clock)
        assert status == 0 and "2026-10-25 02:30 CEST (+02:00) Europe/Berlin" in out
        assert "happens twice" in out and "taking the first" in out
        assert "that is 2026-10-25 08:30 CST (+08:00) Asia/Shanghai" in out
        status, _, err = command(settings, "schedule", "add", str(EXAMPLE), "--at", "2026-10-25 02:30",
                                 "--tz", "Europe/Nowhere", now=clock)
        assert status == 2 and "unknown time zone" in err
    assert job(tmp_path, 1).run_at == dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.timezone.utc).timestamp()
    assert job(tmp_path, 1).zone == "Europe/Berlin" and job(tmp_path, 2) is None
    after = read_local_time("2026-10-25 03:30", "Europe/Berlin")
    assert after.utc == dt.datetime(2026, 10, 25, 2, 30, tzinfo=dt.timezone.utc) and after.note is None


def test_worker_stops_cleanly_on_sigterm(tmp_path):
    addresses = [f"r{i:02d}@example.org" for i in range(40)]
    with FaultySmtpServer(command_delay_seconds=0.01) as server:
        settings = schedule_settings(tmp_path, server, addresses, poll_seconds=0.2)
        add_due_job(tmp_path, EXAMPLE, time.time() - 1)
        worker = start(settings, "worker")
        wait_for(lambda: len(server.messages) >= 5 or worker.poll() is not None, 30)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=20)
        assert worker.returncode == 0, err
        assert "worker: stopped" in out and "interrupted" in out
        interrupted = job(tmp_path, 1)
        assert interrupted.state == "scheduled" and "interrupted" in interrupted.reason
        rows = ledger_rows(tmp_path)
        assert "uncertain" not in {row[0] for row in rows.values()}        # the messages in flight finished
        sent = sum(row[0] == "sent" for row in rows.values())
        assert sent == len(server.messages) and 0 < sent < len(addresses)

        status, out, _ = run_due(settings)
        assert status == 0 and "resuming" in out
        assert received_by(server) == {address: 1 for address in addresses}
    assert job(tmp_path, 1).state == "done"


def test_worker_waits_out_a_locked_ledger_and_then_runs_the_due_job(tmp_path):
    """A publish holding the ledger's write lock a while must not end the worker: each poll that finds
    it locked warns in one line, and the job runs at the first poll after the lock is released."""
    addresses = ["a@example.org", "b@example.org"]
    with FaultySmtpServer() as server:
        settings = schedule_settings(tmp_path, server, addresses, poll_seconds=0.2)
        settings.write_text(settings.read_text().replace("ledger:\n", "ledger:\n  lock_timeout_seconds: 0.3\n"))
        add_due_job(tmp_path, EXAMPLE, time.time() - 1)
        holder = sqlite3.connect(tmp_path / "ledger.sqlite3", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        errors = tmp_path / "worker.err"
        environment = {**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": SECRET}
        with errors.open("w") as stderr:
            worker = subprocess.Popen(subprocess_command(settings, "worker"), cwd=ROOT, env=environment, text=True,
                                      stdout=subprocess.PIPE, stderr=stderr)
        try:
            wait_for(lambda: errors.read_text().count("warning") >= 2 or worker.poll() is not None, 30)
            still_running = worker.poll() is None
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        wait_for(lambda: len(server.messages) >= len(addresses) or worker.poll() is not None, 30)
        wait_for(lambda: job(tmp_path, 1).state == "done" or worker.poll() is not None, 30)
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=20)
        warnings = errors.read_text().splitlines()
        assert still_running and worker.returncode == 0, (out, warnings)
        assert received_by(server) == {address: 1 for address in addresses}
    assert job(tmp_path, 1).state == "done" and "worker: stopped" in out
    locked = [line for line in warnings if "locked by another process" in line]
    assert len(locked) >= 2 and all(line.startswith("distributor: warning: ") and "trying again" in line
                                    for line in locked), warnings
    assert "Traceback" not in "\n".join(warnings)


def test_report_mailed_to_the_operator(tmp_path):
    bounced = "gone@example.org"
    with FaultySmtpServer(rejected_recipients={bounced: "550 5.1.1 no such user"}) as server:
        settings = schedule_settings(tmp_path, server, ["a@example.org", bounced],
                                     operator_email="ops@example.org")
        add_due_job(tmp_path, EXAMPLE, time.time() - 1)
        status, out, _ = run_due(settings)
        messages = server.messages
    assert status == 1 and "report mailed to ops@example.org" in out
    (report,) = [message for message in messages if message.rcpt_tos == ("ops@example.org",)]
    parsed = email.message_from_bytes(report.data, policy=email.policy.default)
    assert parsed["Subject"] == "distributor: job 1 done: /example-weekly-11-4th-2026/"
    assert parsed["From"].addresses[0].display_name == "示例周报"
    body = parsed.get_content()
    assert "email: 1 sent, 1 failed, 0 uncertain, 0 not sent" in body
    assert f"failed email: {bounced}: 550 5.1.1 no such user" in body
    assert "some deliveries failed" in body and body.replace("\r\n", "\n") in out


def test_issue_edited_after_scheduling_is_sent_as_it_is_then(tmp_path):
    clock = Clock(shanghai("2026-12-03 20:00:00"))
    with FaultySmtpServer() as server:
        settings = schedule_settings(tmp_path, server, ["a@example.org"])
        edited, broken, gone = (issue_file(tmp_path, name) for name in ("edited", "broken", "gone"))
        for issue in (edited, broken, gone):
            assert command(settings, "schedule", "add", str(issue), "--at", "2026-12-04 08:00", now=clock)[0] == 0
        edited.write_text(edited.read_text(encoding="utf-8").replace("本周日", "本周六（已更正）"), encoding="utf-8")
        broken.write_text(broken.read_text(encoding="utf-8").replace("title:", "titel:", 1), encoding="utf-8")
        gone.unlink()
        clock.set(shanghai("2026-12-04 08:00:10"))
        status, _, _ = run_due(settings, clock)
        messages = server.messages
    assert status == 2
    (message,) = messages
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert "本周六（已更正）" in parsed.get_body(("plain",)).get_content()
    assert job(tmp_path, 1).content_hash == hashlib.sha256(edited.read_bytes()).hexdigest()
    failed_broken, failed_gone = job(tmp_path, 2), job(tmp_path, 3)
    assert failed_broken.state == "failed" and "front matter has no title" in failed_broken.reason
    assert failed_gone.state == "failed" and "cannot read issue" in failed_gone.reason
    assert failed_broken.content_hash is None and failed_gone.content_hash is None
    listing = command(settings, "schedule", "list")[1]
    assert "front matter has no title" in listing and "cannot read issue" in listing
    assert f"sent the file with sha256 {job(tmp_path, 1).content_hash}" in listing


def test_add_refuses_what_would_fail_at_send_time(tmp_path, monkeypatch):
    clock = Clock(shanghai("2026-12-03 20:00:00"))
    with FaultySmtpServer() as server:
        settings = schedule_settings(tmp_path, server, ["a@example.org"])
        broken = issue_file(tmp_path, "broken")
        broken.write_text(broken.read_text(encoding="utf-8").replace("title:", "titel:", 1), encoding="utf-8")
        status, _, err = command(settings, "schedule", "add", str(broken), "--at", "2026-12-04 08:00", now=clock)
        assert status == 2 and "front matter has no title" in err
        monkeypatch.delenv("DISTRIBUTOR_UNSUBSCRIBE_SECRET")
        status, _, err = command(settings, "schedule", "add", str(EXAMPLE), "--at", "2026-12-04 08:00", now=clock)
        assert status == 2 and "DISTRIBUTOR_UNSUBSCRIBE_SECRET" in err
        monkeypatch.setenv("DISTRIBUTOR_UNSUBSCRIBE_SECRET", SECRET)
    # The relay is gone now: the check that `distributor check` runs fails, and the job is refused.
    status, out, err = command(settings, "schedule", "add", str(EXAMPLE), "--at", "2026-12-04 08:00", now=clock)
    assert status == 1 and "smtp: cannot reach relay" in out and "not scheduled" in err
    assert command(settings, "schedule", "list")[1] == "no jobs\n"


def test_lease_that_cannot_be_renewed_in_time_is_lost(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        jobs = JobStore.of(ledger)
        jobs.add(str(EXAMPLE), ("email",), time.time() - 1, "UTC")
        claimed = jobs.claim("runner-a", time.time(), 0.6)
        with LeaseKeeper(LedgerSettings(path=str(path)), claimed.id, "runner-a", 0.6, claimed.lease_until, time.time,
                         threading.Event()) as keeper:
            assert not keeper.job_stop.wait(0.8)           # renewed while the ledger is free
            renewed = jobs.job(claimed.id).lease_until
            blocker.execute("BEGIN IMMEDIATE")              # another writer holds the ledger past the lease
            try:
                stopped = keeper.job_stop.wait(3)
                stopped_at = time.time()
            finally:
                blocker.execute("ROLLBACK")
    finally:
        blocker.close()
        ledger.close()
    assert renewed > claimed.lease_until
    assert stopped and keeper.lost and stopped_at >= renewed


def test_job_stopped_early_is_tried_again_after_a_backoff(tmp_path):
    addresses = ["a@example.org", "b@example.org"]
    clock = Clock(shanghai("2026-12-03 20:00:00"))
    with FaultySmtpServer() as server:
        settings = schedule_settings(tmp_path, server, addresses, max_lateness_seconds=600)
        assert command(settings, "schedule", "add", str(EXAMPLE), "--at", "2026-12-04 08:00", now=clock)[0] == 0
    # The relay is down at the job's time: the run stops early and the job waits five minutes.
    clock.set(shanghai("2026-12-04 08:00:10"))
    status, out, _ = run_due(settings, clock)
    stopped = job(tmp_path, 1)
    assert status == 3 and "trying again at 2026-12-04 08:05 CST" in out, out
    assert stopped.state == "scheduled" and stopped.early_stops == 1 and stopped.started_at is not None
    assert stopped.retry_at == shanghai("2026-12-04 08:05:10").timestamp()
    assert "cannot reach relay" in stopped.reason
    listing = command(settings, "schedule", "list")[1]
    assert "2026-12-04 08:00 CST (+08:00)  scheduled" in listing
    assert f"stopped early (1 of 6 tries): {stopped.reason}" in listing
    assert "next try 2026-12-04 08:05 CST (+08:00)" in listing

    with FaultySmtpServer() as server:
        settings = schedule_settings(tmp_path, server, addresses, max_lateness_seconds=600)
        clock.set(shanghai("2026-12-04 08:05:09"))
        assert run_due(settings, clock)[0] == 0 and server.messages == []
        # Later than max_lateness_seconds after its time, but it had started: resumed, not missed.
        clock.set(shanghai("2026-12-04 08:15:00"))
        status, out, _ = run_due(settings, clock)
        assert status == 0 and "job 1: resuming (try 2 of 6; it stopped early: " in out, out
        assert received_by(server) == {address: 1 for address in addresses}
    finished = job(tmp_path, 1)
    assert finished.state == "done" and finished.reason is None and finished.retry_at is None


def test_job_that_keeps_stopping_early_backs_off_then_fails(tmp_path):
    with FaultySmtpServer() as server:
        settings = schedule_settings(tmp_path, server, ["a@example.org"])
    due = shanghai("2026-12-04 08:00:00")
    add_due_job(tmp_path, EXAMPLE, due.timestamp())
    clock, waits, statuses = Clock(due), [], []
    for _ in range(MAX_TRIES):
        statuses.append(run_due(settings, clock)[0])
        after = job(tmp_path, 1)
        if after.state != "scheduled":
            break
        waits.append(after.retry_at - clock())
        clock.value = after.retry_at
    assert statuses == [3] * MAX_TRIES
    assert waits == [300, 600, 1200, 2400, 3600]
    assert after.state == "failed" and after.early_stops == MAX_TRIES - 1
    assert after.reason.startswith("stopped early 6 times; the last time: ") and "cannot reach relay" in after.reason


def test_ledger_made_before_job_retries_gains_their_columns(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("""CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, issue_path TEXT NOT NULL, channels TEXT NOT NULL,
        run_at REAL NOT NULL, zone TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'scheduled',
        lease_owner TEXT, lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0, started_at REAL,
        finished_at REAL, reason TEXT, issue_key TEXT, content_hash TEXT, exit_status INTEGER,
        created_at REAL NOT NULL);
        INSERT INTO jobs (issue_path, channels, run_at, zone, created_at) VALUES ('a.md', 'email', 5, 'UTC', 1);""")
    old.close()
    with Ledger(path) as ledger:
        jobs = JobStore.of(ledger)
        kept = jobs.job(1)
        claimed = jobs.claim("runner-a", 10, 60)
    assert (kept.issue_path, kept.channels, kept.early_stops, kept.retry_at) == ("a.md", ("email",), 0, None)
    assert claimed.id == 1 and claimed.state == "running"


def test_add_refuses_a_date_that_does_not_exist(tmp_path):
    clock = Clock(shanghai("2026-12-03 20:00:00"))
    with FaultySmtpServer() as server:
        settings = schedule_settings(tmp_path, server, ["a@example.org"])
        status, _, err = command(settings, "schedule", "add", str(EXAMPLE), "--at", "2030-02-30 08:00", now=clock)
        assert status == 2 and "the date 2030-02-30 does not exist (February 2030 has 28 days)" in err, err
        assert "is not YYYY-MM-DD" not in err
        status, _, err = command(settings, "schedule", "add", str(EXAMPLE), "--at", "2030-02-28 24:30", now=clock)
        assert status == 2 and "24:30 is not a time of day" in err
        status, _, err = command(settings, "schedule", "add", str(EXAMPLE), "--at", "next friday", now=clock)
        assert status == 2 and "is not YYYY-MM-DD HH:MM" in err
    assert command(settings, "schedule", "list")[1] == "no jobs\n"


@pytest.mark.parametrize("channels, environment, expected", [
    ("email: {enabled: true}\n  wechat: {enabled: false}", {},
     "neither channels.email.subscribers nor channels.email.lists is set"),
    ("email: {enabled: false}\n  wechat: {enabled: true}", {"WECHAT_APP_SECRET": "s"},
     "channels.wechat.app_id is not set"),
    ("email: {enabled: false}\n  wechat: {enabled: true, app_id: wx0123456789abcdef}", {},
     "WECHAT_APP_SECRET"),
])
def test_add_refuses_what_only_a_real_publish_would_refuse(tmp_path, monkeypatch, channels, environment, expected):
    monkeypatch.delenv("WECHAT_APP_SECRET", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"""channels:
  {channels}
  text: {{enabled: false}}
ledger:
  path: {tmp_path / 'ledger.sqlite3'}
schedule:
  timezone: Asia/Shanghai
""", encoding="utf-8")
    clock = Clock(shanghai("2026-12-03 20:00:00"))
    status, _, err = command(settings, "schedule", "add", str(EXAMPLE), "--at", "2026-12-04 08:00", now=clock)
    assert status == 2 and "a real publish would refuse it" in err and expected in err, err
    assert command(settings, "schedule", "list")[1] == "no jobs\n"


def test_a_storage_fault_during_a_job_is_an_early_stop_tried_again(tmp_path):
    """A file the job cannot write (here the text channel's archive folder) may be writable later:
    the job backs off like any early stop instead of failing for good."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive folder should be", encoding="utf-8")
    clock = Clock(shanghai("2026-12-04 08:00:10"))
    with FaultySmtpServer() as server:
        settings = schedule_settings(tmp_path, server, ["a@example.org"])
        text = settings.read_text(encoding="utf-8")
        settings.write_text(text.replace("text: {enabled: false}",
                                         f"text: {{enabled: true, output_dir: {blocker / 'archive'}}}"),
                            encoding="utf-8")
        ledger = Ledger(tmp_path / "ledger.sqlite3")
        try:
            JobStore.of(ledger).add(str(EXAMPLE), ("email", "text"), shanghai("2026-12-04 08:00:00").timestamp(),
                                    "Asia/Shanghai")
        finally:
            ledger.close()
        status, out, _ = run_due(settings, clock)
        assert server.messages == []
    stopped = job(tmp_path, 1)
    assert status == 3 and "trying again at 2026-12-04 08:05 CST" in out, out
    assert stopped.state == "scheduled" and stopped.early_stops == 1
    assert "cannot write" in stopped.reason and "nothing was written" in stopped.reason
