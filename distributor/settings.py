"""Settings: a YAML file read into frozen dataclasses over embedded defaults.

Every key has a default, so the distributor runs with no settings file at all (a dry run of the
bundled example). The file is validated whole when it is loaded, against allow lists: it must be a
regular file of at most 1 MB, YAML without aliases or deep nesting (`bounded.load_yaml`); a key
that is unknown, of the wrong type, out of range, a number that is not finite, an address or a
header value that would not be safe in a mail (`addresses`), a URL that is not absolute http(s),
or a folder that does not exist is a `SettingsError` naming its path, e.g.
`channels.email.from_address`. Secrets never live in the file: a key ending in `_env` names the
environment variable that holds the secret, read only when a channel needs it.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from distributor.errors import InputError, SettingsError
from distributor.render.themes import css_file_problem
from distributor.validate.addresses import (
    ehlo_name_problem,
    explained_address_problem,
    hostname_problem,
    http_url_problem,
    text_problem,
)
from distributor.validate.bounded import load_yaml, read_regular_file

MAX_SETTINGS_BYTES = 1024 * 1024


@dataclass(frozen=True)
class SiteSettings:
    text_checks: ClassVar[dict[str, Callable[[str], str | None]]] = {
        "name": text_problem, "base_url": http_url_problem, "site_root": lambda value: folder_problem(value),
        "language": lambda value: language_problem(value), "theme_css": lambda value: css_file_problem(value)}
    name: str = "Example Weekly"
    base_url: str = "https://example.org"
    language: str = "zh"
    # Local checkout of the site, to read site-relative images from (WeChat uploads, preview).
    site_root: str | None = None
    # The look of the email and the WeChat article (distributor.render.themes), and a CSS file of the
    # publisher's own inlined over it.
    theme: Literal["classic", "tinylab", "ink"] = "classic"
    theme_css: str | None = None


class ChannelsSettings(Mapping[str, Any]):
    """The `channels` block: one settings block per registered channel, by name (`channels.email` …).

    Each block is the dataclass its channel declares (`Channel.settings_class`), read from the file over
    its defaults; a channel the file does not name keeps its defaults. `settings.channels.email` and
    `settings.channels["email"]` are the same block."""

    def __init__(self, blocks: Mapping[str, Any] | None = None):
        from distributor import registry  # the channels import this module: load them lazily
        given = dict(blocks or {})
        self._blocks = {name: given.pop(name, None) or channel.settings_class()
                        for name, channel in registry.channels().items()}
        if given:
            raise SettingsError(f"unknown key channels.{next(iter(given))}")

    def __getitem__(self, name: str) -> Any:
        return self._blocks[name]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_blocks"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChannelsSettings) and self._blocks == other._blocks

    def __hash__(self) -> int:
        return hash(tuple(self._blocks.items()))

    def __repr__(self) -> str:
        return f"ChannelsSettings({self._blocks!r})"


@dataclass(frozen=True)
class DkimSettings:
    """`smtp.dkim`: sign every mail in process (RFC 6376) for `domain`, with an RSA key and optionally an
    Ed25519 key as a second signature (RFC 8463). Each key is a PEM file or the PEM text in an
    environment variable, exactly one of the two."""

    text_checks: ClassVar[dict[str, Callable[[str], str | None]]] = {
        "domain": lambda value: domain_problem(value), "selector": lambda value: selector_problem(value),
        "ed25519_selector": lambda value: selector_problem(value)}
    domain: str = ""
    selector: str = ""
    private_key_file: str | None = None
    private_key_env: str | None = None
    ed25519_selector: str | None = None
    ed25519_key_file: str | None = None
    ed25519_key_env: str | None = None


@dataclass(frozen=True)
class SmtpConnection:
    """What the distributor needs to hand mail to one relay: where, how, how fast."""

    text_checks: ClassVar[dict[str, Callable[[str], str | None]]] = {
        "host": hostname_problem, "ehlo_name": ehlo_name_problem}
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "port": (1, 65535), "pool_size": (1, 1000), "timeout_seconds": (0.01, None), "per_second": (0, None),
        "hourly_cap": (1, None), "daily_cap": (1, None), "policy_refusals_to_stop": (1, 1000)}
    host: str = "127.0.0.1"
    port: int = 25
    security: Literal["plain", "starttls", "tls"] = "starttls"
    username: str | None = None
    password_env: str = "SMTP_PASSWORD"
    timeout_seconds: float = 30.0
    pool_size: int = 5
    per_second: float = 0.0  # 0: no rate limit
    hourly_cap: int | None = None
    daily_cap: int | None = None
    ca_file: str | None = None  # PEM certificates trusted in addition to the system's (a private CA)
    ehlo_name: str | None = None  # the name sent in EHLO; None: this machine's FQDN
    dkim: DkimSettings | None = None  # None: leave signing to the relay
    # Refusals about the sender (5.7.x: policy, DMARC, authentication) in a row that stop the channel.
    policy_refusals_to_stop: int = 3


@dataclass(frozen=True)
class RelaySettings(SmtpConnection):
    """One of `smtp.relays`: a relay with its own pool, rate and caps, sending the mail to `domains`
    (the recipient's domain after @), or, with no domains, to every domain no other relay names."""

    text_checks: ClassVar[dict[str, Callable[[str], str | None]]] = {
        **SmtpConnection.text_checks, "name": lambda value: relay_name_problem(value),
        "domains": lambda value: domain_problem(value)}
    name: str = ""
    domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class SmtpSettings(SmtpConnection):
    """`smtp`: the relay mail goes through; with `relays`, the workers share the mail out among several,
    by recipient domain (the keys of `smtp` itself then serve only the signup and operator mails)."""

    relays: tuple[RelaySettings, ...] = ()


@dataclass(frozen=True)
class RetrySettings:
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "attempts": (1, 1000), "base_delay_seconds": (0, None), "max_delay_seconds": (0, None),
        "deadline_seconds": (0, None)}
    attempts: int = 5
    base_delay_seconds: float = 1.0
    max_delay_seconds: float = 60.0
    deadline_seconds: float = 900.0


