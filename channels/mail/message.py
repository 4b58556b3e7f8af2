"""Build each recipient's message as wire bytes from a template prepared once per issue.

Everything that is the same for every recipient (headers, MIME structure, the bodies split at
their placeholders) is prepared once. Per recipient we fill two short values, encode each part
in base64 and join bytes. Base64 lines never start with a dot nor hold a bare LF, and headers
are written with CRLF by hand, so the result needs no dot-stuffing or line-ending pass before
SMTP. Headers are written, not folded by the email package, so a long List-Unsubscribe URL
reaches the receiver whole.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import secrets
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr

from distributor.channel import Recipient
from distributor.channels.email.settings import EmailSettings
from distributor.channels.mail.dkim import DkimSigner, parse_headers
from distributor.errors import InputError
from distributor.models import NAME_PLACEHOLDER, UNSUBSCRIBE_PLACEHOLDER

_CRLF = b"\r\n"
_MAX_HEADER_LINE = 998
_BASE64_LINE_BYTES = 57   # what one 76-character line of base64 holds


@dataclass(frozen=True)
class MessageParts:
    """What the message says, independent of who receives it."""

    issue_key: str
    channel: str
    subject: str
    text: str
    html: str | None          # None: a text/plain-only message


class MessageTemplate:
    """Prepare the message once per issue, then render it per recipient with `render()`."""

    def __init__(self, parts: MessageParts, settings: EmailSettings, *, date: dt.datetime,
                 signer: DkimSigner | None = None):
        for what, value in (("subject", parts.subject), ("from_name", settings.from_name),
                            ("from_address", settings.from_address), ("list_id", settings.list_id),
                            ("reply_to", settings.reply_to or "")):
            require_single_line(value, what)
        self.parts = parts
        self.domain = settings.from_address.rpartition("@")[2] or "localhost"
        self.mailto = settings.unsubscribe_mailto
        self.envelope_from = settings.return_path or settings.from_address
        self.verp = settings.verp
        self._boundary = "=_" + hashlib.sha256(f"{parts.issue_key}|{parts.channel}".encode()).hexdigest()[:32]
        self._head = _header_block(parts, settings, date)
        self._text = _EncodedBody(parts.text)
        self._html = _EncodedBody(parts.html) if parts.html is not None else None
        # The body up to the end of the text part's head is the same for every recipient.
        self._prefix = self._text.head if self._html is None else \
            b"--" + self._boundary.encode() + _CRLF + _part_head(b"text/plain") + self._text.head
        self._content_type = (b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n'
                              if self._html is None else
                              b'Content-Type: multipart/alternative; boundary="' + self._boundary.encode() + b'"\r\n')
        self._signer = signer
        if signer is not None:
            # What the signatures cover of it is hashed once: the headers every recipient's mail shares,
            # and the body up to the shared prefix's end; each mail copies both states and goes on.
            self._signed_head = signer.head(parse_headers(self._head + self._content_type))
            self._body_hash = signer.body_hash(self._prefix)

    def message_id(self, address: str) -> str:
        """Return the Message-ID for `address`: the same on every attempt, so duplicates show."""
        digest = hashlib.sha256(f"{self.parts.issue_key}|{self.parts.channel}|{address.lower()}".encode())
        return f"<{digest.hexdigest()[:40]}@{self.domain}>"

    def envelope_sender(self, recipient: Recipient) -> str:
        """Return the envelope sender (Return-Path) for `recipient`: with VERP, `local+<subscriber id>@domain`
        of the envelope sender, so that a bounce to it names the subscriber whatever its report says."""
        if not self.verp or not recipient.subscriber_id:
            return self.envelope_from
        local, _, domain = self.envelope_from.rpartition("@")
        return f"{local}+{recipient.subscriber_id}@{domain}"

    def test_copy_message_id(self) -> str:
        """Return a fresh Message-ID for a test copy (`publish --to`). It must differ from the real copy's:
        a mailbox that hides duplicates by Message-ID (Gmail) would otherwise drop the issue itself."""
        digest = hashlib.sha256(f"{self.parts.issue_key}|{self.parts.channel}".encode()).hexdigest()[:24]
        return f"<test.{secrets.token_hex(8)}.{digest}@{self.domain}>"

    def render(self, recipient: Recipient, unsubscribe_url: str, *, message_id: str | None = None) -> bytes:
        """Return the complete message for one recipient as SMTP-ready bytes (CRLF, no dot-stuffing needed),
        signed when the template signs; its Message-ID is `message_id`, or the recipient's own stable one."""
        require_single_line(recipient.address, "recipient address")
        require_single_line(unsubscribe_url, "unsubscribe URL")
        shown_name = recipient.name or recipient.address
        own = b"".join((
            _line("To", recipient.address),
            _line("Message-ID", message_id or self.message_id(recipient.address)),
            _list_unsubscribe(unsubscribe_url, self.mailto),
        ))
        text_tail = self._text.encode_tail(shown_name, unsubscribe_url)
        if self._html is None:
            rest = text_tail
        else:
            page = self._html.encode(html.escape(shown_name), html.escape(unsubscribe_url))
            boundary = self._boundary.encode()
            rest = b"".join((text_tail, b"--", boundary, _CRLF, _part_head(b"text/html"), page,
                             b"--", boundary, b"--", _CRLF))
        message = b"".join((self._head, own, self._content_type, _CRLF, self._prefix, rest))
        if self._signer is None:
            return message
        body_hash = self._body_hash.copy()
        body_hash.update(rest)
        return self._signer.sign(self._signed_head, parse_headers(own), body_hash.digest()) + message


