"""Read one message of the bounce mailbox: a bounce, a complaint, or neither.

RFC 3464 delivery status notifications and RFC 5965 feedback reports are read from their
machine-readable parts; any other bounce (the many MTAs that write prose) goes to flufl.bounce's
detectors. The message is parsed with the standard library's email package, bounded: the caller
hands at most `bounces.max_message_bytes`, and MIME nesting deeper than `MAX_DEPTH` is not walked.
"""
from __future__ import annotations

import email
import email.policy
import functools
import hashlib
import logging
import re
from collections.abc import Iterator
from email.message import Message

from flufl.bounce import all_failures

from distributor.feedback.reports import Failure, FailureKind, FeedbackReport
from distributor.validate.addresses import address_problem

MAX_DEPTH = 10
_MAX_PARTS = 200
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID = re.compile(r"<[!-=?-~]{1,250}>")
_ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "To", "Return-Path")
# Feedback types (RFC 5965 7.3) that are a reader's complaint; `not-spam` is the opposite.
_COMPLAINTS = {"abuse", "fraud", "virus", "other"}
_MAX_TEXT = 300
# flufl.bounce logs a detector's exception with its traceback before raising it; the exception is
# handled below (the message is left and reported), so the log is not for the publisher's terminal.
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())
logging.getLogger("flufl.bounce").propagate = False


def parse_report(raw: bytes, *, envelope_sender: str | None) -> FeedbackReport | None:
    """Return what `raw` reports, or None when it is neither a bounce nor a complaint."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    source_key = hashlib.sha256(raw).hexdigest()
    verp_id = _verp_id(message, envelope_sender)
    parts = list(_walk(message))
    for part in parts:
        if part.get_content_type() == "multipart/report":
            report_type = str(part.get_param("report-type") or "").lower()
            if report_type == "delivery-status" and (found := _delivery_status(parts)):
                return FeedbackReport(source_key, found, verp_id, _returned_message_id(parts))
            if report_type == "feedback-report" and (complaint := _feedback(parts)) is not None:
                return FeedbackReport(source_key, complaint, verp_id, _returned_message_id(parts))
    failures = _detected(message)
    if not failures:
        return None
    return FeedbackReport(source_key, failures, verp_id, _returned_message_id(parts))


def _walk(message: Message, depth: int = 0) -> Iterator[Message]:
    """Every part of the message, depth first, at most MAX_DEPTH levels and _MAX_PARTS parts."""
    stack = [(message, depth)]
    seen = 0
    while stack and seen < _MAX_PARTS:
        part, level = stack.pop(0)
        seen += 1
        yield part
        if level < MAX_DEPTH and part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack[:0] = [(child, level + 1) for child in payload if isinstance(child, Message)]


def _delivery_status(parts: list[Message]) -> tuple[Failure, ...] | None:
    """The failures of an RFC 3464 report: its per-recipient field groups, read from the
    message/delivery-status part (the email package parses it as a list of header blocks). None or
    nothing found: the report is read by the detectors instead, as some MTAs fill it wrongly."""
    for part in parts:
        if part.get_content_type() != "message/delivery-status":
            continue
        failures = []
        for fields in _field_groups(part)[1:]:          # the first group is per message
            failure = _recipient_failure(fields)
            if failure is not None:
                failures.append(failure)
        return tuple(failures)
    return None


def _field_groups(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [group for group in payload if isinstance(group, Message)]
    if isinstance(payload, str):            # some MTAs send it base64- or otherwise encoded
        decoded = part.get_payload(decode=True)
        text = decoded.decode("utf-8", "replace") if isinstance(decoded, bytes) else payload
        return [email.message_from_string(block, policy=email.policy.compat32)
                for block in re.split(r"\r?\n\s*\r?\n", text.strip()) if block.strip()]
    return []


def _recipient_failure(fields: Message) -> Failure | None:
    action = _text(fields.get("Action")).lower()
    status_text = _text(fields.get("Status"))
    status_match = _STATUS.search(status_text)
    status = ".".join(status_match.groups()) if status_match else None
    if action in ("delivered", "relayed", "expanded") or (status or status_text).startswith("2"):
        return None
    if action.startswith("fail"):       # "failure" from some MTAs
        action = "failed"
    if action not in ("failed", "delayed") and status is None:
        return None
    if status is None and status_text[:1] == "4":      # a basic reply code (RFC 821) in place of a status
        action = "delayed"
    recipient = _rfc822_address(fields.get("Final-Recipient")) or _rfc822_address(fields.get("Original-Recipient"))
    return Failure(recipient, _kind(action, status), status, _text(fields.get("Diagnostic-Code")) or None)


def _kind(action: str, status: str | None) -> FailureKind:
    """Hard for a 5.x.x failure, except mailbox full (5.2.2), which may clear, and 5.7.x, which is about
    the sender; soft for a delay or a 4.x.x; 4.7.x about the sender too."""
    if status is not None and status.split(".")[1] == "7":
        return "policy"
    if action == "delayed" or (status or "").startswith("4") or status == "5.2.2":
        return "soft"
    return "hard"


def _feedback(parts: list[Message]) -> tuple[Failure, ...] | None:
    """The complaint of an RFC 5965 report: one failure, its address from Original-Rcpt-To or the
    returned message's To (None where the provider redacted it)."""
    for part in parts:
        if part.get_content_type() != "message/feedback-report":
            continue
        groups = _field_groups(part)
        fields = groups[0] if groups else Message()
        feedback_type = _text(fields.get("Feedback-Type")).lower() or "abuse"
        if feedback_type not in _COMPLAINTS:
            return ()
        address = _plain_address(_text(fields.get("Original-Rcpt-To"))) or _returned_header(parts, "To")
        agent = _text(fields.get("User-Agent"))
        detail = feedback_type + (f" ({agent})" if agent else "")
        return (Failure(address, "complaint", None, detail),)
    return None


