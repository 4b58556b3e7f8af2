"""What a message in the bounce mailbox reports: real bounces from many MTAs (tests/data/bounces, from
flufl.bounce's test data), RFC 3464 status codes mapped to hard, soft and policy, RFC 5965 complaints,
VERP, and hostile messages that must neither crash the reader nor invent a failure."""
from __future__ import annotations

from pathlib import Path

import pytest

from distributor.feedback.parse import parse_report

SAMPLES = Path(__file__).parent / "data" / "bounces"
SENDER = "bounces@example.org"

# file, the failures it reports (address, kind); the addresses as flufl.bounce's own tests expect them
REAL_BOUNCES = [
    ("postfix_01.txt", [("xxxxx@local.ie", "hard")]),
    ("postfix_04.txt", [("userx@mail1.example.com", "hard")]),
    ("exim_01.txt", [("userx@its.example.nl", "hard")]),
    ("qmail_01.txt", [("userx@example.de", "hard")]),
    ("sendmail_01.txt", [("zzzzz@nfg.nl", "hard"), ("zzzzz@shaft.coal.nl", "hard")]),
    ("microsoft_01.txt", [("userx@example.COM", "hard")]),
    ("groupwise_01.txt", [("userx@example.EDU", "hard")]),
    ("netscape_01.txt", [("aaaaa@corel.com", "hard"), ("bbbbb@corel.com", "hard")]),
    ("smtp32_01.txt", [("userx@example.ph", "hard")]),
    ("llnl_01.txt", [("user1@example.gov", "hard")]),
    ("yahoo_01.txt", [("userx@example.com", "hard")]),
    ("aol_01.txt", [("screenname@aol.com", "hard")]),
    ("dsn_01.txt", [("userx@example.com", "hard")]),
    ("dsn_09.txt", [("userx@example.com", "hard")]),
    ("dsn_05.txt", [("userx@example.cz", "soft")]),         # a delay: 4.4.1
    ("dsn_17.txt", [("userx@example.fi", "soft")]),
    ("simple_03.txt", [("userx@example.za", "soft")]),      # a warning, still trying
]


@pytest.mark.parametrize(("name", "expected"), REAL_BOUNCES, ids=[name for name, _ in REAL_BOUNCES])
def test_real_bounces_name_their_recipients(name: str, expected: list[tuple[str, str]]) -> None:
    report = parse_report((SAMPLES / name).read_bytes(), envelope_sender=SENDER)
    assert report is not None
    assert sorted((failure.address, failure.kind) for failure in report.failures) == expected


def test_a_message_no_detector_understands_is_not_a_report() -> None:
    assert parse_report((SAMPLES / "dumbass_01.txt").read_bytes(), envelope_sender=SENDER) is None


def dsn(status: str, *, action: str = "failed", recipient: str = "ana@example.net", to: str = SENDER) -> bytes:
    return (f"From: MAILER-DAEMON@mx.example.net\r\nTo: {to}\r\nSubject: Delivery Status Notification\r\n"
            f'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
            f"\r\n--B\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n"
            f"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
            f"Diagnostic-Code: smtp; 550 {status} the server's words\r\n\r\n"
            f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <issue.1@example.org>\r\n"
            f"To: {recipient}\r\n\r\n--B--\r\n").encode("utf-8")


@pytest.mark.parametrize(("status", "action", "kind"), [
    ("5.1.1", "failed", "hard"),          # unknown user
    ("5.1.10", "failed", "hard"),         # null MX (RFC 7505)
    ("5.0.0", "failed", "hard"),
    ("5.2.2", "failed", "soft"),          # mailbox full: may clear
    ("4.2.2", "delayed", "soft"),
    ("4.4.7", "failed", "soft"),          # gave up after retrying a temporary failure
    ("5.7.1", "failed", "policy"),        # refused by policy: about the sender
    ("5.7.26", "failed", "policy"),       # DMARC
    ("5.7.515", "failed", "policy"),      # Outlook.com's authentication rule
    ("4.7.0", "delayed", "policy"),       # rate or reputation
])
def test_status_codes_map_to_kinds(status: str, action: str, kind: str) -> None:
    report = parse_report(dsn(status, action=action), envelope_sender=SENDER)
    assert report is not None
    (failure,) = report.failures
    assert (failure.address, failure.kind, failure.status) == ("ana@example.net", kind, status)
    assert report.original_message_id == "<issue.1@example.org>"


