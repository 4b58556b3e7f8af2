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
import math
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from distributor.validate.addresses import (ehlo_name_problem, explained_address_problem, hostname_problem, http_url_problem,
                        list_id_problem, named_address_problem, text_problem)
from distributor.validate.bounded import load_yaml, read_regular_file
from distributor.errors import InputError, SettingsError

MAX_SETTINGS_BYTES = 1024 * 1024


@dataclass(frozen=True)
class SiteSettings:
    name: str = "Example Weekly"
    base_url: str = "https://example.org"
    language: str = "zh"
    # Local checkout of the site, to read site-relative images from (WeChat uploads, preview).
    site_root: str | None = None


@dataclass(frozen=True)
class EmailSettings:
    enabled: bool = True
    from_address: str = "newsletter@example.org"
    from_name: str = "Example Weekly"
    reply_to: str | None = None
    # Envelope sender (Return-Path); the From address when unset.
    return_path: str | None = None
    list_id: str = "weekly.example.org"
    # {token} is replaced by the subscriber's signed unsubscribe token.
    unsubscribe_url: str = "https://example.org/unsubscribe/{token}"
    unsubscribe_mailto: str | None = "unsubscribe@example.org"
    subscribers: str | None = None
    # A folder whose templates override the packaged ones (email/issue.html ...).
    template_dir: str | None = None


@dataclass(frozen=True)
class TextSettings:
    enabled: bool = True
    subscribers: str | None = None
    output_dir: str | None = None
    width: int = 72


@dataclass(frozen=True)
class WechatSettings:
    enabled: bool = True
    app_id: str | None = None
    app_secret_env: str = "WECHAT_APP_SECRET"
    base_url: str = "https://api.weixin.qq.com/"
    mode: Literal["draft", "publish", "mass"] = "draft"
    author: str | None = None
    default_cover: str | None = None
    tag_id: int | None = None
    need_open_comment: bool = False
    only_fans_can_comment: bool = False
    timeout_seconds: float = 15.0
    # Mode publish: how often to ask whether the article is out, and how long to wait at most.
    publish_poll_seconds: float = 5.0
    publish_wait_seconds: float = 600.0
    # One run at a time drives an issue's WeChat steps, under a lease in the ledger renewed every third
    # of lease_seconds (a run that died loses it that long after); another run waits for it at most
    # lease_wait_seconds, then stops (exit 3).
    lease_seconds: float = 60.0
    lease_wait_seconds: float = 30.0


@dataclass(frozen=True)
class ChannelsSettings:
    email: EmailSettings = field(default_factory=EmailSettings)
    text: TextSettings = field(default_factory=TextSettings)
    wechat: WechatSettings = field(default_factory=WechatSettings)


@dataclass(frozen=True)
class SmtpSettings:
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


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = 5
    base_delay_seconds: float = 1.0
    max_delay_seconds: float = 60.0
    deadline_seconds: float = 900.0


