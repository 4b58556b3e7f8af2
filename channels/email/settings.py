"""The `channels.email` settings block."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from distributor.settings import folder_problem, list_name_problem, unsubscribe_url_problem
from distributor.validate.addresses import (
    explained_address_problem,
    list_id_problem,
    named_address_problem,
    text_problem,
)


@dataclass(frozen=True)
class EmailSettings:
    """`channels.email`: the sender's identity and the unsubscribe links, which the text channel shares."""

    text_checks: ClassVar[dict[str, Callable[[str], str | None]]] = {
        "from_address": explained_address_problem, "from_name": text_problem, "reply_to": named_address_problem,
        "return_path": explained_address_problem, "list_id": list_id_problem,
        "unsubscribe_url": unsubscribe_url_problem, "unsubscribe_mailto": explained_address_problem,
        "template_dir": folder_problem, "lists": list_name_problem}

    enabled: bool = True
    from_address: str = "newsletter@example.org"
    from_name: str = "Example Weekly"
    reply_to: str | None = None
    # Envelope sender (Return-Path); the From address when unset.
    return_path: str | None = None
    # One envelope sender per recipient (VERP): <local>+<subscriber id>@<domain> of the envelope sender,
    # so a bounce names its recipient even when its report does not.
    verp: bool = False
    list_id: str = "weekly.example.org"
    # {token} is replaced by the subscriber's signed unsubscribe token.
    unsubscribe_url: str = "https://example.org/unsubscribe/{token}"
    unsubscribe_mailto: str | None = "unsubscribe@example.org"
    # Who receives it: a subscriber file (CSV or YAML), or the subscribers of lists in the ledger; not both.
    subscribers: str | None = None
    lists: tuple[str, ...] = ()
    # A folder whose templates override the packaged ones (email/issue.html ...).
    template_dir: str | None = None
