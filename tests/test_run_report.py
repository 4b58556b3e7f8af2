"""What a publish reports and how it exits, for the whole issue; and what a refused attempt leaves
in the ledger while it waits for its retry. Against the SMTP test server, through the real CLI
where a process must die."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import EXAMPLE, ROOT
from .publish_helpers import SECRET, cli, configure, ledger_rows, received_by, run_publish
from .smtp_server import FaultySmtpServer

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")
WAIT_SECONDS = 30


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def start_publish(settings: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "distributor", "--settings", str(settings), "publish", str(EXAMPLE), "--yes"]
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": SECRET},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def row(tmp_path: Path, address: str) -> tuple | None:
    db = sqlite3.connect(tmp_path / "ledger.sqlite3", timeout=5)
    try:
        return db.execute("SELECT status, reply, last_error, attempts FROM deliveries WHERE recipient = ?",
                          (address,)).fetchone()
    except sqlite3.OperationalError:         # not made yet
        return None
    finally:
        db.close()


def test_a_rerun_that_sends_nothing_new_still_reports_what_earlier_runs_left(tmp_path):
    bounced, withheld = "gone@example.org", "slow@example.org"
    with FaultySmtpServer(rejected_recipients={bounced: "550 5.1.1 no such user"},
                          withhold_after_dot={withheld: 2.0}) as server:
        settings = configure(tmp_path, server, ["a@example.org", bounced, withheld])
        first, out, _ = run_publish(settings)
        assert first == 1 and "1 sent, 1 failed, 1 uncertain" in out
        status, out, _ = run_publish(settings)
        assert len(server.messages) == 1
    assert status == 1, out
    last = out.rstrip().splitlines()[-1].strip()
    assert last == f"1 uncertain, 1 failed from earlier runs: distributor status {EXAMPLE}"


def test_after_a_kill_the_resumed_run_names_the_uncertain_rows_and_exits_1(tmp_path):
    addresses = [f"r{i:02d}@example.org" for i in range(10)]
    held = "r00@example.org"               # first in recipient order: its message is out when the kill lands
    with FaultySmtpServer(withhold_after_dot={held: 20.0}) as server:
        settings = configure(tmp_path, server, addresses, smtp_extra="  pool_size: 1")
        settings.write_text(settings.read_text().replace("timeout_seconds: 1.0", "timeout_seconds: 30.0"))
        process = start_publish(settings)
        try:
            wait_for(lambda: server.withheld, "the held message to arrive")
        finally:
            process.kill()
            process.wait(timeout=10)
        assert row(tmp_path, held)[0] == "uncertain"
        result = cli(settings, "publish", str(EXAMPLE), "--yes")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.rstrip().splitlines()[-1].strip() == \
        f"1 uncertain from earlier runs: distributor status {EXAMPLE}"
    assert all(received_by(server).get(address) == 1 for address in addresses[1:])


def test_a_row_waiting_out_its_backoff_is_pending_with_the_reply_and_resent_after_a_kill(tmp_path):
    """While a refused row waits for its retry it is resendable: killed then, it is not uncertain."""
    greylisted = "grey@example.org"
    others = [f"r{i}@example.org" for i in range(4)]
    with FaultySmtpServer(rcpt_replies={greylisted: ["451 4.3.0 greylisted, come back later"]}) as server:
        settings = configure(tmp_path, server, [greylisted] + others)
        fast = settings.read_text()
        settings.write_text(fast.replace("base_delay_seconds: 0.01", "base_delay_seconds: 60")
                            .replace("max_delay_seconds: 0.05", "max_delay_seconds: 60"))
        process = start_publish(settings)
        try:
            wait_for(lambda: (row(tmp_path, greylisted) or ("",))[0] == "pending"
                     and (row(tmp_path, greylisted)[1] or "").startswith("451"),
                     "the refused row to be pending with its reply")
            wait_for(lambda: all((row(tmp_path, address) or ("",))[0] == "sent" for address in others),
                     "the other rows to be recorded as sent")
        finally:
            process.kill()
            process.wait(timeout=10)
        status, reply, error, attempts = row(tmp_path, greylisted)
        assert (status, attempts) == ("pending", 1) and "greylisted" in reply and "for now" in error
        settings.write_text(fast)
        result = cli(settings, "publish", str(EXAMPLE), "--yes")
        assert result.returncode == 0, result.stdout + result.stderr
        assert received_by(server) == {address: 1 for address in [greylisted] + others}


def test_every_attempt_is_counted_and_the_error_says_how_many(tmp_path):
    refused = "busy@example.org"
    with FaultySmtpServer(rcpt_replies={refused: ["452 4.2.2 mailbox busy"] * 5}) as server:
        settings = configure(tmp_path, server, [refused, "ok@example.org"])      # retry.attempts: 3
        status, _, _ = run_publish(settings)
        assert server.rcpt_attempts[refused] == 3
    assert status == 1
    assert ledger_rows(tmp_path)[refused][0] == "failed"
    report = json.loads(cli(settings, "status", str(EXAMPLE), "--json").stdout)
    (problem,) = report["problems"]
    assert problem["attempts"] == 3 and problem["error"].startswith("gave up after 3 attempts")
