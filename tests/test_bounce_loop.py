"""The whole loop: publish to the SMTP test server with VERP, a delivery status notification and a
complaint for two of the readers arrive in the bounce mailbox (a Maildir, and dovecot over IMAP),
`distributor bounces` reads them, and the next issue skips both readers."""
from __future__ import annotations

import io
import signal
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from distributor.cli import main
from distributor.ledger.store import Ledger

from .conftest import EXAMPLE
from .imap_server import imap_server
from .publish_helpers import configure, received_by, run_publish
from .smtp_server import FaultySmtpServer, ReceivedMessage
from .test_scheduler import start, wait_for

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")

SAMPLES = Path(__file__).parent / "data" / "bounces"
READERS = ["ana@example.net", "bo@example.net", "cy@example.net", "di@example.net"]


def returned_headers(received: ReceivedMessage) -> str:
    return received.data.split(b"\r\n\r\n", 1)[0].decode("ascii")


def delivery_status_notification(received: ReceivedMessage, status: str, diagnostic: str, *,
                                 final_recipient: str | None = None) -> bytes:
    """A bounce as Postfix writes one (RFC 3464): to the envelope sender, with the returned headers; the
    recipient named is `final_recipient` (a forwarded address) or the one mailed."""
    recipient = final_recipient or received.rcpt_tos[0]
    return (f"From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\nTo: {received.mail_from}\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn.{recipient}@mx.example.net>\r\n"
            f'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n'
            f' boundary="DSN"\r\n\r\n'
            f"--DSN\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could"
            f" not be delivered to {recipient}.\r\n"
            f"--DSN\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;{recipient}\r\n"
            f"Action: failed\r\nStatus: {status}\r\nDiagnostic-Code: smtp; {diagnostic}\r\n\r\n"
            f"--DSN\r\nContent-Type: text/rfc822-headers\r\n\r\n{returned_headers(received)}\r\n"
            f"--DSN--\r\n").encode("utf-8")


def complaint_report(received: ReceivedMessage) -> bytes:
    """A feedback report (RFC 5965) with the complainant's address redacted, as mailbox providers send."""
    redacted = "\r\n".join("To: redacted@example.net" if line.startswith("To:") else line
                            for line in returned_headers(received).split("\r\n"))
    return (f"From: feedback@fbl.example.net\r\nTo: abuse@example.org\r\n"
            f"Subject: complaint about message from 192.0.2.1\r\nMessage-ID: <arf.1@fbl.example.net>\r\n"
            f'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary="ARF"\r\n'
            f"\r\n--ARF\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
            f"--ARF\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
            f"User-Agent: ExampleFBL/1.0\r\nVersion: 1\r\nSource-IP: 192.0.2.1\r\n\r\n"
            f"--ARF\r\nContent-Type: text/rfc822-headers\r\n\r\n{redacted}\r\n--ARF--\r\n").encode("utf-8")


def for_recipient(server: FaultySmtpServer, address: str) -> ReceivedMessage:
    return next(message for message in server.messages if message.rcpt_tos == (address,))


def second_issue(tmp_path: Path) -> Path:
    """The bundled example under another key and title: the next issue."""
    text = EXAMPLE.read_text(encoding="utf-8").replace("permalink: /example-weekly-11-4th-2026/",
                                                       "permalink: /example-weekly-12-1st-2026/")
    text = text.replace("title: 示例周报·11 月 / 第四期 / 2026", "title: 示例周报·12 月 / 第一期 / 2026", 1)
    path = tmp_path / "2026-12-04-08-00-00-example-weekly-12-1st-2026.md"
    path.write_text(text, encoding="utf-8")
    return path