@dataclass(frozen=True)
class ScheduleSettings:
    text_checks: ClassVar[dict[str, Callable[[str], str | None]]] = {
        "operator_email": explained_address_problem, "timezone": lambda value: time_zone_problem(value)}
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "max_lateness_seconds": (0, None), "lease_seconds": (0.1, None), "poll_seconds": (0.01, None)}
    # IANA zone that --at times are read and shown in; the system's zone when unset.
    timezone: str | None = None
    # A job found this late (nothing was running at its time) is marked missed, not sent.
    max_lateness_seconds: float = 6 * 3600.0
    # How long a runner's claim on a job lasts unless renewed; a dead runner's job is taken over after it.
    lease_seconds: float = 60.0
    # The worker looks for due jobs at least this often.
    poll_seconds: float = 30.0
    # Where the short report after each job is mailed (through the smtp relay); nowhere when unset.
    operator_email: str | None = None


@dataclass(frozen=True)
class LedgerSettings:
    """`ledger`: the SQLite file `path` (the default), or the PostgreSQL database `url` that workers on
    several machines share (postgresql://user@host:port/database; its password, if the server asks
    for one, in the environment variable `password_env`, never in the file)."""

    text_checks: ClassVar[dict[str, Callable[[str], str | None]]] = {"url": lambda value: postgres_url_problem(value)}
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {"lock_timeout_seconds": (0.01, 3600)}
    path: str = "~/.local/share/distributor/ledger.sqlite3"
    url: str | None = None
    password_env: str = "DISTRIBUTOR_LEDGER_PASSWORD"
    # How long a command waits for another process's write lock on the ledger before it stops (exit 3).
    lock_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class WorkersSettings:
    """`workers`: how `distributor worker` shares out the rows that `publish --via-workers` planned."""

    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "lease_seconds": (1, 3600), "batch_size": (1, 10_000), "relay_pause_seconds": (0.1, 86400),
        "poll_seconds": (0.01, 3600)}
    # How long a worker's claim on a batch of rows lasts unless renewed (it renews every third of it):
    # a worker that dies loses its rows to the others this long after its last renewal.
    lease_seconds: float = 30.0
    # Rows claimed at a time.
    batch_size: int = 200
    # How long no worker sends through a relay that refused the session or could not be reached.
    relay_pause_seconds: float = 60.0
    # How often a worker with nothing to send looks for new work.
    poll_seconds: float = 2.0


