"""Who a run mails: a plan is made from the whole subscriber file or not at all, and a resumed run
mails the file as it is now. Through the real CLI, to the SMTP test server."""
from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import EXAMPLE, ROOT
from .publish_helpers import SECRET, cli, configure, received_by
from .smtp_server import FaultySmtpServer

KILL_WAIT_SECONDS = 60


def write_subscribers(tmp_path: Path, addresses: list[str], tail: bytes = b"") -> None:
    (tmp_path / "subscribers.csv").write_bytes(
        b"email,name\n" + "".join(f"{a},Reader\n" for a in addresses).encode() + tail)


def deliveries(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "ledger.sqlite3"
    if not path.exists():
        return {}
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT recipient, status FROM deliveries"))
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def point_at(settings: Path, port: int) -> None:
    text = settings.read_text()
    start = text.index("  port: ") + len("  port: ")
    settings.write_text(text[:start] + str(port) + text[text.index("\n", start):])


def test_a_file_refused_at_row_4502_plans_nobody_and_the_next_run_mails_only_the_new_file(tmp_path):
    first = [f"old{i:05d}@example.org" for i in range(4501)]
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, [])
        write_subscribers(tmp_path, first, tail=b"caf\xe9@example.org,Latin-1\n")     # row 4,502: not UTF-8
        refused = cli(settings, "publish", str(EXAMPLE), "--yes")
        assert refused.returncode == 2 and "not UTF-8" in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert deliveries(tmp_path) == {} and server.connections_opened == 0

        replaced = [f"new{i}@example.org" for i in range(10)]
        write_subscribers(tmp_path, replaced)
        result = cli(settings, "publish", str(EXAMPLE), "--yes")
        assert result.returncode == 0, result.stdout + result.stderr
        assert received_by(server) == {address: 1 for address in replaced}
    assert sorted(deliveries(tmp_path)) == replaced


def test_a_run_resumed_after_an_early_stop_mails_the_file_as_it_is_now(tmp_path):
    addresses = [f"r{i}@example.org" for i in range(8)]
    removed, added = addresses[2:4], "late@example.org"
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, addresses)
        point_at(settings, free_port())                 # nothing listens there: the relay is unreachable
        stopped = cli(settings, "publish", str(EXAMPLE), "--yes")
        assert stopped.returncode == 3 and set(deliveries(tmp_path).values()) == {"pending"}

        write_subscribers(tmp_path, [a for a in addresses if a not in removed] + [added])
        point_at(settings, server.port)
        result = cli(settings, "publish", str(EXAMPLE), "--yes")
        assert result.returncode == 0, result.stdout + result.stderr
        expected = [a for a in addresses if a not in removed] + [added]
        assert received_by(server) == {address: 1 for address in expected}
    assert f"email: not mailing 2 recipients no longer in {tmp_path / 'subscribers.csv'}" in result.stderr
    assert f"email: 1 recipient new in {tmp_path / 'subscribers.csv'} added to the plan" in result.stderr
    assert sorted(deliveries(tmp_path)) == sorted(expected)


def test_a_run_resumed_after_a_kill_does_not_mail_an_address_removed_in_between(tmp_path):
    addresses = [f"r{i:03d}@example.org" for i in range(60)]
    # The server accepts 10 messages, then holds every later one unanswered: the run is killed while
    # stopped there, whatever the machine's speed.
    with FaultySmtpServer(hold_after_messages=10) as server:
        settings = configure(tmp_path, server, addresses)
        command = [sys.executable, "-m", "distributor", "--settings", str(settings), "publish", str(EXAMPLE), "--yes"]
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": SECRET},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + KILL_WAIT_SECONDS
            while not server.withheld:
                assert process.poll() is None, "the run ended before the server held a message"
                assert time.monotonic() < deadline, "timed out waiting for the server to hold a message"
                time.sleep(0.01)
        finally:
            process.kill()
            process.wait(timeout=KILL_WAIT_SECONDS)
        server.release()
        sent = [message.rcpt_tos[0] for message in server.messages]
        held = {message.rcpt_tos[0] for message in server.withheld}
        # Besides the held messages, a row claimed by another session of the pool may have been on its
        # way to the server at the kill, or accepted but not yet recorded: uncertain too.
        uncertain = {address for address, status in deliveries(tmp_path).items() if status == "uncertain"}
        assert len(sent) == 10 and len(set(sent)) == 10 and not held & set(sent) and held <= uncertain
        removed = [a for a in addresses if a not in sent and a not in uncertain][-10:]
        write_subscribers(tmp_path, [a for a in addresses if a not in removed])
        result = cli(settings, "publish", str(EXAMPLE), "--yes")
        counts = received_by(server)
    # The messages held at the kill went out up to their final dot: uncertain, so never sent again (exit 1).
    assert result.returncode == 1 and "uncertain from earlier runs" in result.stdout, result.stdout + result.stderr
    # Uncertain rows may have been delivered (accepted just before the kill, not yet recorded): at most once.
    assert {a: n for a, n in counts.items() if a not in uncertain} == \
        {a: 1 for a in addresses if a not in removed and a not in uncertain}
    assert all(counts.get(a, 0) <= 1 for a in uncertain)
    assert "email: not mailing 10 recipients no longer in" in result.stderr
    assert not set(removed) & set(deliveries(tmp_path))


@pytest.mark.usefixtures("unsubscribe_secret")
def test_resending_the_failed_rows_leaves_out_an_address_removed_from_the_file(tmp_path):
    failing, kept = "busy@example.org", "later@example.org"
    with FaultySmtpServer(rcpt_replies={failing: ["452 4.2.2 mailbox busy"] * 3,
                                        kept: ["452 4.2.2 mailbox busy"] * 3}) as server:
        settings = configure(tmp_path, server, ["a@example.org", failing, kept])
        assert cli(settings, "publish", str(EXAMPLE), "--yes").returncode == 1
        write_subscribers(tmp_path, ["a@example.org", kept])
        result = cli(settings, "publish", str(EXAMPLE), "--yes", "--resend-failed")
        counts = received_by(server)
    assert result.returncode == 1 and "1 failed from earlier runs" in result.stdout, result.stdout
    assert counts == {"a@example.org": 1, kept: 1}
    assert deliveries(tmp_path)[failing] == "failed"    # history stays
