"""DKIM signatures (RFC 6376, and Ed25519 as a second one, RFC 8463) on every mail, made in process.

Why not `dkim.sign()`: dkimpy does its RSA in pure Python and parses the key and the whole message on
every call, 9 ms per 70 KB mail on the machines measured, some thirty times the rest of a mail's path.
So dkimpy supplies the canonicalization and the folding, and OpenSSL, through `cryptography`, the
signature over the SHA-256 of the headers. What every recipient's mail shares is hashed once per
issue (`MessageTemplate`): the headers that do not change (`head()`; `h=` lists them first, then the
mail's own To, Message-ID and List-Unsubscribe) and the body up to the first per-recipient byte;
each mail copies both hash states and hashes only the rest. Each header signed is the last instance
of its name, as a verifier selects them. dkimpy's verifier checks the result in the tests, against
the key published on a real DNS server.

Canonicalization is relaxed for the headers (a relay may refold them) and simple for the body (it is
base64, which no relay rewrites). The headers signed are named, not dkimpy's default set, which leaves
out List-Unsubscribe-Post: RFC 8058 requires both unsubscribe headers to be signed.
"""
from __future__ import annotations

import base64
import hashlib
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim.canonicalization import CanonicalizationPolicy

from distributor.errors import SettingsError
from distributor.settings import DkimSettings

# Those the message has, From once more than it occurs (oversigned: the second instance hashes as empty,
# RFC 6376 5.4.2, so a From added on the way breaks the signature).
SIGNED_HEADERS = (b"from", b"from", b"reply-to", b"to", b"subject", b"date", b"message-id", b"list-id",
                  b"list-unsubscribe", b"list-unsubscribe-post", b"mime-version", b"content-type")
MIN_RSA_BITS = 2048
_MAX_KEY_BYTES = 64 * 1024
_CANONICALIZATION = CanonicalizationPolicy.from_c_value(b"relaxed/simple")
_SIGNATURE = b"DKIM-Signature"

Header = tuple[bytes, bytes]      # (name, value) as dkimpy parses them: the value keeps its CRLF


@dataclass(frozen=True)
class DkimKey:
    """One signing key and the selector its public part is published under."""

    selector: str
    algorithm: Literal["rsa-sha256", "ed25519-sha256"]
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = field(repr=False)

    def public_p(self) -> str:
        """The base64 `p=` value the DNS record at `<selector>._domainkey.<domain>` must hold."""
        public = self.private_key.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(raw).decode("ascii")

    def public_record(self) -> str:
        """The whole TXT record to publish."""
        kind = "ed25519" if self.algorithm == "ed25519-sha256" else "rsa"
        return f"v=DKIM1; k={kind}; p={self.public_p()}"

    def sign(self, digest: bytes) -> bytes:
        """Sign the SHA-256 `digest` of the canonical headers (Ed25519 signs the digest itself, RFC 8463)."""
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return self.private_key.sign(digest)
        return self.private_key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def load_keys(settings: DkimSettings) -> tuple[DkimKey, ...]:
    """The RSA key of `smtp.dkim`, and the Ed25519 one when given; each a PEM file or the PEM text in an
    environment variable. A missing, unreadable, wrong or short key is a SettingsError naming its key."""
    if not settings.domain or not settings.selector:
        raise SettingsError("smtp.dkim needs domain and selector")
    keys = [DkimKey(settings.selector, "rsa-sha256",
                    _private_key("smtp.dkim.private_key", settings.private_key_file, settings.private_key_env,
                                 rsa.RSAPrivateKey))]
    if settings.ed25519_selector or settings.ed25519_key_file or settings.ed25519_key_env:
        if not settings.ed25519_selector:
            raise SettingsError("smtp.dkim.ed25519_selector: needed with an Ed25519 key")
        keys.append(DkimKey(settings.ed25519_selector, "ed25519-sha256",
                            _private_key("smtp.dkim.ed25519_key", settings.ed25519_key_file,
                                         settings.ed25519_key_env, ed25519.Ed25519PrivateKey)))
    return tuple(keys)


def _private_key(what: str, path: str | None, variable: str | None, kind: type) -> rsa.RSAPrivateKey | \
        ed25519.Ed25519PrivateKey:
    if (path is None) == (variable is None):
        raise SettingsError(f"{what}_file or {what}_env: set exactly one of the two")
    if variable is not None:
        pem = os.environ.get(variable, "").encode("utf-8")
        source = f"{what}_env"
        if not pem:
            raise SettingsError(f"{source}: set the environment variable {variable} (the PEM text of the key)")
    else:
        assert path is not None
        source = f"{what}_file"
        pem = _read_key_file(source, os.path.expanduser(path))
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # The library's words never quote the key; a passphrase-protected key lands here too.
        raise SettingsError(f"{source}: not an unencrypted PEM private key ({exc.__class__.__name__})") from None
    if not isinstance(key, kind) or not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        wanted = "an RSA" if kind is rsa.RSAPrivateKey else "an Ed25519"
        raise SettingsError(f"{source}: {wanted} private key is needed here")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise SettingsError(f"{source}: an RSA key of {key.key_size} bits; receivers want {MIN_RSA_BITS} at least")
    return key


