"""The decisions of a double opt-in signup, and the confirmation mail.

`decide` says what a signup POST does to a reader, from what the store holds of them: whether their
status on the list becomes `unconfirmed` and whether a confirmation mail is queued. It never says
anything the form's answer could show: the page is the same whatever it decides, so that the form
does not tell strangers who is subscribed. Nor may what one POST decides show in the next: every
accepted POST costs its client one of `signup.requests_per_client_per_day`, whatever it decided, and a
client past that budget has nothing recorded at all.

A confirmation lifts only a suppression the reader made (`standing.READER_SOURCES`); a bounce, a
complaint or the publisher's command blocks the signup, and no mail is sent.

The confirmation mail is rendered from `signup/confirm.txt` and `signup/confirm.html` (the publisher's
template folder first) and carries the link `<public_url>confirm/<token>`.
"""
from __future__ import annotations

import base64
import email.utils
import functools
import ipaddress
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from distributor.audience import tokens
from distributor.audience.standing import READER_SOURCES
from distributor.render.templating import render_template
from distributor.settings import Settings

Outcome = Literal["mail", "active", "refused", "address_limit", "client_limit"]
DAY_SECONDS = 24 * 3600.0       # the window of the limits: mails to an address, POSTs of a client
_UNSUBSCRIBE_PLACEHOLDER = re.compile(r"(https?://[^/?#]+/(?:[^?#]*/)?)unsubscribe/\{token\}")
_WORD_BYTES = 39                # 52 base64 characters: "Subject: " and one encoded word fit 76
_IPV6_CLIENT_PREFIX = 64        # one IPv6 client usually holds a whole /64
_WORDS = {
    "zh": {"subject": "请确认订阅 {site}（{list}）", "greeting": "你好，",
           "body": "有人（希望是你）用这个地址订阅了 {site} 的列表「{list}」。请打开下面的链接确认订阅：",
           "expires": "链接在 {hours} 小时内有效。如果不是你订阅的，请忽略这封邮件，你不会收到任何邮件。",
           "button": "确认订阅"},
    "en": {"subject": "Confirm your subscription to {site} ({list})", "greeting": "Hello,",
           "body": "Someone, hopefully you, subscribed this address to the list “{list}” of {site}. Open the "
                   "link below to confirm:",
           "expires": "The link works for {hours} hours. If it was not you, ignore this mail: you will receive "
                      "nothing.",
           "button": "Confirm subscription"},
}


@dataclass(frozen=True)
class Standing:
    """What the store holds of an address when it signs up to a list."""

    status: str | None                  # on the list; None when not on it (or a new reader)
    suppression: str | None             # the source of the address's suppression, if suppressed
    mails_to_address: int               # confirmation mails queued to it in the last 24 hours
    requests_from_client: int           # signup POSTs the client that posted the form made in that time


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    mark_unconfirmed: bool              # put the address on the list as `unconfirmed` (source `signup`)

    @property
    def mail(self) -> bool:
        return self.outcome == "mail"

    @property
    def recorded(self) -> bool:
        """Whether the POST is recorded at all (the request, the client's count): not past its budget."""
        return self.outcome != "client_limit"


def blocked(suppression: str | None, status: str | None) -> bool:
    """Whether a signup to a list on which the reader has `status`, with a suppression from `suppression`,
    can never be confirmed: the mailbox refused mail or the publisher stopped it."""
    return (suppression is not None and suppression not in READER_SOURCES) or status in ("bounced", "complained")


def decide(standing: Standing, settings: Settings) -> Decision:
    """Say what a signup does. A client past `signup.requests_per_client_per_day` POSTs in 24 hours gets
    nothing done, before anything about the address is looked at. Otherwise a new or unconfirmed
    address becomes (stays) `unconfirmed`, and a confirmation mail goes out unless the reader is
    active already, the signup is `blocked`, or the address had `signup.mails_per_address_per_day`
    mails. An unsubscribed reader is mailed (they may be asking back) and stays unsubscribed until
    they confirm."""
    limits = settings.signup
    if standing.requests_from_client >= limits.requests_per_client_per_day:
        return Decision("client_limit", False)
    if blocked(standing.suppression, standing.status):
        return Decision("refused", False)
    mark = standing.status in (None, "unconfirmed")
    if standing.status == "active" and standing.suppression is None:
        return Decision("active", mark)
    if standing.mails_to_address >= limits.mails_per_address_per_day:
        return Decision("address_limit", mark)
    return Decision("mail", mark)


def public_url(settings: Settings) -> str | None:
    """Return where readers reach `distributor serve`: `signup.public_url`, else the origin and folder
    of `channels.email.unsubscribe_url` before its `unsubscribe/{token}`; None when neither says."""
    if settings.signup.public_url:
        return settings.signup.public_url
    match = _UNSUBSCRIBE_PLACEHOLDER.fullmatch(settings.channels.email.unsubscribe_url)
    return match[1] if match else None


