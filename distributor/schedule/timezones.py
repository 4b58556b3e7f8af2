"""Read and show wall-clock times in an IANA zone, with the daylight-saving gap and fold made explicit.

A local time inside a spring-forward gap (02:30 on the night clocks jump from 02:00 to 03:00)
never happens, so it is refused. A local time inside a fall-back fold happens twice; it is read
as the first occurrence (the earlier instant, still on summer time) and the caller is told so.
"""
from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tzlocal

from distributor.errors import InputError
from distributor.settings import Settings

# "YYYY-MM-DD HH:MM[:SS]", a T allowed for the space; a field may drop its leading zero.
_SHAPE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2}))?")


@dataclass(frozen=True)
class LocalTime:
    """A wall-clock time read in `zone`: the instant it names (`utc`) and, when the wall time
    happens twice, a note saying which occurrence was taken."""

    utc: dt.datetime
    zone: str
    note: str | None = None

    def timestamp(self) -> float:
        return self.utc.timestamp()


def zone(name: str) -> ZoneInfo:
    """Return the IANA zone called `name`; an unknown name is bad input."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InputError(f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)") from exc


def display_zone_name(settings: Settings) -> str:
    """Return the zone times are read and shown in: `schedule.timezone`, else the system's zone
    (TZ, else /etc/localtime), else UTC."""
    if settings.schedule.timezone:
        return settings.schedule.timezone
    try:
        return tzlocal.get_localzone_name() or "UTC"
    except (ZoneInfoNotFoundError, LookupError, ValueError):
        return "UTC"


def read_local_time(text: str, zone_name: str) -> LocalTime:
    """Read "YYYY-MM-DD HH:MM[:SS]" as a wall-clock time in `zone_name`; refuse a time that does
    not exist there, and take the first of two that do."""
    place = zone(zone_name)
    naive = _parse(text)
    first, second = naive.replace(tzinfo=place, fold=0), naive.replace(tzinfo=place, fold=1)
    if _wall_time(first, place) != naive and _wall_time(second, place) != naive:
        raise InputError(f"{text.strip()} does not exist in {zone_name}: the clocks skip it "
                         f"(daylight saving starts); pick a time outside the gap")
    if first.utcoffset() != second.utcoffset():
        note = (f"{text.strip()} happens twice in {zone_name} (daylight saving ends); "
                f"taking the first, {first.isoformat(sep=' ', timespec='minutes')}")
        return LocalTime(first.astimezone(dt.timezone.utc), zone_name, note)
    return LocalTime(first.astimezone(dt.timezone.utc), zone_name)


def show(timestamp: float, zone_name: str) -> str:
    """Return the instant as "YYYY-MM-DD HH:MM ABBR (+HH:MM)" in `zone_name`."""
    local = dt.datetime.fromtimestamp(timestamp, zone(zone_name))
    offset = local.isoformat(timespec="minutes")[-6:]
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({offset})"


def duration(seconds: float) -> str:
    """Return a span of time the way an operator reads it: "45 s", "12 min", "3 h 5 min", "2 d 4 h"."""
    seconds = int(max(0.0, seconds))
    if seconds < 120:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    if hours >= 48:
        return f"{hours // 24} d {hours % 24} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _parse(text: str) -> dt.datetime:
    match = _SHAPE.fullmatch(text.strip())
    if match is None:
        raise InputError(f"--at {text!r} is not YYYY-MM-DD HH:MM[:SS] (a wall-clock time; the zone comes from --tz)")
    year, month, day, hour, minute, second = (int(part or 0) for part in match.groups())
    try:
        date = dt.date(year, month, day)
    except ValueError as exc:
        raise InputError(f"--at {text!r}: the date {year:04d}-{month:02d}-{day:02d} does not exist"
                         f"{_days_in(year, month)}") from exc
    try:
        return dt.datetime.combine(date, dt.time(hour, minute, second))
    except ValueError as exc:
        raise InputError(f"--at {text!r}: {match.string[match.start(4):]} is not a time of day") from exc


def _days_in(year: int, month: int) -> str:
    if not 1 <= month <= 12:
        return f" (there is no month {month})"
    if year < dt.MINYEAR:
        return f" (there is no year {year})"
    return f" ({dt.date(year, month, 1):%B %Y} has {calendar.monthrange(year, month)[1]} days)"


def _wall_time(aware: dt.datetime, place: ZoneInfo) -> dt.datetime:
    """Return the wall-clock time the instant `aware` names, read back in `place`, without a zone."""
    return aware.astimezone(dt.timezone.utc).astimezone(place).replace(tzinfo=None, fold=0)
