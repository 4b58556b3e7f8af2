"""A real relay's limits, through the real CLI and the aiosmtpd test server: connection limits, a refused
login, a private CA, the EHLO name, test copies, an encoded Reply-To, and what SpamAssassin makes of the mail."""
from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import EXAMPLE, ROOT
from .publish_helpers import cli, configure, ledger_rows, received_by
from .smtp_server import FaultySmtpServer
from .test_smtp_transport import write_self_signed

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")

PASSWORD = "s3cret-Pa55word"
READERS = [f"reader{n}@example.org" for n in range(12)]


def publish(settings: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    return cli(settings, "publish", str(EXAMPLE), "--channel", "email", "--yes", *args, password=password)


def with_smtp(settings: Path, **values: object) -> Path:
    """Rewrite keys of the `smtp:` block that `configure` wrote."""
    text = settings.read_text(encoding="utf-8")
    for key, value in values.items():
        text, count = re.subn(rf"(?m)^  {key}: .*$", f"  {key}: {value}", text)
        if not count:
            text = text.replace("\nsmtp:\n", f"\nsmtp:\n  {key}: {value}\n", 1)
    settings.write_text(text, encoding="utf-8")
    return settings


def test_a_relay_allowing_two_connections_gets_the_whole_issue_over_those_two(tmp_path: Path) -> None:
    with FaultySmtpServer(max_connections=2) as server:
        settings = with_smtp(configure(tmp_path, server, READERS), pool_size=5)
        result = publish(settings)
        assert result.returncode == 0, result.stderr
        assert server.refused_connections == 3
        assert received_by(server) == {address: 1 for address in READERS}
        assert len({m.connection for m in server.messages}) == 2
    assert "Traceback" not in result.stderr


def test_a_relay_accepting_no_connection_stops_the_run_cleanly(tmp_path: Path) -> None:
    with FaultySmtpServer(greeting="421 4.7.0 too many connections") as server:
        result = publish(with_smtp(configure(tmp_path, server, READERS), pool_size=5))
        assert server.messages == []
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and "accepted no connection" in result.stdout + result.stderr


def test_a_wrong_password_is_tried_once_per_mechanism_and_stops_the_run(tmp_path: Path) -> None:
    with FaultySmtpServer(username="sender", password="right-password") as server:
        settings = with_smtp(configure(tmp_path, server, READERS), pool_size=5, username="sender")
        result = publish(settings, password=PASSWORD)
        attempts = server.auth_attempts
        assert server.messages == []
    assert result.returncode == 3, result.stderr
    assert 1 <= attempts <= 2      # the server offers PLAIN and LOGIN
    assert PASSWORD not in result.stdout + result.stderr
    assert {row[0] for row in ledger_rows(tmp_path).values()} == {"pending"}


def test_a_private_ca_is_trusted_through_smtp_ca_file(tmp_path: Path) -> None:
    cert_path, key_path = write_self_signed(tmp_path, ips=("127.0.0.1",))
    with FaultySmtpServer(tls="starttls", certificate=(cert_path, key_path)) as server:
        settings = with_smtp(configure(tmp_path, server, READERS[:2]), security="starttls")
        refused = publish(settings)
        assert server.messages == []
        trusted = publish(with_smtp(settings, ca_file=str(cert_path)))
        assert received_by(server) == {address: 1 for address in READERS[:2]}
    assert refused.returncode == 3 and "self-signed certificate" in refused.stdout + refused.stderr
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr


@pytest.mark.parametrize(("ca_file", "reason"), [("missing.pem", "cannot be read"),
                                               ("not-a-certificate.pem", "holds no PEM certificate"),
                                               ("/dev/zero", "is not a regular file")])
def test_an_unusable_ca_file_is_bad_input(tmp_path: Path, ca_file: str, reason: str) -> None:
    (tmp_path / "not-a-certificate.pem").write_text("hello\n", encoding="utf-8")
    with FaultySmtpServer() as server:
        path = ca_file if ca_file.startswith("/") else str(tmp_path / ca_file)
        result = publish(with_smtp(configure(tmp_path, server, READERS[:1]), ca_file=path))
        assert server.connections_opened == 0
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and f"smtp.ca_file: {path} {reason}" in result.stderr


def test_the_ehlo_name_comes_from_smtp_ehlo_name(tmp_path: Path) -> None:
    with FaultySmtpServer() as server:
        settings = with_smtp(configure(tmp_path, server, READERS[:3]), ehlo_name="mail.example.org")
        result = publish(settings)
        names = server.ehlo_names
    assert result.returncode == 0, result.stderr
    assert names and set(names) == {"mail.example.org"}


def test_a_bad_ehlo_name_is_bad_input(tmp_path: Path) -> None:
    with FaultySmtpServer() as server:
        result = publish(with_smtp(configure(tmp_path, server, READERS[:1]), ehlo_name='"bad name"'))
        assert server.connections_opened == 0
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "ehlo_name" in result.stderr


def message_ids(server: FaultySmtpServer) -> list[str]:
    return [email.message_from_bytes(m.data, policy=email.policy.default)["Message-ID"] for m in server.messages]


def test_a_test_copy_has_its_own_message_id(tmp_path: Path) -> None:
    editor = READERS[0]
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, READERS[:2])
        first, second = publish(settings, "--to", editor), publish(settings, "--to", editor)
        real = publish(settings)
        ids = message_ids(server)
        recipients = [m.rcpt_tos for m in server.messages]
    assert (first.returncode, second.returncode, real.returncode) == (0, 0, 0), real.stderr
    assert recipients.count((editor,)) == 3
    editor_ids = [i for i, r in zip(ids, recipients, strict=True) if r == (editor,)]
    assert len(set(editor_ids)) == 3           # two test copies and the real one, all different
    assert all(re.fullmatch(r"<[^<>@\s]+@example\.org>", i) for i in ids)