def client_key(secret: str, client: str) -> str:
    """Return the key a client's mails are counted under: a keyed hash of its IP address (of its /64
    for IPv6, where one client holds many addresses), never the address itself."""
    address = ipaddress.ip_address(client)
    if address.version == 6:
        client = str(ipaddress.ip_network(f"{address}/{_IPV6_CLIENT_PREFIX}", strict=False))
    return tokens.keyed_hash(secret, "client", client)


def consent_client(secret: str, client: str, settings: Settings) -> str | None:
    """Return what the consent record keeps of the client (`signup.client_address`): a keyed hash
    of its IP address, the address, or nothing."""
    mode = settings.signup.client_address
    if mode == "full":
        return client
    return tokens.keyed_hash(secret, "client", client) if mode == "hash" else None


def confirm_token(secret: str, subscriber_id: str, list_name: str, nonce: str, *, issued_at: float,
                  settings: Settings) -> str:
    """Return the confirmation link's token: the reader's id, the list and the nonce of the one consent
    request it confirms, for `signup.confirm_hours`."""
    return tokens.sign("confirm", (subscriber_id, list_name, nonce), secret, issued_at=issued_at,
                       lifetime_seconds=settings.signup.confirm_hours * 3600)


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def confirmation_message(settings: Settings, *, to_address: str, list_name: str, language: str, link: str) -> bytes:
    """Return the confirmation mail (text and HTML) from the newsletter's sender to the address. It
    holds no text a stranger typed: anyone may post any address, so the name from the form is kept in
    the store only, and the mail greets no one by name. Every value in a header was checked where it
    entered (settings, the form): one line, no control characters."""
    words = _WORDS[language if language in _WORDS else "en"]
    sender = settings.channels.email
    site = settings.site.name
    hours = f"{settings.signup.confirm_hours:g}"
    context = {
        "language": language, "site_name": site, "list_name": list_name, "link": link, "hours": hours,
        "greeting": words["greeting"],
        "body": words["body"].format(site=site, list=list_name), "button": words["button"],
        "expires": words["expires"].format(hours=hours),
    }
    sender_domain = sender.from_address.rpartition("@")[2] or None
    headers = [
        ("From", email.utils.formataddr((sender.from_name, sender.from_address))),
        ("To", to_address),
        ("Subject", encoded_words(words["subject"].format(site=site, list=list_name))),
        ("Date", email.utils.formatdate(localtime=False, usegmt=True)),
        ("Message-ID", email.utils.make_msgid(domain=sender_domain)),
        ("Auto-Submitted", "auto-generated"),
        *((("Reply-To", sender.reply_to),) if sender.reply_to else ()),
    ]
    return _multipart(headers, render_template(settings, "signup/confirm.txt", **context),
                      render_template(settings, "signup/confirm.html", **context))


@functools.lru_cache(maxsize=64)
def encoded_words(text: str) -> str:
    """Return header text as it is when ASCII, else as RFC 2047 base64 encoded words of at most
    _WORD_BYTES bytes each (never splitting a character), one per folded line. The email package's
    Header does the same several hundred times slower for CJK text; a subject repeats, so it is cached."""
    if text.isascii():
        return text
    words, chunk = [], b""
    for character in text:
        encoded = character.encode("utf-8")
        if len(chunk) + len(encoded) > _WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(word).decode('ascii')}?=" for word in words)


def _multipart(headers: list[tuple[str, str]], text: str, html: str) -> bytes:
    """Write a multipart/alternative message of `text` and `html`, each UTF-8 in base64, with CRLF line
    ends. Written by hand (as the newsletter's MessageTemplate is): the email package's generator costs
    most of a signup POST, and base64 lines need no folding, dot-stuffing or line-ending pass."""
    boundary = f"=_{secrets.token_hex(16)}"
    lines = [f"{name}: {value}" for name, value in headers]
    lines += ["MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{boundary}"', ""]
    for subtype, body in (("plain", text), ("html", html)):
        lines += [f"--{boundary}", f'Content-Type: text/{subtype}; charset="utf-8"',
                  "Content-Transfer-Encoding: base64", "",
                  base64.encodebytes(body.encode("utf-8")).decode("ascii").rstrip("\n")]
    lines += [f"--{boundary}--", ""]
    return "\r\n".join(lines).replace("\n", "\r\n").replace("\r\r\n", "\r\n").encode("ascii")


def envelope_sender(settings: Settings) -> str:
    return settings.channels.email.return_path or settings.channels.email.from_address
