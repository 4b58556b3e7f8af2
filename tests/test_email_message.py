"""The per-recipient message: bytes as a mail reader decodes them, built from a template made once."""
from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy

import pytest

from distributor.channel import Recipient
from distributor.channels.email.settings import EmailSettings
from distributor.channels.mail.message import MessageParts, MessageTemplate
from distributor.errors import InputError
from distributor.models import NAME_PLACEHOLDER, UNSUBSCRIBE_PLACEHOLDER

DATE = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.timezone.utc)


def template(text: str, html: str | None, **settings) -> MessageTemplate:
    parts = MessageParts("/weekly-1/", "email", "泰晓资讯·第一期", text, html)
    return MessageTemplate(parts, EmailSettings(**settings), date=DATE)


@pytest.mark.parametrize("html", [
    "<p>短</p>" + f"<a href='{UNSUBSCRIBE_PLACEHOLDER}'>退订</a> {NAME_PLACEHOLDER}",                 # near the top
    "<p>" + "正文。" * 20000 + f"</p><p>{NAME_PLACEHOLDER}</p><a href='{UNSUBSCRIBE_PLACEHOLDER}'>x</a>",  # footer
    f"{NAME_PLACEHOLDER}" + "x" * 57 * 100 + f"{UNSUBSCRIBE_PLACEHOLDER}{NAME_PLACEHOLDER}",     # placeholders first
    "no placeholders at all " * 1000,
])
def test_parts_decode_to_the_filled_body_and_keep_76_column_base64(html):
    text = "正文\n" * 3000 + f"退订: {UNSUBSCRIBE_PLACEHOLDER}\n"
    wire = template(text, html).render(Recipient("a@example.org", "<Ann & Bob>"), "https://x.org/u/t?a=1&b=2")
    assert b"\r\n" in wire and b"\n" not in wire.replace(b"\r\n", b"")
    message = email.message_from_bytes(wire, policy=email.policy.default)
    plain, page = message.iter_parts()
    assert plain.get_content() == text.replace(UNSUBSCRIBE_PLACEHOLDER, "https://x.org/u/t?a=1&b=2")
    assert page.get_content() == html.replace(NAME_PLACEHOLDER, "&lt;Ann &amp; Bob&gt;").replace(
        UNSUBSCRIBE_PLACEHOLDER, "https://x.org/u/t?a=1&amp;b=2")
    body = wire.split(b"\r\n\r\n", 1)[1]
    base64_lines = [line for line in body.split(b"\r\n") if line and not line.startswith((b"--", b"Content-"))]
    assert all(len(line) <= 76 for line in base64_lines)
    assert not any(line.startswith(b".") for line in wire.split(b"\r\n"))
    assert base64.b64decode(b"".join(base64_lines[:1]))            # plain base64, no stray bytes


def test_text_only_message():
    wire = template(f"hello {NAME_PLACEHOLDER}\n", None).render(Recipient("a@example.org"), "https://x.org/u")
    message = email.message_from_bytes(wire, policy=email.policy.default)
    assert message.get_content_type() == "text/plain" and message.get_content() == "hello a@example.org\n"


def test_message_id_is_stable_per_recipient_and_differs_between_them():
    first, again = template("t", None), template("t", None)
    assert first.message_id("A@example.org") == again.message_id("a@example.org")
    assert first.message_id("a@example.org") != first.message_id("b@example.org")


@pytest.mark.parametrize("field, value", [("from_name", "Evil\r\nBcc: x@example.org"),
                                          ("reply_to", "a@example.org\nX-Injected: 1")])
def test_header_injection_is_refused(field, value):
    with pytest.raises(InputError, match="line break"):
        template("t", None, **{field: value})


def test_injection_through_the_subject_is_refused():
    parts = MessageParts("/k/", "email", "Title\r\nBcc: x@example.org", "t", None)
    with pytest.raises(InputError, match="subject"):
        MessageTemplate(parts, EmailSettings(), date=DATE)


def test_a_test_copy_message_id_differs_from_the_real_one_and_from_every_other_test_copy():
    made = template("t", None)
    real = made.message_id("a@example.org")
    copies = {made.test_copy_message_id() for _ in range(3)}
    assert len(copies) == 3 and real not in copies
    wire = made.render(Recipient("a@example.org"), "https://x.org/u", message_id=min(copies))
    assert email.message_from_bytes(wire, policy=email.policy.default)["Message-ID"] == min(copies)


@pytest.mark.parametrize(("reply_to", "header"), [
    ("编辑部 <editor@example.org>", b"Reply-To: =?utf-8?b?57yW6L6R6YOo?= <editor@example.org>\r\n"),
    ("editor@example.org", b"Reply-To: editor@example.org\r\n"),
    ('"Editors, Weekly" <editor@example.org>', b'Reply-To: "Editors, Weekly" <editor@example.org>\r\n'),
])
def test_reply_to_is_encoded_as_from_is(reply_to, header):
    wire = template("t", None, reply_to=reply_to).render(Recipient("a@example.org"), "https://x.org/u")
    head = wire.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    assert header in head
    head.decode("ascii")