def test_a_non_ascii_reply_to_name_is_encoded_as_from_is(tmp_path: Path) -> None:
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, READERS[:1])
        text = settings.read_text(encoding="utf-8").replace("reply_to: editors@example.org",
                                                            'reply_to: "编辑部 <editor@example.org>"')
        settings.write_text(text, encoding="utf-8")
        result = publish(settings)
        [received] = server.messages
    assert result.returncode == 0, result.stderr
    head = received.data.split(b"\r\n\r\n", 1)[0]
    head.decode("ascii")                         # every header byte is ASCII
    [reply_to] = [line for line in head.split(b"\r\n") if line.startswith(b"Reply-To:")]
    assert reply_to == b"Reply-To: =?utf-8?b?57yW6L6R6YOo?= <editor@example.org>"
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert str(message["Reply-To"]) == "编辑部 <editor@example.org>"


SPAMASSASSIN = shutil.which("spamassassin")


@pytest.mark.skipif(SPAMASSASSIN is None,
                    reason="spamassassin is not installed (scripts/bootstrap.sh test installs it)")
def test_spamassassin_finds_no_low_contrast_text_in_the_email(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "DISTRIBUTOR_SETTINGS"}
    preview = subprocess.run([sys.executable, "-m", "distributor", "preview", str(EXAMPLE), "--channel", "email",
                              "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60,
                             cwd=ROOT, env=environment)
    assert preview.returncode == 0, preview.stderr
    eml = (tmp_path / "out" / "email.eml").read_bytes()
    home = tmp_path / "home"
    home.mkdir()
    report = subprocess.run([SPAMASSASSIN, "-L", "-t"], input=eml, capture_output=True, timeout=120,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)})
    assert report.returncode in (0, 1), report.stderr.decode(errors="replace")
    details = report.stdout.decode("utf-8", errors="replace").split("Content analysis details:")[-1]
    hits = re.findall(r"(?m)^\s*-?\d+\.\d+\s+([A-Z0-9_]+)\s", details)
    assert "HTML_MESSAGE" in hits                 # the report was read: the HTML part was seen
    assert "HTML_FONT_LOW_CONTRAST" not in hits, details
