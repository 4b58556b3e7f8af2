"""An issue's identity: its key, what the ledger remembers of it, --title, and ledgers keyed the
old way. Published to the SMTP test server on 127.0.0.1, with real ledger files and the real CLI."""
from __future__ import annotations

import email
import email.policy
import hashlib
import io
import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from distributor.commands.publish import publish_and_report as publish
from distributor.delivery.publish import PublishOptions
from distributor.settings import load_settings

from .conftest import ROOT
from .corpus import CORPUS
from .publish_helpers import SECRET, cli, configure, received_by
from .smtp_server import FaultySmtpServer
from .test_scheduler import Clock, command, run_due, shanghai

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")

ADDRESSES = ["a@example.org", "b@example.org", "c@example.org"]
SWEEKLY = CORPUS / "python-weekly" / "2024-07-10-sweekly.md"


def weekly(folder: Path, name: str, title: str, *, extra: str = "", body: str = "本周要闻。") -> Path:
    """Write a weekly shaped like the real ones: a dated file name, no permalink unless `extra` adds one."""
    path = folder / name
    path.write_text(f"---\ntitle: '{title}'\nauthor: 豌豆花下猫\n{extra}---\n\n{body}\n\n## 文章\n\n"
                    "[一篇好文](https://example.org/a)\n", encoding="utf-8")
    return path


def run(settings: Path, issue: Path, **options) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = publish(PublishOptions(issue=issue, channels=(), yes=True, **options), load_settings(settings),
                     out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def keys(tmp_path: Path) -> dict[str, int]:
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    try:
        return dict(db.execute("SELECT issue_key, COUNT(*) FROM deliveries GROUP BY issue_key"))
    finally:
        db.close()


def subjects(server: FaultySmtpServer) -> list[str]:
    return [email.message_from_bytes(message.data, policy=email.policy.default)["Subject"]
            for message in server.messages]


def test_two_dated_weeklies_without_permalink_each_reach_everyone(tmp_path):
    first = weekly(tmp_path, "2024-01-06-weekly.md", "Python 潮流周刊#34")
    second = weekly(tmp_path, "2024-06-10-weekly.md", "Python 潮流周刊#55")
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES)
        assert run(settings, first)[0] == 0
        status, out, err = run(settings, second)
        assert status == 0, out + err
        assert received_by(server) == {address: 2 for address in ADDRESSES}
        assert sorted(subjects(server)).count("Python 潮流周刊#55") == len(ADDRESSES)
    assert keys(tmp_path) == {"2024-01-06-weekly": 3, "2024-06-10-weekly": 3}
    assert "changed since" not in err


def test_same_permalink_with_another_date_is_refused_before_anything_is_sent(tmp_path):
    first = weekly(tmp_path, "2024-01-06-weekly.md", "Python 潮流周刊#34", extra="permalink: /weekly/\n")
    second = weekly(tmp_path, "2024-06-10-weekly.md", "Python 潮流周刊#34", extra="permalink: /weekly/\n")
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES)
        assert cli(settings, "publish", str(first), "--yes").returncode == 0
        assert len(server.messages) == len(ADDRESSES)
        with (tmp_path / "subscribers.csv").open("a", encoding="utf-8") as subscribers:
            subscribers.write("new@example.org,New Reader\n")          # someone the second issue would reach
        result = cli(settings, "publish", str(second), "--yes")
        assert result.returncode == 2, result.stdout + result.stderr
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("distributor: error: ")
        assert str(first) in result.stderr and str(second) in result.stderr
        assert "2024-01-06" in result.stderr and "2024-06-10" in result.stderr
        assert "permalink: /2024-06-10-weekly/" in result.stderr
        assert len(server.messages) == len(ADDRESSES)                 # nothing more reached the server
        dry = cli(settings, "publish", str(second), "--dry-run")
        assert dry.returncode == 2 and "another date" in dry.stderr
        wechat_only = cli(settings, "publish", str(second), "--channel", "wechat", "--dry-run")
        assert wechat_only.returncode == 2 and "another date" in wechat_only.stderr