def require_single_line(value: str, what: str) -> None:
    """Refuse a header value holding a line break: it would let the value write headers of its own."""
    if "\r" in value or "\n" in value:
        raise InputError(f"{what} contains a line break, which is not allowed in a mail header")


def _header_block(parts: MessageParts, settings: EmailSettings, date: dt.datetime) -> bytes:
    subject = Header(parts.subject, "utf-8", header_name="Subject").encode(linesep="\r\n")
    lines = [
        _line("From", formataddr((settings.from_name, settings.from_address), charset="utf-8")),
        b"Subject: " + subject.encode("ascii") + _CRLF,
        _line("Date", format_datetime(date)),
        _line("MIME-Version", "1.0"),
        _line("List-Id", f"<{settings.list_id}>"),
        _line("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]
    if settings.reply_to:
        # Settings checked it is one address, bare or `Name <address>`; encoded as From is, a display name
        # outside ASCII becomes an RFC 2047 encoded word.
        lines.append(_line("Reply-To", formataddr(parseaddr(settings.reply_to), charset="utf-8")))
    return b"".join(lines)


def _list_unsubscribe(url: str, mailto: str | None) -> bytes:
    # One item per line, so that only the line break between items ever folds the header.
    items = [f"<{url}>"] + ([f"<mailto:{mailto}?subject=unsubscribe>"] if mailto else [])
    value = ",\r\n ".join(items)
    if any(len(item) + 20 > _MAX_HEADER_LINE for item in items):
        raise InputError("unsubscribe URL is too long for a mail header line")
    return _line("List-Unsubscribe", value)


def _line(name: str, value: str) -> bytes:
    return f"{name}: {value}".encode("utf-8") + _CRLF


def _part_head(mime: bytes) -> bytes:
    return b"Content-Type: " + mime + b'; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'


class _EncodedBody:
    """A body in base64, most of it encoded once: base64 turns each 57 bytes into one 76-character
    line, so everything before the first placeholder, cut at a multiple of 57 bytes, encodes the
    same for every recipient. Only the rest, from there to the end, is filled and encoded per
    recipient (the templates keep the placeholders in the footer, so that rest is short)."""

    def __init__(self, body: str):
        pieces = _split(body)
        cut = len(pieces[0]) - len(pieces[0]) % _BASE64_LINE_BYTES
        self.head = _base64(pieces[0][:cut])
        self.tail = [pieces[0][cut:], *pieces[1:]]

    def encode(self, name: str, unsubscribe_url: str) -> bytes:
        """Return the body with both values filled in, as base64 lines ending in CRLF."""
        return self.head + self.encode_tail(name, unsubscribe_url)

    def encode_tail(self, name: str, unsubscribe_url: str) -> bytes:
        """Return the part of the body after `head`, with both values filled in."""
        return _base64(_fill(self.tail, name, unsubscribe_url))


def _split(body: str) -> list[bytes]:
    """Split a body at its placeholders: [text, marker, text, marker, ...] as UTF-8 bytes."""
    pieces: list[bytes] = []
    rest = body
    markers = (NAME_PLACEHOLDER, UNSUBSCRIBE_PLACEHOLDER)
    while True:
        found = [(rest.find(marker), marker) for marker in markers if marker in rest]
        if not found:
            pieces.append(rest.encode("utf-8"))
            return pieces
        position, marker = min(found)
        pieces += [rest[:position].encode("utf-8"), marker.encode("ascii")]
        rest = rest[position + len(marker):]


def _fill(pieces: list[bytes], name: str, unsubscribe_url: str) -> bytes:
    values = {NAME_PLACEHOLDER.encode(): name.encode("utf-8"),
              UNSUBSCRIBE_PLACEHOLDER.encode(): unsubscribe_url.encode("utf-8")}
    return b"".join(values.get(piece, piece) for piece in pieces)


def _base64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", _CRLF)
