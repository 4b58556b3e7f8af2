"""Publishing the email and text channels to a real SMTP server on 127.0.0.1, faults included."""
from __future__ import annotations

import email
import email.policy
import io
import os
import subprocess
import sys
import time

import pytest

from distributor.audience import unsubscribe
from distributor.ledger.store import Ledger
from distributor.render.renditions import render_issue
from distributor.settings import load_settings

from .conftest import EXAMPLE, ROOT
from .publish_helpers import LONG_UNSUBSCRIBE, SECRET, cli, configure, ledger_rows, received_by, run_publish
from .smtp_server import FaultySmtpServer

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")


def test_faults_end_with_one_message_per_good_recipient(tmp_path):
    good = [f"good{i}@example.org" for i in range(6)]
    flaky, bounced, withheld, dropped = "flaky@example.org", "gone@example.org", "slow@example.org", "drop@example.org"
    with FaultySmtpServer(rcpt_replies={flaky: ["451 4.3.0 try again later"]},
                          rejected_recipients={bounced: "550 5.1.1 <gone@example.org>: no such user"},
                          withhold_after_dot={withheld: 2.0}, drop_on_data={dropped: 1}) as server:
        settings = configure(tmp_path, server, good + [flaky, bounced, withheld, dropped])
        status, out, _ = run_publish(settings)
        assert status == 1, out
        counts = received_by(server)
        assert all(counts.get(address) == 1 for address in good + [flaky, dropped]), counts
        assert bounced not in counts and withheld not in counts
        assert [m.rcpt_tos for m in server.withheld] == [(withheld,)]
        rows = ledger_rows(tmp_path)
        assert rows[bounced][0] == "failed" and "5.1.1" in rows[bounced][1]
        assert rows[withheld][0] == "uncertain"           # uncertain: maybe delivered, never resent
        assert {rows[a][0] for a in good + [flaky, dropped]} == {"sent"}

        # A second run sends nothing: sent rows stay sent, the bounce is suppressed, the uncertain one waits.
        status, out, _ = run_publish(settings)
        assert len(server.messages) == len(good) + 2 and len(server.withheld) == 1
        assert Ledger(tmp_path / "ledger.sqlite3").is_suppressed(bounced)


def test_headers_and_body_as_received(tmp_path):
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ["reader@example.org"])
        assert run_publish(settings)[0] == 0
    (received,) = server.messages
    assert received.mail_from == "bounces@example.org"
    assert all(line.endswith(b"\r") or not line for line in received.data.split(b"\n")[:-1])
    assert max(len(line) for line in received.data.split(b"\r\n")) <= 998
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    rendition = render_issue(EXAMPLE, load_settings(settings))["email"]
    assert message["Subject"] == rendition.subject
    assert message["From"].addresses[0].display_name == "示例周报"
    assert message["Reply-To"] == "editors@example.org"
    assert message["List-Id"] == "<weekly.example.org>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    raw_header = received.data.split(b"\r\n\r\n")[0].decode()
    url = raw_header.split("List-Unsubscribe: <", 1)[1].split(">", 1)[0]
    assert len(url) > 200 and url.startswith(LONG_UNSUBSCRIBE.split("{")[0])
    token = url.rsplit("/", 1)[1]
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    assert ledger.address_for(unsubscribe.verify(token, SECRET)) == "reader@example.org"
    assert unsubscribe.verify(token[:-1], SECRET) is None
    text, html = (part.get_content() for part in message.iter_parts())
    assert text == rendition.text.replace("%%UNSUBSCRIBE_URL%%", url)
    assert html == rendition.html.replace("%%UNSUBSCRIBE_URL%%", url).replace("%%RECIPIENT_NAME%%", "Reader 0")
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith("@example.org>")


def test_name_is_escaped_in_html(tmp_path):
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, [])
        (tmp_path / "subscribers.csv").write_text('email,name\nx@example.org,"<script>alert(1)</script>"\n')
        assert run_publish(settings)[0] == 0
    message = email.message_from_bytes(server.messages[0].data, policy=email.policy.default)
    text, html = (part.get_content() for part in message.iter_parts())
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_auth_refused_stops_with_rows_untouched(tmp_path, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", "wrong-password")
    with FaultySmtpServer(username="user", password="right-password") as server:
        settings = configure(tmp_path, server, ["a@example.org", "b@example.org"], smtp_extra="  username: user")
        status, out, err = run_publish(settings)
    assert status == 3 and "stopped" in out and "wrong-password" not in out + err
    assert server.messages == []
    assert {row[0] for row in ledger_rows(tmp_path).values()} == {"pending"}


def test_bad_subscriber_rows_skipped_with_line_numbers(tmp_path):
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, [])
        (tmp_path / "subscribers.csv").write_text(
            "email,name\nok@example.org,A\nnot-an-address,B\nOK@example.org,C\nsecond@example.org,D\n")
        status, _, err = run_publish(settings)
    assert status == 0
    assert "subscribers.csv:3: invalid address 'not-an-address'" in err
    assert "subscribers.csv:4: duplicate address OK@example.org" in err
    assert sorted(received_by(server)) == ["ok@example.org", "second@example.org"]


