"""Settings: a YAML file read into frozen dataclasses over embedded defaults.

Every key has a default, so the distributor runs with no settings file at all (a dry run of the
bundled example). A key that is unknown or of the wrong type is a `SettingsError` naming its
path, e.g. `channels.email.port`. Secrets never live in the file: a key ending in `_env` names
the environment variable that holds the secret, read only when a channel needs it.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import SettingsError


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
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read settings: {exc}", path=str(path)) from exc
    try:
        data = yaml.safe_load(text)
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
        raise SettingsError(f"{prefix or 'settings'}: expected a mapping", path=path)
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
        raw = float(raw)
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
    "channels.wechat.publish_wait_seconds": (0, None), "schedule.max_lateness_seconds": (0, None),
    "schedule.lease_seconds": (0.1, None), "schedule.poll_seconds": (0.01, None),
}


def _check_value(key_path: str, value: Any, path: str) -> None:
    low, high = _BOUNDS.get(key_path, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
        raise SettingsError(f"{key_path} must be {bounds}, not {value:g}", path=path)
    if key_path == "channels.email.unsubscribe_url":
        if "{token}" not in value or not value.startswith(("https://", "http://")) \
                or not value.isascii() or any(char.isspace() for char in value) or len(value) > 800:
            raise SettingsError(f"{key_path} must be an http(s) URL of ASCII characters without spaces, "
                                "holding {token}, at most 800 characters", path=path)
