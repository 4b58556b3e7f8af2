"""Signed unsubscribe tokens: an opaque subscriber id and an HMAC-SHA256 over it.

The token carries no address; the ledger maps the id back to one. Tokens look like
`<id>.<mac>` with both parts URL-safe, so they can stand in a path segment.
"""
from __future__ import annotations

import base64
import hashlib
import hmac

_MAC_BYTES = 16  # 128 bits of the HMAC: forging one is out of reach, the URL stays short


def sign(subscriber_id: str, secret: str) -> str:
    """Return the token for `subscriber_id`."""
    return f"{subscriber_id}.{_mac(subscriber_id, secret)}"


def verify(token: str, secret: str) -> str | None:
    """Return the subscriber id the token was signed for, or None for a forged or damaged token.
    The comparison takes the same time whatever the token holds."""
    subscriber_id, dot, mac = token.rpartition(".")
    if not dot or not subscriber_id:
        return None
    expected = _mac(subscriber_id, secret)
    return subscriber_id if hmac.compare_digest(expected.encode(), mac.encode()) else None


def _mac(subscriber_id: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), subscriber_id.encode(), hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