def test_same_key_with_another_title_is_refused_and_schedule_add_too(tmp_path):
    first = weekly(tmp_path, "weekly.md", "第一期")
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES)
        assert run(settings, first)[0] == 0
        weekly(tmp_path, "weekly.md", "第二期")                      # the file reused for the next issue
        clock = Clock(shanghai("2026-12-03 20:00:00"))
        status, _, err = command(settings, "schedule", "add", str(first), "--at", "2026-12-04 08:00", now=clock)
        assert status == 2 and "another title" in err and "'第一期'" in err and "'第二期'" in err
        assert "permalink: /weekly/" in err
        assert len(server.messages) == len(ADDRESSES)


def test_an_edit_of_the_same_issue_goes_on_with_its_warning(tmp_path):
    issue = weekly(tmp_path, "2024-06-10-weekly.md", "Python 潮流周刊#55", body="本周要闻，有错别子。")
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES)
        assert run(settings, issue)[0] == 0
        weekly(tmp_path, "2024-06-10-weekly.md", "  Python 潮流周刊#55 ", body="本周要闻，有错别字。")
        configure(tmp_path, server, ADDRESSES + ["new@example.org"])
        status, out, err = run(settings, issue)
        assert status == 0, out + err
        assert "the issue file changed since earlier recipients got it" in err
        assert received_by(server) == {**{address: 1 for address in ADDRESSES}, "new@example.org": 1}
    assert keys(tmp_path) == {"2024-06-10-weekly": 4}


def publish_at_a_terminal(settings: Path, issue: Path, answer: str) -> subprocess.CompletedProcess:
    """Run `distributor publish` with a terminal (a pty) as its standard input, typing `answer` at the prompt."""
    typing_end, terminal = pty.openpty()
    try:
        os.write(typing_end, answer.encode() + b"\n")
        environment = {**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": SECRET}
        return subprocess.run([sys.executable, "-m", "distributor", "--settings", str(settings), "publish", str(issue)],
                              stdin=terminal, capture_output=True, text=True, timeout=60, cwd=ROOT, env=environment)
    finally:
        os.close(terminal)
        os.close(typing_end)


def test_answering_no_at_the_prompt_leaves_the_title_free_to_correct(tmp_path):
    issue = weekly(tmp_path, "2024-06-10-weekly.md", "Python 潮流周干#55")         # a typo in the title
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES)
        declined = publish_at_a_terminal(settings, issue, "n")
        assert declined.returncode == 0 and "nothing sent" in declined.stdout, declined.stdout + declined.stderr
        weekly(tmp_path, "2024-06-10-weekly.md", "Python 潮流周刊#55")              # corrected
        sent = cli(settings, "publish", str(issue), "--yes")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert subjects(server) == ["Python 潮流周刊#55"] * len(ADDRESSES)


def test_a_run_refused_before_sending_leaves_the_title_free_to_correct(tmp_path):
    issue = weekly(tmp_path, "2024-06-10-weekly.md", "Python 潮流周干#55")
    plain = tmp_path / "plain.txt"
    plain.write_text("a file, not a folder\n", encoding="utf-8")
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES)
        text = settings.read_text(encoding="utf-8")
        settings.write_text(text.replace("text: {enabled: false}", f"text: {{output_dir: {plain / 'archive'}}}"))
        refused = cli(settings, "publish", str(issue), "--yes")          # the text archive cannot be written
        assert refused.returncode == 3 and server.messages == [], refused.stdout + refused.stderr
        settings.write_text(text)
        weekly(tmp_path, "2024-06-10-weekly.md", "Python 潮流周刊#55")
        sent = cli(settings, "publish", str(issue), "--yes")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert subjects(server) == ["Python 潮流周刊#55"] * len(ADDRESSES)