def test_subscriber_file_without_email_column_sends_nothing(tmp_path):
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, [])
        (tmp_path / "subscribers.csv").write_text("address,name\nok@example.org,A\n")
        result = subprocess.run([sys.executable, "-m", "distributor", "--settings", str(settings), "publish",
                                 str(EXAMPLE), "--yes"], capture_output=True, text=True, timeout=60,
                                cwd=ROOT, env={**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": SECRET})
    assert result.returncode == 2 and "no 'email' column" in result.stderr
    assert server.connections_opened == 0


def test_test_copy_goes_outside_the_ledger(tmp_path):
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ["a@example.org"])
        status, out, _ = run_publish(settings, to="editor@example.org")
    assert status == 0 and received_by(server) == {"editor@example.org": 1}
    assert not (tmp_path / "ledger.sqlite3").exists() or ledger_rows(tmp_path) == {}


def test_text_channel_sends_plain_text_and_writes_file(tmp_path):
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, [], extra="")
        text_list = tmp_path / "text.csv"
        text_list.write_text("email\nlist@example.org\n")
        content = settings.read_text().replace(
            "text: {enabled: false}", f"text: {{subscribers: {text_list}, output_dir: {tmp_path / 'archive'}}}")
        settings.write_text(content.replace(f"subscribers: {tmp_path / 'subscribers.csv'}", "enabled: false"))
        status, out, _ = run_publish(settings)
    assert status == 0, out
    message = email.message_from_bytes(server.messages[0].data, policy=email.policy.default)
    assert message.get_content_type() == "text/plain" and message["List-Unsubscribe"]
    archived = (tmp_path / "archive" / "example-weekly-11-4th-2026.txt").read_text(encoding="utf-8")
    assert archived.startswith("示例周报") and "%%" not in archived


def test_killed_run_resumes_without_double_sends(tmp_path):
    addresses = [f"r{i:03d}@example.org" for i in range(60)]
    with FaultySmtpServer(command_delay_seconds=0.01) as server:
        settings = configure(tmp_path, server, addresses)
        command = [sys.executable, "-m", "distributor", "--settings", str(settings), "publish", str(EXAMPLE), "--yes"]
        environment = {**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": SECRET}
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while len(server.messages) < 15 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        process.kill()
        process.wait(timeout=10)
        assert 0 < len(server.messages) < len(addresses), "the kill must land half way"
        subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, timeout=60)
        counts = received_by(server)
    rows = ledger_rows(tmp_path)
    uncertain = {address for address, row in rows.items() if row[0] == "uncertain"}
    assert all(counts.get(address, 0) == 1 for address in addresses if address not in uncertain), counts
    assert all(counts.get(address, 0) <= 1 for address in uncertain)
    assert {row[0] for address, row in rows.items() if address not in uncertain} == {"sent"}


def test_status_lists_who_did_not_get_it(tmp_path):
    import csv
    import json
    bounced = "gone@example.org"
    with FaultySmtpServer(rejected_recipients={bounced: "550 5.1.1 no such user"}) as server:
        settings = configure(tmp_path, server, ["a@example.org", bounced])
        assert run_publish(settings)[0] == 1
    report = json.loads(cli(settings, "status", str(EXAMPLE), "--json").stdout)
    assert report["counts"] == {"email": {"sent": 1, "failed": 1}}
    assert [(p["recipient"], p["state"]) for p in report["problems"]] == [(bounced, "failed")]
    assert "5.1.1" in report["problems"][0]["reply"]
    rows = list(csv.DictReader(io.StringIO(cli(settings, "status", str(EXAMPLE), "--csv").stdout)))
    assert [(row["recipient"], row["state"]) for row in rows] == [(bounced, "failed")]
    table = cli(settings, "status", str(EXAMPLE)).stdout
    assert "email: 1 sent, 1 failed" in table and bounced in table


@pytest.mark.parametrize("password, status, expected", [("right", 0, "authenticated as user"),
                                                         ("wrong", 1, "535")])
def test_check_logs_in_without_sending(tmp_path, password, status, expected):
    with FaultySmtpServer(username="user", password="right") as server:
        settings = configure(tmp_path, server, [], smtp_extra="  username: user")
        result = cli(settings, "check", password=password)
    assert result.returncode == status and expected in result.stdout
    assert server.messages == [] and password not in result.stdout + result.stderr.replace("right", "")
