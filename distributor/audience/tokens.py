"""Signed tokens with a purpose and an expiry: the signup form's token and the confirmation link's.

A token is `<payload>.<mac>`, both URL-safe base64: the payload is a JSON array of the purpose, the
values and the times issued and expiring (milliseconds since the epoch), the MAC an HMAC-SHA256 over
the payload under a key derived from the unsubscribe secret for that purpose alone. So a token of
one purpose never verifies as another's, and an unsubscribe token (`<id>.<mac>` under the secret
itself, distributor.audience.unsubscribe) never verifies as any of these, nor one of these as it.

`keyed_hash` uses the same derivation to hash what must not be kept in the clear (a client's IP
address) while staying comparable.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from dataclasses import dataclass

PURPOSES = ("form", "confirm", "client")
MAX_TOKEN_CHARS = 512           # a longer one is refused before it is decoded
_MAC_BYTES = 16                 # 128 bits, as the unsubscribe tokens
_MAX_VALUES = 4


@dataclass(frozen=True)
class Token:
    """What a genuine token holds."""

    purpose: str
    values: tuple[str, ...]
    issued_at: float            # seconds since the epoch
    expires_at: float

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def age(self, now: float) -> float:
        return now - self.issued_at


def purpose_key(secret: str, purpose: str) -> bytes:
    """Return the key of `purpose`, derived from `secret` (HMAC-SHA256 of the purpose's label)."""
    if purpose not in PURPOSES:
        raise ValueError(purpose)
    return hmac.new(secret.encode(), f"distributor/{purpose}".encode(), hashlib.sha256).digest()


def sign(purpose: str, values: tuple[str, ...], secret: str, *, issued_at: float, lifetime_seconds: float) -> str:
    """Return a token of `purpose` holding `values`, issued at `issued_at` (rounded down to the
    millisecond, so a token never claims to be younger than it is) and good for `lifetime_seconds`."""
    issued = math.floor(issued_at * 1000)
    payload = json.dumps([purpose, list(values), issued, issued + math.ceil(lifetime_seconds * 1000)],
                         separators=(",", ":"), ensure_ascii=True).encode()
    encoded = _encode(payload)
    return f"{encoded}.{_mac(encoded, secret, purpose)}"


def read(token: str, purpose: str, secret: str) -> Token | None:
    """Return what a genuine token of `purpose` holds, expired or not; None for one forged, damaged,
    too long or of another purpose. The MAC is compared in constant time before anything is decoded."""
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None
    encoded, dot, mac = token.partition(".")
    if not dot or not encoded:
        return None
    if not hmac.compare_digest(_mac(encoded, secret, purpose).encode(), mac.encode()):
        return None
    try:
        found, values, issued, expires = json.loads(_decode(encoded))
    except (ValueError, TypeError, binascii.Error):
        return None
    if found != purpose or not isinstance(values, list) or len(values) > _MAX_VALUES \
            or not all(isinstance(value, str) for value in values) \
            or not (isinstance(issued, int) and isinstance(expires, int)):
        return None
    return Token(purpose, tuple(values), issued / 1000, expires / 1000)


def keyed_hash(secret: str, purpose: str, text: str) -> str:
    """Return a hex HMAC of `text` under the key of `purpose`: the same text always hashes the same,
    and no one without the secret can tell which text it was by trying them."""
    return hmac.new(purpose_key(secret, purpose), text.encode(), hashlib.sha256).hexdigest()[:2 * _MAC_BYTES]


def _mac(encoded: str, secret: str, purpose: str) -> str:
    return _encode(hmac.new(purpose_key(secret, purpose), encoded.encode(), hashlib.sha256).digest()[:_MAC_BYTES])


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
