"""What one bounce or complaint message says, as the parser finds it and the ledger records it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# hard: the address does not work (5.x.x but mailbox full and policy); soft: it may again (4.x.x, mailbox
# full); complaint: the reader marked the mail as spam (an ARF report); policy: the receiver refused the
# sender (5.7.x, 4.7.x), which says nothing about the address.
FailureKind = Literal["hard", "soft", "complaint", "policy"]
FAILURE_KINDS: tuple[FailureKind, ...] = ("hard", "soft", "complaint", "policy")


@dataclass(frozen=True)
class Failure:
    """One recipient a report names: `address` as the report gives it (None when it names nobody and only
    the envelope, VERP, or the original Message-ID can tell), the enhanced status code (5.1.1) when there is
    one, and the diagnostic or the feedback type in a line."""

    address: str | None
    kind: FailureKind
    status: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class FeedbackReport:
    """A bounce (RFC 3464 delivery status notification, or a non-standard one flufl.bounce detects) or a
    complaint (RFC 5965 feedback report). `source_key` identifies the message itself (SHA-256 of its
    bytes), so the ledger counts it once however often it is read. `verp_id` is the subscriber id of the
    envelope sender it came back to (`bounces+<id>@domain`); `original_message_id` is the Message-ID of the
    mail it answers, from the headers it returns."""

    source_key: str
    failures: tuple[Failure, ...]
    verp_id: str | None = None
    original_message_id: str | None = None