@dataclass(frozen=True)
class SignupSettings:
    """`signup`: readers joining a list from the form `distributor serve` answers, with double opt-in."""

    text_checks: ClassVar[dict[str, Callable[[str], str | None]]] = {
        "public_url": lambda value: public_url_problem(value), "lists": lambda value: list_name_problem(value),
        "trusted_proxies": lambda value: ip_address_problem(value)}
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "confirm_hours": (0.1, 24 * 90), "mails_per_address_per_day": (1, 100),
        "requests_per_client_per_day": (1, 1_000_000), "min_fill_seconds": (0, 3600)}
    # Where readers reach `distributor serve` (the form posts to <public_url>subscribe, confirmation
    # links are <public_url>confirm/<token>); None: the origin and folder of channels.email.unsubscribe_url.
    public_url: str | None = None
    # The lists the form offers; empty: every list a channel sends to.
    lists: tuple[str, ...] = ()
    # How long a confirmation link works.
    confirm_hours: float = 48.0
    # Confirmation mails to one address in any 24 hours; signup POSTs accepted from one client (its IP
    # address, its /64 for IPv6), whatever each decided: past it nothing is recorded, the page the same.
    mails_per_address_per_day: int = 3
    requests_per_client_per_day: int = 20
    # A form sent back sooner than this after it was served is taken for a bot's.
    min_fill_seconds: float = 3.0
    # What the consent record keeps of the client's IP address: a keyed hash of it, all of it, or nothing.
    client_address: Literal["hash", "full", "none"] = "hash"
    # Reverse proxies whose X-Forwarded-For names the client (their own address would otherwise be it).
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImapSettings:
    """`bounces.imap`: the bounce mailbox on an IMAP server; the password is read from `password_env`."""

    text_checks: ClassVar[dict[str, Callable[[str], str | None]]] = {
        "host": hostname_problem, "folder": lambda value: mailbox_folder_problem(value),
        "processed_folder": lambda value: mailbox_folder_problem(value)}
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "port": (1, 65535), "timeout_seconds": (0.01, 3600)}
    host: str = ""
    port: int = 993
    security: Literal["tls", "starttls", "plain"] = "tls"   # plain: only for a loopback host
    username: str = ""
    password_env: str = "BOUNCES_IMAP_PASSWORD"
    folder: str = "INBOX"
    timeout_seconds: float = 30.0
    ca_file: str | None = None
    # What is done with a message once read: moved to `processed_folder`, or flagged where it is.
    processed: Literal["move", "flag"] = "move"
    processed_folder: str = "Processed"


@dataclass(frozen=True)
class BouncesSettings:
    """`bounces`: where bounce and complaint mail arrives, and when a soft bounce suppresses an address."""

    text_checks: ClassVar[dict[str, Callable[[str], str | None]]] = {"maildir": lambda value: folder_problem(value)}
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "soft_bounces_to_suppress": (1, 1000), "soft_bounce_days": (1, 3650), "poll_minutes": (0.1, 1440),
        "max_messages_per_run": (1, 1_000_000), "max_message_bytes": (1024, 100 << 20)}
    imap: ImapSettings | None = None
    maildir: str | None = None      # a local Maildir instead; read messages move to its .Processed folder
    # An address is suppressed after this many soft bounces (4.x.x, mailbox full) within soft_bounce_days.
    soft_bounces_to_suppress: int = 3
    soft_bounce_days: float = 30.0
    # How often `distributor worker` reads the mailbox.
    poll_minutes: float = 5.0
    max_messages_per_run: int = 10_000
    max_message_bytes: int = 10 << 20