def test_the_refusal_says_a_new_permalink_goes_to_everyone_again_once_some_got_it(tmp_path):
    issue = weekly(tmp_path, "2024-06-10-weekly.md", "Python 潮流周干#55")
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES)
        assert run(settings, issue)[0] == 0
        weekly(tmp_path, "2024-06-10-weekly.md", "Python 潮流周刊#55")              # the typo fixed too late
        result = cli(settings, "publish", str(issue), "--yes")
        assert len(server.messages) == len(ADDRESSES)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "another title" in result.stderr and f"{len(ADDRESSES)} recipients already got" in result.stderr
    assert "a new permalink starts a new issue that goes to everyone again" in result.stderr


# --- ledgers written by the previous version, which keyed a dated file by its slug -------------------

OLD_SCHEMA = """
CREATE TABLE deliveries (
    issue_key TEXT NOT NULL, channel TEXT NOT NULL, recipient TEXT NOT NULL,
    name TEXT, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, reply TEXT, message_id TEXT, content_hash TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (issue_key, channel, recipient)) WITHOUT ROWID;
CREATE TABLE subscriber_ids (id TEXT PRIMARY KEY, address TEXT NOT NULL UNIQUE);
CREATE TABLE suppressions (address TEXT PRIMARY KEY, reason TEXT, source TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE checkpoints (
    issue_key TEXT NOT NULL, channel TEXT NOT NULL, step TEXT NOT NULL, value TEXT NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY (issue_key, channel, step));
"""


def old_ledger(tmp_path: Path, key: str, sent: dict[str, bytes]) -> None:
    """Write a ledger as the previous version left it: `sent` maps each address to the bytes of the
    file it was sent from, under `key`."""
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    try:
        db.executescript(OLD_SCHEMA)
        for number, (address, data) in enumerate(sent.items()):
            db.execute("INSERT INTO deliveries (issue_key, channel, recipient, status, attempts, message_id,"
                       " content_hash, created_at, updated_at) VALUES (?, 'email', ?, 'sent', 1, ?, ?, 1.0, 1.0)",
                       (key, address, f"<{number}@example.org>", hashlib.sha256(data).hexdigest()))
            db.execute("INSERT INTO subscriber_ids VALUES (?, ?)", (f"id{number}", address))
        db.commit()
    finally:
        db.close()


def test_upgrade_takes_over_the_slug_rows_of_the_same_file_and_sends_no_second_copy(tmp_path):
    issue = weekly(tmp_path, "2024-06-10-weekly.md", "Python 潮流周刊#55")
    old_ledger(tmp_path, "weekly", {address: issue.read_bytes() for address in ADDRESSES})
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES + ["new@example.org"])
        status, out, err = run(settings, issue)
        assert status == 0, out + err
        assert received_by(server) == {"new@example.org": 1}
    notes = [line for line in err.splitlines() if "took over" in line]
    assert len(notes) == 1 and "'weekly'" in notes[0] and "'2024-06-10-weekly'" in notes[0]
    assert keys(tmp_path) == {"2024-06-10-weekly": 4}


def test_a_dry_run_says_it_would_take_over_the_slug_rows_and_takes_over_nothing(tmp_path):
    issue = weekly(tmp_path, "2024-06-10-weekly.md", "Python 潮流周刊#55")
    old_ledger(tmp_path, "weekly", {address: issue.read_bytes() for address in ADDRESSES})
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES + ["new@example.org"])
        status, out, err = run(settings, issue, dry_run=True)
        assert status == 0 and server.messages == [], out + err
    notes = [line for line in err.splitlines() if "take over" in line or "took over" in line]
    assert len(notes) == 1 and "would take over 3 rows" in notes[0], err
    assert "email: 1 recipients" in out
    assert keys(tmp_path) == {"weekly": 3}


def test_upgrade_leaves_slug_rows_of_another_file_alone(tmp_path):
    earlier = weekly(tmp_path, "2024-01-06-weekly.md", "Python 潮流周刊#34")
    issue = weekly(tmp_path, "2024-06-10-weekly.md", "Python 潮流周刊#55")
    old_ledger(tmp_path, "weekly", {address: earlier.read_bytes() for address in ADDRESSES})
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES)
        status, out, err = run(settings, issue)
        assert status == 0, out + err
        assert received_by(server) == {address: 1 for address in ADDRESSES}
    assert keys(tmp_path) == {"weekly": 3, "2024-06-10-weekly": 3}
    assert "took over" not in err


