"""What a relay's or receiver's refusal of the sender usually means, in a line a publisher can act on.

Keyed by the enhanced status code (RFC 3463) of the reply; the most specific code first. These refusals
are about the sender (its address, domain, IP or authentication), never about the recipient.
"""
from __future__ import annotations

import re

_MEANINGS = {
    "5.7.1": "the receiver's policy refuses this sender (often: the sending IP is on a blocklist, the relay "
             "does not relay for this sender, or SPF/DKIM fail); check `distributor check --dns`",
    "5.7.23": "SPF failed: the relay's address is not in the envelope sender domain's SPF record "
              "(distributor check --dns)",
    "5.7.24": "SPF could not be evaluated (an error in the record): fix the SPF record (distributor check --dns)",
    "5.7.25": "the sending IP address has no reverse DNS (PTR) name: ask the relay's provider to set one",
    "5.7.26": "DMARC: the mail passed neither SPF nor DKIM aligned with the From domain; sign it "
              "(smtp.dkim) and publish the key and a DMARC record (distributor check --dns)",
    "5.7.27": "the envelope sender's domain has an SPF record that does not authorise the relay",
    "5.7.28": "the receiver sees too much mail from this sender (a flood): slow down (smtp.per_second)",
    "5.7.515": "Outlook.com refuses bulk mail that does not pass SPF, DKIM and DMARC for the From domain "
               "(distributor check --dns)",
    "5.7.9": "the relay refuses the authentication mechanism or the sender address for this login",
    "5.7.8": "the relay refused the login: check smtp.username and the password variable",
    "5.7.0": "the receiver refuses this sender for a policy reason; the reply's text says which",
    "4.7.0": "the receiver limits this sender for now (rate or reputation): the channel slows down",
    "4.7.1": "the receiver limits this sender for now (greylisting, rate or reputation): the channel slows down",
    "4.7.28": "Gmail limits the rate of mail from this IP for now: the channel slows down (smtp.per_second)",
}
_STATUS = re.compile(r"\b([45]\.7\.\d{1,3})\b")


def sender_policy_status(text: str) -> str | None:
    """The 5.7.x or 4.7.x enhanced status code that opens a reply's text, if it has one."""
    found = _STATUS.match(text.strip())
    return found.group(1) if found else None


def meaning(status: str) -> str:
    """What a refusal with `status` (5.7.26, 4.7.0) usually means."""
    generic = "the receiver refuses this sender" if status.startswith("5") else "the receiver limits this sender"
    return _MEANINGS.get(status) or f"{generic} ({status}: a policy, authentication or reputation reason)"