@dataclass(frozen=True)
class ScheduleSettings:
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
    path: str = "~/.local/share/distributor/ledger.sqlite3"
    # How long a command waits for another process's write lock on the ledger before it stops (exit 3).
    lock_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class Settings:
    site: SiteSettings = field(default_factory=SiteSettings)
    channels: ChannelsSettings = field(default_factory=ChannelsSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
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
        line = exc.problem_mark.line + 1 if getattr(exc, "problem_mark", None) else None
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SettingsError(f"invalid YAML: {problem}", path=str(path), line=line) from exc
    if data is None:
        return Settings()
    return _build(Settings, data, "", str(path))


def secret_from_env(variable: str, what: str) -> str:
    """Return the secret held in environment variable `variable`, or fail naming the variable."""
    value = os.environ.get(variable)
    if not value:
        raise SettingsError(f"{what}: set the environment variable {variable}")
    return value


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
        values[key] = _convert(hints[key], raw, key_path, path)
    return cls(**values)


def _convert(hint: Any, raw: Any, key_path: str, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, raw, key_path + ".", path)
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if raw is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _convert(inner, raw, key_path, path)
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
        _check_value(key_path, raw, path)
        return raw
    raise SettingsError(f"{key_path} must be {hint.__name__}, not {type(raw).__name__}", path=path)


# Numbers outside these bounds (inclusive; None: unbounded) would make a run misbehave rather than fail.
_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "smtp.port": (1, 65535), "smtp.pool_size": (1, 1000), "smtp.timeout_seconds": (0.01, None),
    "smtp.per_second": (0, None), "smtp.hourly_cap": (1, None), "smtp.daily_cap": (1, None),
    "retry.attempts": (1, 1000), "retry.base_delay_seconds": (0, None), "retry.max_delay_seconds": (0, None),
    "retry.deadline_seconds": (0, None), "channels.text.width": (20, 1000),
    "channels.wechat.timeout_seconds": (0.01, None), "channels.wechat.publish_poll_seconds": (0.01, None),
    "channels.wechat.publish_wait_seconds": (0, None), "channels.wechat.lease_seconds": (0.3, None),
    "channels.wechat.lease_wait_seconds": (0, None), "schedule.max_lateness_seconds": (0, None),
    "schedule.lease_seconds": (0.1, None), "schedule.poll_seconds": (0.01, None),
    "ledger.lock_timeout_seconds": (0.01, 3600),
}


def _check_value(key_path: str, value: Any, path: str) -> None:
    if isinstance(value, str):
        _check_text(key_path, value, path)
        return
    low, high = _BOUNDS.get(key_path, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
        shown = f"{value:.6g}" if abs(value) < 1e300 else "a larger number"
        raise SettingsError(f"{key_path} must be {bounds}, not {shown}", path=path)


def _unsubscribe_url(value: str) -> str | None:
    return http_url_problem(value) or (None if "{token}" in value else "must hold {token}")


def _existing_folder(value: str) -> str | None:
    return None if Path(value).expanduser().is_dir() else f"no such folder {value!r}"


def _time_zone(value: str) -> str | None:
    try:
        ZoneInfo(value)
        return None
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai)"


def _language(value: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*", value) else \
        f"{value!r} is not a language tag such as zh, en or zh-CN"


def _environment_variable(value: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", value) else \
        f"{value!r} is not an environment variable name (letters, digits and _)"


# What a text key must be besides one line of printable characters: a check saying what is wrong, else None.
# Every address and header value is checked here, once, so no bad byte reaches a header or an SMTP command.
_TEXT_CHECKS: dict[str, Callable[[str], str | None]] = {
    "site.name": text_problem,
    "site.base_url": http_url_problem,
    "site.site_root": _existing_folder,
    "site.language": _language,
    "channels.email.from_address": explained_address_problem,
    "channels.email.from_name": text_problem,
    "channels.email.reply_to": named_address_problem,
    "channels.email.return_path": explained_address_problem,
    "channels.email.list_id": list_id_problem,
    "channels.email.unsubscribe_url": _unsubscribe_url,
    "channels.email.unsubscribe_mailto": explained_address_problem,
    "channels.email.template_dir": _existing_folder,
    "channels.wechat.base_url": http_url_problem,
    "smtp.host": hostname_problem,
    "smtp.ehlo_name": ehlo_name_problem,
    "schedule.operator_email": explained_address_problem,
    "schedule.timezone": _time_zone,
}
_MAX_TEXT = 4096       # any other text: a path, a name, an id


def _check_text(key_path: str, value: str, path: str) -> None:
    check = _TEXT_CHECKS.get(key_path)
    if check is None and key_path.rpartition(".")[2].endswith("_env"):
        check = _environment_variable
    problem = text_problem(value, max_length=_MAX_TEXT) or (check(value) if check else None)
    if problem:
        raise SettingsError(f"{key_path}: {problem}", path=path)