def test_a_success_notice_is_not_a_bounce() -> None:
    assert parse_report(dsn("2.0.0", action="delivered"), envelope_sender=SENDER) is None


def test_the_verp_address_it_came_back_to_names_the_subscriber() -> None:
    report = parse_report(dsn("5.1.1", to="bounces+s-42_x@example.org"), envelope_sender=SENDER)
    assert report is not None and report.verp_id == "s-42_x"
    # another domain's or another local part's plus address is not ours
    for to in ("bounces+s1@example.com", "other+s1@example.org", "xbounces+s1@example.org"):
        other = parse_report(dsn("5.1.1", to=to), envelope_sender=SENDER)
        assert other is not None and other.verp_id is None, to


def complaint(feedback_type: str = "abuse", original_rcpt: str | None = None) -> bytes:
    rcpt = f"Original-Rcpt-To: {original_rcpt}\r\n" if original_rcpt else ""
    return (f"From: fbl@isp.example\r\nTo: abuse@example.org\r\nSubject: FW: the issue\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=feedback-report; boundary="A"\r\n\r\n'
            f"--A\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n"
            f"--A\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: {feedback_type}\r\n"
            f"User-Agent: SomeFBL/1.0\r\nVersion: 1\r\n{rcpt}\r\n"
            f"--A\r\nContent-Type: message/rfc822\r\n\r\nFrom: news@example.org\r\nTo: bo@example.net\r\n"
            f"Message-ID: <issue.2@example.org>\r\nSubject: the issue\r\n\r\nbody\r\n--A--\r\n").encode("utf-8")


def test_a_feedback_report_is_a_complaint_about_the_returned_recipient() -> None:
    report = parse_report(complaint(), envelope_sender=SENDER)
    assert report is not None
    (failure,) = report.failures
    assert (failure.address, failure.kind, failure.detail) == ("bo@example.net", "complaint", "abuse (SomeFBL/1.0)")
    assert report.original_message_id == "<issue.2@example.org>"
    named = parse_report(complaint(original_rcpt="<cy@example.net>"), envelope_sender=SENDER)
    assert named is not None and named.failures[0].address == "cy@example.net"


def test_a_feedback_report_that_is_not_a_complaint_reports_nothing() -> None:
    report = parse_report(complaint("not-spam"), envelope_sender=SENDER)
    assert report is None or report.failures == ()


def nested(depth: int) -> bytes:
    head = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth))
    tail = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    return b"From: x@example.net\r\nMIME-Version: 1.0\r\n" + head + b"Content-Type: text/plain\r\n\r\nhi" + tail


@pytest.mark.parametrize("raw", [
    b"",
    b"\x00\xff\xfe garbage \r\n\r\n\x80\x81",
    b"Subject: " + b"x" * 200_000 + b"\r\n\r\nbody",
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="never"\r\n\r\nno parts at all',
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n--B\r\n'
    b"Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; not an address\r\nAction: failed\r\n"
    b"Status: 5.1.1\r\n\r\n--B--\r\n",
    nested(200),
    b"From: x@example.net\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\npart\r\n" * 5000,
], ids=["empty", "binary", "huge-header", "no-parts", "bad-recipient", "deep-nesting", "many-parts"])
def test_hostile_messages_report_no_failure_with_an_address_that_is_not_one(raw: bytes) -> None:
    report = parse_report(raw, envelope_sender=SENDER)
    if report is not None:
        for failure in report.failures:
            assert failure.address is None or "@" in failure.address and " " not in failure.address