def test_upgrade_refuses_slug_rows_of_several_versions_it_cannot_tell_apart(tmp_path):
    issue = weekly(tmp_path, "2024-06-10-weekly.md", "Python 潮流周刊#55")
    old_ledger(tmp_path, "weekly", {"a@example.org": b"another file", "b@example.org": issue.read_bytes()})
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES)
        result = cli(settings, "publish", str(issue), "--yes")
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert "permalink: weekly" in result.stderr and "permalink: /2024-06-10-weekly/" in result.stderr
        assert server.messages == []


# --- --title -----------------------------------------------------------------------------------------

HEADERLESS = "![封面](https://example.org/cover.png)\n\n## 序言\n\n本期没有标题行。\n"


def test_a_file_without_a_title_needs_title_and_gets_it(tmp_path):
    issue = tmp_path / "2024-07-10-sweekly.md"
    issue.write_text(HEADERLESS, encoding="utf-8")
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES)
        refused = cli(settings, "preview", str(issue), "--out", str(tmp_path / "p"))
        assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1
        assert f"{issue}:1:" in refused.stderr and "--title" in refused.stderr
        shown = cli(settings, "preview", str(issue), "--out", str(tmp_path / "p"), "--title", "Python 潮流周刊#58")
        assert shown.returncode == 0 and "Python 潮流周刊#58" in shown.stdout
        assert "序言" in (tmp_path / "p" / "email.html").read_text(encoding="utf-8")
        sent = cli(settings, "publish", str(issue), "--yes", "--title", "Python 潮流周刊#58")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert subjects(server) == ["Python 潮流周刊#58"] * len(ADDRESSES)
        status = cli(settings, "status", str(issue), "--title", "Python 潮流周刊#58")
        assert status.returncode == 0 and "2024-07-10-sweekly" in status.stdout


def test_a_title_with_a_line_break_is_refused(tmp_path):
    issue = tmp_path / "a.md"
    issue.write_text(HEADERLESS, encoding="utf-8")
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES)
        result = cli(settings, "publish", str(issue), "--yes", "--title", "T\r\nBcc: victim@evil.example")
        assert result.returncode == 2 and "--title" in result.stderr and "U+000D" in result.stderr
        assert server.messages == []


def test_schedule_add_stores_the_title_and_the_job_publishes_with_it(tmp_path):
    issue = tmp_path / "2024-07-10-sweekly.md"
    issue.write_text(HEADERLESS, encoding="utf-8")
    clock = Clock(shanghai("2026-12-03 20:00:00"))
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES, extra="schedule:\n  timezone: Asia/Shanghai\n")
        status, out, err = command(settings, "schedule", "add", str(issue), "--at", "2026-12-04 08:00",
                                   "--title", "Python 潮流周刊#58", now=clock)
        assert status == 0, out + err
        clock.set(shanghai("2026-12-04 08:00:30"))
        status, out, err = run_due(settings, clock)
        assert status == 0, out + err
        assert subjects(server) == ["Python 潮流周刊#58"] * len(ADDRESSES)


@pytest.mark.skipif(not SWEEKLY.exists(), reason=f"{SWEEKLY} not found")
def test_the_real_headerless_weekly_previews_with_title(tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text("site: {base_url: 'https://example.org'}\n", encoding="utf-8")
    refused = cli(settings, "preview", str(SWEEKLY), "--out", str(tmp_path / "p"))
    assert refused.returncode == 2 and "--title" in refused.stderr and len(refused.stderr.splitlines()) == 1
    shown = cli(settings, "preview", str(SWEEKLY), "--out", str(tmp_path / "p"), "--title", "Python 潮流周刊#60")
    assert shown.returncode == 0, shown.stderr
    assert "Python 潮流周刊#60" in (tmp_path / "p" / "email.html").read_text(encoding="utf-8")
