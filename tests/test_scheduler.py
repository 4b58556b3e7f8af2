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
import subprocess
import sys
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from distributor.errors import InputError
from distributor.ledger import Job, Ledger
from distributor.schedule_commands import add_commands
from distributor.scheduler import Scheduler
from distributor.settings import load_settings
from distributor.timezones import read_local_time

from .conftest import EXAMPLE, ROOT
from .publish_helpers import SECRET, configure, ledger_rows, received_by
from .smtp_server import FaultySmtpServer

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")

SHANGHAI = ZoneInfo("Asia/Shanghai")
class Clock:
    """A clock the test moves by hand."""

    def __init__(self, when: dt.datetime):
        self.value = when.timestamp()

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
    """Run a command of schedule_commands in this process, reading the clock `now` (the real
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
        return ledger.job(job_id)
    finally:
        ledger.close()


def add_due_job(tmp_path: Path, issue: Path, run_at: float) -> Job:
    """Store a job directly, as if it had been scheduled earlier for `run_at`."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        return ledger.add_job(str(issue), ("email",), run_at, "Asia/Shanghai")
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
        assert held.state == "running" and held.lease_until > time.time()
        # While the dead runner's lease holds, nobody takes the job.
        if held.lease_until - time.time() > 0.5:
            assert run_due(settings)[0] == 0 and job(tmp_path, 1).state == "running"
            status, _, err = command(settings, "schedule", "cancel", "1")
            assert status == 1 and "is running and cannot be cancelled (runner " in err
        wait_for(lambda: time.time() > held.lease_until, 5)
        status, out, _ = run_due(settings)
        counts = received_by(server)
    assert status == 0 and "job 1: resuming (attempt 2" in out, out
    rows = ledger_rows(tmp_path)
    uncertain = {address for address, row in rows.items() if row[0] == "sending"}
    assert len(uncertain) <= 3                     # at most the messages in flight when it was killed
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
        assert "sending" not in {row[0] for row in rows.values()}        # the messages in flight finished
        sent = sum(row[0] == "sent" for row in rows.values())
        assert sent == len(server.messages) and 0 < sent < len(addresses)

        status, out, _ = run_due(settings)
        assert status == 0 and "resuming" in out
        assert received_by(server) == {address: 1 for address in addresses}
    assert job(tmp_path, 1).state == "done"


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