def _read_key_file(source: str, path: str) -> bytes:
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_KEY_BYTES:
            raise SettingsError(f"{source}: {path} is not a regular file of at most 64 KB")
        with open(path, "rb") as file:
            return file.read(_MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"{source}: {path} cannot be read: {exc.strerror}") from exc


def parse_headers(block: bytes) -> list[Header]:
    """A block of header lines (CRLF, folded lines kept) as dkimpy's (name, value) pairs."""
    return [(name, value) for name, value in dkim.rfc822_parse(block + b"\r\n")[0]]


@dataclass(frozen=True)
class SignedHead:
    """The headers all mails of a template share, hashed: the names signed and the SHA-256 state."""

    names: tuple[bytes, ...]
    state: hashlib._Hash = field(repr=False)


def _folded(fields: Sequence[tuple[bytes, bytes]], end: bytes = b"") -> bytes:
    return dkim.fold(b"; ".join(b"=".join(tag) for tag in fields) + end, namelen=len(_SIGNATURE), linesep=b"\r\n")


class DkimSigner:
    """Sign mails of one domain with each key, the RSA one first."""

    def __init__(self, domain: str, keys: Sequence[DkimKey]):
        self.domain = domain.encode("ascii")
        self.keys = tuple(keys)

    @staticmethod
    def body_hash(prefix: bytes) -> hashlib._Hash:
        """The SHA-256 state after the part of the body all recipients share; copy it per recipient."""
        return hashlib.sha256(prefix)

    def head(self, headers: Sequence[Header]) -> SignedHead:
        """Hash the headers every mail of a template shares, once; `sign()` adds each mail's own."""
        canonical = dict(_CANONICALIZATION.canonicalize_headers(list(headers)))     # the last instance signs
        names = tuple(name for name in SIGNED_HEADERS if name in canonical)
        state = hashlib.sha256()
        for name in dict.fromkeys(names):            # an oversigned name hashes nothing the second time
            state.update(name + b":" + canonical[name])
        return SignedHead(names, state)

    def sign(self, head: SignedHead, headers: Sequence[Header], body_hash: bytes, *,
             timestamp: int | None = None) -> bytes:
        """The DKIM-Signature header lines (CRLF-terminated, folded, the RSA one first) of a mail with
        `head`'s headers, its own `headers` (none of whose names is among the head's) and a body whose
        canonical (simple) form hashes to `body_hash`."""
        canonical = dict(_CANONICALIZATION.canonicalize_headers(list(headers)))
        own = tuple(name for name in SIGNED_HEADERS if name in canonical and name not in head.names)
        state = head.state.copy()
        for name in own:
            state.update(name + b":" + canonical[name])
        stamp = str(int(time.time()) if timestamp is None else timestamp).encode("ascii")
        # Spaces around h='s colons (FWS, RFC 6376 3.5) let a fold fall between names: a fold inside
        # one would make it another name to the verifier.
        signed_names = b" : ".join(head.names + own)
        lines = []
        for key in self.keys:
            fields = [(b"v", b"1"), (b"a", key.algorithm.encode("ascii")), (b"c", b"relaxed/simple"),
                      (b"d", self.domain), (b"q", b"dns/txt"), (b"s", key.selector.encode("ascii")), (b"t", stamp),
                      (b"h", signed_names), (b"bh", base64.b64encode(body_hash)), (b"b", b"")]
            # The signature header itself is hashed last, relaxed, with b= empty and no final CRLF.
            ((name, value),) = _CANONICALIZATION.canonicalize_headers([(_SIGNATURE, b" " + _folded(fields))])
            hasher = state.copy()
            hasher.update(name + b":" + value.rstrip())
            fields[-1] = (b"b", base64.b64encode(key.sign(hasher.digest())))
            lines.append(_SIGNATURE + b": " + _folded(fields, b"\r\n"))
        return b"".join(lines)

    def sign_message(self, message: bytes) -> bytes:
        """Return a whole message built elsewhere (a confirmation mail, the operator's report) with its
        signatures first; `message` has CRLF line ends."""
        head, separator, body = message.partition(b"\r\n\r\n")
        canonical_body = _CANONICALIZATION.canonicalize_body(body if separator else b"")
        signed_head = self.head(parse_headers(head + b"\r\n"))
        return self.sign(signed_head, (), hashlib.sha256(canonical_body).digest()) + message


def signer_for(settings: DkimSettings | None) -> DkimSigner | None:
    """The signer `smtp.dkim` describes, its keys loaded (None: no signing)."""
    return None if settings is None else DkimSigner(settings.domain, load_keys(settings))


def alignment_problem(dkim_domain: str, from_address: str) -> str | None:
    """Say so when signing for `dkim_domain` would not align with the From address (DMARC, relaxed)."""
    from_domain = from_address.rpartition("@")[2].lower()
    domain = dkim_domain.lower()
    if from_domain == domain or from_domain.endswith("." + domain):
        return None
    return (f"smtp.dkim.domain {dkim_domain!r} is not the From domain {from_domain!r} nor a parent of it: "
            "DMARC would not count the signature")