def _detected(message: Message) -> tuple[Failure, ...]:
    """What flufl.bounce's detectors find in a bounce of no standard form; nothing when one of them
    fails on the message (some assume a From header, say): it is then left in the mailbox."""
    try:
        temporary, permanent = all_failures(message)
    except Exception:       # any detector's failure means the message was not understood
        return ()
    found: list[Failure] = []
    for addresses, kind in ((permanent, "hard"), (temporary, "soft")):
        for raw in sorted(addresses):
            address = _plain_address(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw))
            if address:
                found.append(Failure(address, "hard" if kind == "hard" else "soft"))
    return tuple(found)


def _returned_headers(parts: list[Message]) -> Message | None:
    """The headers of the mail the report answers (its message/rfc822 or text/rfc822-headers part)."""
    for part in parts:
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind == "text/rfc822-headers":
            body = part.get_payload(decode=True)
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(part.get_payload())
            return email.message_from_string(text, policy=email.policy.compat32)
    return None


def _returned_header(parts: list[Message], name: str) -> str | None:
    headers = _returned_headers(parts)
    return _plain_address(_text(headers.get(name))) if headers is not None else None


def _returned_message_id(parts: list[Message]) -> str | None:
    headers = _returned_headers(parts)
    if headers is None:
        return None
    found = _MESSAGE_ID.search(_text(headers.get("Message-ID")))
    return found.group(0) if found else None


def _verp_id(message: Message, envelope_sender: str | None) -> str | None:
    """The subscriber id in `local+<id>@domain` of the envelope sender the bounce came back to."""
    if not envelope_sender or "@" not in envelope_sender:
        return None
    pattern = _verp_pattern(envelope_sender)
    for name in _ENVELOPE_HEADERS:
        for value in message.get_all(name) or ():
            found = pattern.search(_text(value))
            if found:
                return found.group(1)
    return None


@functools.lru_cache(maxsize=8)
def _verp_pattern(envelope_sender: str) -> re.Pattern[str]:
    """`local+<id>@domain` of the envelope sender, compiled once per sender."""
    local, _, domain = envelope_sender.rpartition("@")
    return re.compile(rf"(?<![^\s<,:]){re.escape(local)}\+([A-Za-z0-9_-]{{1,64}})@{re.escape(domain)}(?![^\s>,])",
                      re.IGNORECASE)


def _rfc822_address(value: object) -> str | None:
    """The address of an `rfc822; someone@example.org` field (RFC 3464 2.3.2)."""
    text = _text(value)
    kind, _, address = text.partition(";")
    if not address or kind.strip().lower() != "rfc822":
        return None
    return _plain_address(address)


def _plain_address(value: str | None) -> str | None:
    """`value` as one plain address (angle brackets and blanks removed), or None when it is not one."""
    if not value:
        return None
    candidate = value.strip().strip("<>").strip()
    if "<" in candidate:
        candidate = candidate.rpartition("<")[2].rstrip(">").strip()
    return None if address_problem(candidate) else candidate


def _text(value: object) -> str:
    """A header's value as one line of text, bounded."""
    if value is None:
        return ""
    return " ".join(str(value).split())[:_MAX_TEXT]
