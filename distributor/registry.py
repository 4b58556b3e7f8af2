"""The channels this installation has: every class registered under the entry point group
`distributor.channels`, the built-in email, WeChat and text channels among them (see pyproject.toml).

Each entry point is loaded once, on first use, and checked: its name must be a settings key
(lowercase letters, digits, `_`), it must be a `Channel` whose `name` is the entry point's name, and
its settings block a dataclass with an `enabled` field. A channel that fails these checks, or fails to
import, stops the command with a line naming the entry point and the package it came from.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from importlib.metadata import EntryPoint, entry_points

from distributor.channel import Channel, RowChannel, StepChannel
from distributor.errors import SettingsError

GROUP = "distributor.channels"
# The built-in channels come first, in this order; others follow by name.
BUILT_IN = ("email", "wechat", "text")


@functools.cache
def channels() -> dict[str, Channel]:
    """Return one instance of every registered channel, by name, the built-in ones first."""
    found: dict[str, Channel] = {}
    for point in entry_points(group=GROUP):
        if point.name not in found:        # the first distribution on the path wins, as for imports
            found[point.name] = _load(point)
    order = [name for name in BUILT_IN if name in found] + sorted(set(found) - set(BUILT_IN))
    return {name: found[name] for name in order}


def names() -> tuple[str, ...]:
    """Return the names of every registered channel, the built-in ones first."""
    return tuple(channels())


def channel(name: str) -> Channel:
    """Return the channel called `name`."""
    try:
        return channels()[name]
    except KeyError:
        raise SettingsError(f"unknown channel {name!r}; the channels installed are {', '.join(names())}") from None


def row_channels(chosen: tuple[str, ...]) -> tuple[RowChannel, ...]:
    """Return the per-recipient channels among `chosen`, in that order."""
    return tuple(found for name in chosen if isinstance(found := channel(name), RowChannel))


def step_channels(chosen: tuple[str, ...]) -> tuple[StepChannel, ...]:
    """Return the checkpointed-step channels among `chosen`, in that order."""
    return tuple(found for name in chosen if isinstance(found := channel(name), StepChannel))


def _load(point: EntryPoint) -> Channel:
    where = f"entry point {point.name} = {point.value} (group {GROUP}" + (
        f", package {point.dist.name})" if point.dist is not None else ")")
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", point.name):
        raise SettingsError(f"{where}: a channel's name must be lowercase letters, digits and _")
    try:
        loaded = point.load()
    except Exception as exc:          # a broken plug-in names itself instead of showing a traceback
        raise SettingsError(f"{where}: cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(loaded, type) and issubclass(loaded, (RowChannel, StepChannel))):
        raise SettingsError(f"{where}: is not a RowChannel or StepChannel class")
    if getattr(loaded, "name", None) != point.name:
        raise SettingsError(f"{where}: the class says its name is {getattr(loaded, 'name', None)!r}")
    settings_class = getattr(loaded, "settings_class", None)
    if not (dataclasses.is_dataclass(settings_class) and isinstance(settings_class, type)
            and "enabled" in {field.name for field in dataclasses.fields(settings_class)}):
        raise SettingsError(f"{where}: its settings_class must be a dataclass with an `enabled` field")
    return loaded()
