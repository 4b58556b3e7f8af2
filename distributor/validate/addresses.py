"""Allow-list checks of what reaches a mail header or the SMTP envelope: addresses, display names,
header text and URLs. Each check returns a problem to report, or None when the value is safe.

The standard library's parsers (`email.utils.parseaddr`, `email.headerregistry`) are lenient on
purpose: they take `a@x.org, b@y.org`, `<a@x.org> NOTIFY=SUCCESS` or a name with a line break and
make something of it. These checks are strict instead, so a value from settings, the command line
or a subscriber file is refused once, where it enters, and nothing downstream has to be careful.
"""
from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import urlsplit

# An address is one RFC 5322 addr-spec in its dot-atom form: local@domain, ASCII only (the sender
# has no SMTPUTF8, so an international domain is written as punycode). No quoted local part, no
# comments, no display name, no angle brackets: nothing an SMTP command or a header could split on.
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]"              # RFC 5322 atext
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"    # letters, digits, hyphens inside (RFC 1035 LDH)
_TOP_LABEL = r"(?:[a-z]{2,63}|xn--[a-z0-9](?:[a-z0-9-]{0,57}[a-z0-9])?)"
_ADDRESS = re.compile(rf"({_DOT_ATOM})@((?:{_LABEL}\.)+{_TOP_LABEL})", re.ASCII | re.IGNORECASE)
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.ASCII | re.IGNORECASE)
_LIST_ID = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)+", re.ASCII | re.IGNORECASE)   # RFC 2919: label.namespace
MAX_LOCAL_PART, MAX_DOMAIN, MAX_ADDRESS = 64, 255, 254                             # RFC 5321 4.5.3.1
ADDRESS_FORM = "give one address as local@domain, without a name, spaces, angle brackets or commas"

# Characters of RFC 3986 URLs, plus braces for the {token} placeholder; no quotes, angle brackets or spaces.
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%{}]+")
MAX_URL = 800
# Specials that would make `Name <address>` parse as something else (RFC 5322 3.2.3, less the dot).
_NAME_SPECIALS = frozenset('"(),:;<>@[\\]')
MAX_TEXT = 256


def domain_of(address: str) -> str:
    """Return the domain of `address` (after its last @), lower-cased: what relay routes and DNS checks match."""
    return address.rpartition("@")[2].lower().rstrip(".")


def address_problem(address: str) -> str | None:
    """Say why `address` is not one plain ASCII addr-spec, else None."""
    if not address.isascii():
        return f"non-ASCII address {shown(address)}: SMTPUTF8 is not supported"
    match = _ADDRESS.fullmatch(address)
    if match is None or len(address) > MAX_ADDRESS or len(match.group(1)) > MAX_LOCAL_PART \
            or len(match.group(2)) > MAX_DOMAIN:
        return f"invalid address {shown(address)}"
    return None


def explained_address_problem(address: str) -> str | None:
    """`address_problem`, saying what an address must look like when it is not one (settings, `--to`)."""
    problem = address_problem(address)
    return f"{problem}; {ADDRESS_FORM}" if problem and problem.startswith("invalid") else problem


def text_problem(text: str, *, max_length: int = MAX_TEXT) -> str | None:
    """Say why `text` cannot be header text (a display name, a site name): a control character,
    a line or paragraph separator, or more than `max_length` characters."""
    for character in text:
        if unicodedata.category(character) in ("Cc", "Zl", "Zp"):
            return f"holds a control character (U+{ord(character):04X}): it must be one line of printable characters"
    if len(text) > max_length:
        return f"is longer than {max_length} characters"
    return None


def named_address_problem(value: str) -> str | None:
    """Say why `value` is neither an address nor `Display Name <address>`, else None."""
    if not value.endswith(">") or "<" not in value:
        return address_problem(value)
    name, _, address = value[:-1].rpartition("<")
    name = name.strip()
    if problem := text_problem(name):
        return f"the name {problem}"
    if any(character in _NAME_SPECIALS for character in name):
        return f"the name {shown(name)} holds one of {''.join(sorted(_NAME_SPECIALS))}"
    return address_problem(address)


def list_id_problem(list_id: str) -> str | None:
    """Say why `list_id` is not an RFC 2919 list identifier (label.namespace, no brackets), else None."""
    if not _LIST_ID.fullmatch(list_id) or len(list_id) > MAX_DOMAIN:
        return f"invalid list id {shown(list_id)}: write it as label.example.org, without angle brackets"
    return None


def hostname_problem(host: str) -> str | None:
    """Say why `host` is neither an IP address nor a host name of LDH labels, else None."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(host) or len(host) > MAX_DOMAIN:
        return f"invalid host name {shown(host)}"
    return None


def ehlo_name_problem(name: str) -> str | None:
    """Say why `name` cannot follow EHLO, else None: it must be a host name, or an address literal in
    brackets ([192.0.2.1], [IPv6:2001:db8::1]) as RFC 5321 4.1.3 writes it; a bare IP address is refused."""
    if problem := text_problem(name):
        return problem
    if name.startswith("[") and name.endswith("]"):
        literal = name[1:-1]
        try:
            address = ipaddress.ip_address(literal.removeprefix("IPv6:"))
        except ValueError:
            return f"invalid address literal {shown(name)}"
        if (address.version == 6) != literal.startswith("IPv6:"):
            return f"invalid address literal {shown(name)}: write [192.0.2.1] or [IPv6:2001:db8::1]"
        return None
    if name.replace(".", "").isdigit() or ":" in name:
        return f"write an IP address in brackets, as [{name}]"
    return hostname_problem(name)


def http_url_problem(url: str) -> str | None:
    """Say why `url` is not an absolute http(s) URL with a host, of plain URL characters, else None."""
    if not _URL_CHARACTERS.fullmatch(url) or len(url) > MAX_URL:
        return f"{shown(url)} is not a URL of at most {MAX_URL} ASCII characters without spaces or quotes"
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return f"{shown(url)} is not an http:// or https:// URL"
    try:
        parts.port                         # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        return f"{shown(url)} has an invalid port"
    host = (parts.hostname or "").strip("[]")
    if not host:
        return f"{shown(url)} has no host"
    if "@" in parts.netloc or hostname_problem(host):
        return f"{shown(url)} has an invalid host"
    return None


def shown(value: str, limit: int = 80) -> str:
    """Quote `value` for an error line: control characters escaped, cut after `limit` characters."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "…"