@dataclass(frozen=True)
class DnsSettings:
    """`dns`: the resolver `check --dns` asks; the system's (/etc/resolv.conf) unless nameservers are given."""

    text_checks: ClassVar[dict[str, Callable[[str], str | None]]] = {
        "nameservers": lambda value: ip_address_problem(value)}
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "port": (1, 65535), "timeout_seconds": (0.01, 60)}
    nameservers: tuple[str, ...] = ()
    port: int = 53
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class Settings:
    site: SiteSettings = field(default_factory=SiteSettings)
    channels: ChannelsSettings = field(default_factory=ChannelsSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    workers: WorkersSettings = field(default_factory=WorkersSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    signup: SignupSettings = field(default_factory=SignupSettings)
    bounces: BouncesSettings = field(default_factory=BouncesSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    unsubscribe_secret_env: str = "DISTRIBUTOR_UNSUBSCRIBE_SECRET"


def load_settings(path: str | Path | None) -> Settings:
    """Read a settings file over the embedded defaults; no path gives the defaults alone."""
    if path is None:
        return Settings()
    path = Path(path)
    try:
        raw = read_regular_file(path, MAX_SETTINGS_BYTES, "settings file")
    except InputError as exc:
        raise SettingsError(str(exc)) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SettingsError("settings file is not UTF-8 text", path=str(path),
                            line=raw[:exc.start].count(b"\n") + 1) from exc
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        marked = exc if isinstance(exc, yaml.MarkedYAMLError) else None
        line = marked.problem_mark.line + 1 if marked and marked.problem_mark else None
        problem = (marked and marked.problem) or "invalid YAML"
        raise SettingsError(f"invalid YAML: {problem}", path=str(path), line=line) from exc
    if data is None:
        return Settings()
    settings = _build(Settings, data, "", str(path))
    _check_relays(settings.smtp.relays, str(path))
    return settings


def _check_relays(relays: tuple[RelaySettings, ...], path: str) -> None:
    """Every relay has a name of its own, a domain goes to one relay at most, and exactly one relay (the
    one without domains) takes the rest: no recipient is left without a relay, none has two."""
    if not relays:
        return
    names: set[str] = set()
    routed: dict[str, str] = {}         # domain -> the relay it goes to
    for number, relay in enumerate(relays):
        if not relay.name:
            raise SettingsError(f"smtp.relays[{number}].name is missing", path=path)
        if relay.name in names:
            raise SettingsError(f"smtp.relays[{number}].name: {relay.name!r} names two relays", path=path)
        names.add(relay.name)
        for domain in relay.domains:
            if domain.lower() in routed:
                raise SettingsError(f"smtp.relays[{number}].domains: {domain} is routed to relay "
                                    f"{routed[domain.lower()]!r} already", path=path)
            routed[domain.lower()] = relay.name
    defaults = [relay.name for relay in relays if not relay.domains]
    if len(defaults) != 1:
        raise SettingsError("smtp.relays: exactly one relay must have no domains (it takes every other domain); "
                            f"found {len(defaults)}", path=path)


def relay_routes(settings: Settings) -> tuple[RelaySettings, ...]:
    """Return the relays that row mail goes through: `smtp.relays`, or `smtp` itself as the one relay."""
    if settings.smtp.relays:
        return settings.smtp.relays
    smtp = settings.smtp
    return (RelaySettings(**{name.name: getattr(smtp, name.name) for name in dataclasses.fields(SmtpConnection)},
                          name="smtp"),)


def through_relay(settings: Settings, relay: SmtpConnection) -> Settings:
    """Return `settings` with `relay` as the `smtp` section, for the transport that sends through it."""
    return dataclasses.replace(settings, smtp=SmtpSettings(
        **{name.name: getattr(relay, name.name) for name in dataclasses.fields(SmtpConnection)}))


def secret_from_env(variable: str, what: str) -> str:
    """Return the secret held in environment variable `variable`, or fail naming the variable."""
    value = os.environ.get(variable)
    if not value:
        raise SettingsError(f"{what}: set the environment variable {variable}")
    return value


def missing_env(variable: str, what: str) -> list[str]:
    """Name the environment variable `variable` (holding `what`) if it is not set; empty when it is."""
    return [] if os.environ.get(variable) else [f"set the environment variable {variable} ({what})"]


def _build(cls: type, data: Any, prefix: str, path: str) -> Any:
    if not isinstance(data, dict):
        raise SettingsError(f"{prefix.rstrip('.') or 'settings'}: expected a mapping", path=path)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, raw in data.items():
        key_path = f"{prefix}{key}"
        if key not in known:
            raise SettingsError(f"unknown key {key_path}", path=path)
        if hints[key] is ChannelsSettings:
            values[key] = _channels(raw, key_path, path)
        else:
            values[key] = _convert(cls, key, hints[key], raw, key_path, path)
    return cls(**values)


def _channels(data: Any, prefix: str, path: str) -> ChannelsSettings:
    """Build each channel's block with the settings class its channel declares."""
    from distributor import registry
    if not isinstance(data, dict):
        raise SettingsError(f"{prefix}: expected a mapping", path=path)
    installed = registry.channels()
    blocks = {}
    for name, raw in data.items():
        if name not in installed:
            raise SettingsError(f"unknown key {prefix}.{name}", path=path)
        blocks[name] = _build(installed[name].settings_class, raw, f"{prefix}.{name}.", path)
    return ChannelsSettings(blocks)


def _convert(owner: type, key: str, hint: Any, raw: Any, key_path: str, path: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, raw, key_path + ".", path)
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if raw is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _convert(owner, key, inner, raw, key_path, path)
    if origin is tuple:
        return _list(owner, key, hint, raw, key_path, path)
    if origin is Literal:
        choices = typing.get_args(hint)
        if raw not in choices:
            raise SettingsError(f"{key_path} must be one of {', '.join(map(str, choices))}", path=path)
        return raw
    if hint is float and isinstance(raw, int) and not isinstance(raw, bool):
        raw = float(raw) if abs(raw) < 2 ** 1000 else math.inf
    if hint is float and type(raw) is float and not math.isfinite(raw):
        raise SettingsError(f"{key_path} must be a finite number, not {raw}", path=path)
    if hint in (bool, int, float, str) and type(raw) is hint:
        _check_value(owner, key, key_path, raw, path)
        return raw
    raise SettingsError(f"{key_path} must be {hint.__name__}, not {type(raw).__name__}", path=path)


MAX_LIST_ITEMS = 100


def _list(owner: type, key: str, hint: Any, raw: Any, key_path: str, path: str) -> tuple[Any, ...]:
    """Read a list of text, each item checked as text, or of blocks (`smtp.relays`), each built as its class."""
    item_type = typing.get_args(hint)[0]
    if not isinstance(raw, list) or len(raw) > MAX_LIST_ITEMS:
        raise SettingsError(f"{key_path} must be a list of at most {MAX_LIST_ITEMS} items", path=path)
    if isinstance(item_type, type) and dataclasses.is_dataclass(item_type):
        return tuple(_build(item_type, item, f"{key_path}[{number}].", path) for number, item in enumerate(raw))
    if typing.get_args(hint) != (str, ...):
        raise TypeError(f"{owner.__name__}.{key}: only tuple[str, ...] is read from settings")
    for number, item in enumerate(raw):
        if type(item) is not str:
            raise SettingsError(f"{key_path}[{number}] must be str, not {type(item).__name__}", path=path)
        _check_text(owner, key, f"{key_path}[{number}]", item, path)
    if len(set(raw)) != len(raw):
        raise SettingsError(f"{key_path} names an item twice", path=path)
    return tuple(raw)


def _check_value(owner: type, key: str, key_path: str, value: Any, path: str) -> None:
    """Check a value against what its block declares: `text_checks` for text (besides one line of
    printable characters), `bounds` (inclusive; None: unbounded) for numbers that would make a run
    misbehave rather than fail."""
    if isinstance(value, str):
        _check_text(owner, key, key_path, value, path)
        return
    if isinstance(value, bool):
        return
    low, high = getattr(owner, "bounds", {}).get(key, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
        shown = f"{value:.6g}" if abs(value) < 1e300 else "a larger number"
        raise SettingsError(f"{key_path} must be {bounds}, not {shown}", path=path)


def unsubscribe_url_problem(value: str) -> str | None:
    """Say what is wrong with an unsubscribe URL pattern: absolute http(s), holding {token}."""
    return http_url_problem(value) or (None if "{token}" in value else "must hold {token}")


def list_name_problem(value: str) -> str | None:
    """Say what is wrong with a list's name: lower-case letters, digits, - and _, at most 64."""
    return None if re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", value) else \
        f"{value!r} is not a list name (lower-case letters, digits, - and _, such as weekly)"


def public_url_problem(value: str) -> str | None:
    """Say what is wrong with the public URL of `distributor serve`: absolute http(s), ending in /."""
    return http_url_problem(value) or (None if value.endswith("/") and "?" not in value and "#" not in value
                                       else "must end with / and hold no ? or #, e.g. https://example.org/")


def relay_name_problem(value: str) -> str | None:
    return None if re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", value) else \
        f"{value!r} is not a relay name (lower-case letters, digits, - and _, such as primary)"


def postgres_url_problem(value: str) -> str | None:
    """Say what is wrong with a PostgreSQL URL: postgresql://[user@]host[:port]/database, no password."""
    parts = urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        return "must be postgresql://user@host:port/database"
    if parts.password is not None:
        return "holds a password: put it in the environment variable ledger.password_env names"
    return None


def ip_address_problem(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        return f"{value!r} is not an IP address"


def domain_problem(value: str) -> str | None:
    """Say what is wrong with a mail domain: a host name of LDH labels with a dot, not an IP address."""
    try:
        ipaddress.ip_address(value)
        return f"{value!r} is an IP address, not a domain"
    except ValueError:
        pass
    return hostname_problem(value) or (None if "." in value else f"{value!r} is not a domain such as example.org")


def selector_problem(value: str) -> str | None:
    """Say what is wrong with a DKIM selector: one or more DNS labels (RFC 6376 3.1)."""
    label = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    return None if re.fullmatch(rf"{label}(?:\.{label})*", value) and len(value) <= 200 else \
        f"{value!r} is not a DKIM selector (DNS labels such as s2026)"


def mailbox_folder_problem(value: str) -> str | None:
    """Say what is wrong with an IMAP folder name: printable ASCII without quotes, backslashes or wildcards."""
    return None if re.fullmatch(r"[!#-\[\]-~ ]{1,200}", value) and "%" not in value and "*" not in value else \
        f"{value!r} is not a folder name (printable ASCII without quotes, backslashes, % or *)"


def folder_problem(value: str) -> str | None:
    """Say so unless `value` names an existing folder."""
    return None if Path(value).expanduser().is_dir() else f"no such folder {value!r}"


def time_zone_problem(value: str) -> str | None:
    try:
        ZoneInfo(value)
        return None
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai)"


def language_problem(value: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*", value) else \
        f"{value!r} is not a language tag such as zh, en or zh-CN"


def _environment_variable(value: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", value) else \
        f"{value!r} is not an environment variable name (letters, digits and _)"


# Every address and header value is checked once, here, by the check its block declares, so no bad byte
# reaches a header or an SMTP command.
_MAX_TEXT = 4096       # any other text: a path, a name, an id


def _check_text(owner: type, key: str, key_path: str, value: str, path: str) -> None:
    check = getattr(owner, "text_checks", {}).get(key)
    if check is None and key.endswith("_env"):
        check = _environment_variable
    problem = text_problem(value, max_length=_MAX_TEXT) or (check(value) if check else None)
    if problem:
        raise SettingsError(f"{key_path}: {problem}", path=path)