def cli(settings: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        status = main(["--settings", str(settings), *args])
    return status, out.getvalue()


def test_bounces_and_complaints_read_back_from_a_maildir_leave_out_their_readers(tmp_path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    extra = f"bounces:\n  maildir: {maildir}\n"
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, READERS, extra=extra)
        settings.write_text(settings.read_text(encoding="utf-8").replace(
            "    return_path: bounces@example.org\n", "    return_path: bounces@example.org\n    verp: true\n"),
            encoding="utf-8")
        status, out, _ = run_publish(settings)
        assert status == 0, out
        senders = {message.rcpt_tos[0]: message.mail_from for message in server.messages}
        with Ledger(tmp_path / "ledger.sqlite3") as ledger:
            assert senders == {address: f"bounces+{ledger.subscriber_id(address)}@example.org" for address in READERS}
        bounced, complained = READERS[0], READERS[1]
        # The DSN names the reader under a forwarded address: VERP and the returned Message-ID say whom.
        dsn = delivery_status_notification(for_recipient(server, bounced), "5.1.1",
                                           "550 5.1.1 <ana@mail.example.com>: Recipient address rejected: User unknown",
                                           final_recipient="ana@mail.example.com")
        (maildir / "new" / "1.dsn").write_bytes(dsn)
        (maildir / "new" / "2.arf").write_bytes(complaint_report(for_recipient(server, complained)))
        (maildir / "new" / "3.ooo").write_bytes(b"From: cy@example.net\r\nTo: bounces@example.org\r\n"
                                                b"Subject: Out of office\r\n\r\nI am away until Monday.\r\n")

        status, out = cli(settings, "bounces")
        assert status == 0, out
        assert "read 3 messages" in out and "1 hard bounces" in out and "1 complaints" in out, out
        assert f"suppressed: {bounced} (hard 5.1.1" in out and f"suppressed: {complained} (complaint" in out, out
        assert "left: 3.ooo" in out or "3.ooo" in out, out
        assert sorted(p.name for p in (maildir / "new").iterdir()) == ["3.ooo"]    # the auto-reply stays
        assert len(list((maildir / ".Processed").glob("*/*"))) == 2

        status, out = cli(settings, "bounces")         # a second reading finds nothing new
        assert "read 1 messages" in out and "0 hard bounces" in out, out

        status, out = cli(settings, "status", str(EXAMPLE))
        assert "1 hard bounces, 1 complaints (from the bounce mailbox)" in out, out
        status, out = cli(settings, "subscribers", "list", "--bounced")
        assert f"bounced    {bounced}" in out and f"complained {complained}" in out, out

        before = len(server.messages)
        status, out = cli(settings, "publish", str(second_issue(tmp_path)), "--yes")
        assert status == 0, out
        got = received_by(server)
        assert got[bounced] == 1 and got[complained] == 1          # only the first issue reached them
        assert len(server.messages) - before == len(READERS) - 2


def test_a_report_about_a_stranger_changes_nothing(tmp_path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, READERS, extra=f"bounces:\n  maildir: {maildir}\n")
        assert run_publish(settings)[0] == 0
        stranger = ReceivedMessage("bounces@example.org", ("zed@example.com",),
                                   b"Message-ID: <not-ours@example.com>\r\nTo: zed@example.com\r\n\r\nhi\r\n", 0)
        (maildir / "new" / "1.dsn").write_bytes(delivery_status_notification(stranger, "5.1.1", "550 5.1.1 unknown"))
        status, out = cli(settings, "bounces")
        assert "unknown: zed@example.com" in out, out
        with Ledger(tmp_path / "ledger.sqlite3") as ledger:
            assert not ledger.is_suppressed("zed@example.com")
            assert ledger.db.execute("SELECT count(*) FROM feedback").fetchone()[0] == 0



def test_the_worker_reads_the_mailbox_as_it_polls(tmp_path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, READERS, extra=f"bounces:\n  maildir: {maildir}\n")
        assert run_publish(settings)[0] == 0
        dsn = delivery_status_notification(for_recipient(server, READERS[2]), "5.1.10",
                                           "556 5.1.10 Recipient address has null MX")
        (maildir / "new" / "1.dsn").write_bytes(dsn)
        worker = start(settings, "worker")
        try:
            wait_for(lambda: not (maildir / "new" / "1.dsn").exists() or worker.poll() is not None, 30)
        finally:
            worker.send_signal(signal.SIGTERM)
            out, err = worker.communicate(timeout=20)
        assert worker.returncode == 0, err
        assert "reading the bounce mailbox every 5 minutes" in out, out
        assert f"suppressed: {READERS[2]} (hard 5.1.10" in out, out
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        assert ledger.is_suppressed(READERS[2])


def test_bounces_read_over_imap_from_dovecot_leave_out_their_readers(tmp_path, monkeypatch) -> None:
    with imap_server() as imap, FaultySmtpServer() as server:
        monkeypatch.setenv("IMAP_TEST_PASSWORD", imap.password)
        settings = configure(tmp_path, server, READERS, extra=f"bounces:\n{imap.settings_yaml(security='starttls')}")
        assert run_publish(settings)[0] == 0
        bounced, soft = READERS[0], READERS[1]
        imap.append(
            delivery_status_notification(for_recipient(server, bounced), "5.1.1", "550 5.1.1 User unknown"),
            delivery_status_notification(for_recipient(server, soft), "4.2.2", "452 4.2.2 Mailbox full"),
            *[(SAMPLES / name).read_bytes() for name in ("postfix_01.txt", "qmail_01.txt", "dumbass_01.txt")])

        status, out = cli(settings, "bounces")
        assert status == 0, out
        assert out.startswith(f"bounces: read 5 messages from imap://bounces@127.0.0.1:{imap.port}/INBOX: "
                              "1 hard bounces, 1 soft bounces"), out
        assert f"suppressed: {bounced} (hard 5.1.1" in out, out
        assert f"soft bounce: {soft} (1 within bounces.soft_bounce_days" in out, out
        assert "unknown: xxxxx@local.ie" in out and "unknown: userx@example.de" in out, out
        assert "left: 5: neither a bounce nor a complaint" in out, out
        assert imap.count("Processed") == 4 and imap.count("INBOX") == 1

        status, out = cli(settings, "bounces")        # only the message left is read again
        assert "read 1 messages" in out and "0 hard bounces" in out, out

        before = len(server.messages)
        assert cli(settings, "publish", str(second_issue(tmp_path)), "--yes")[0] == 0
        assert len(server.messages) - before == len(READERS) - 1     # the soft bounce is mailed still
        assert received_by(server)[bounced] == 1
