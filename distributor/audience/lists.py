"""Which readers of the subscriber store each row channel sends to.

A channel names its lists in settings (`channels.email.lists: [weekly]`). A list that one channel
names goes to all its active readers through that channel. A list that several name (email and
text both send `weekly`) goes to each reader through the channel their format names, and a reader
whose format names none of them gets it through the first (in registry order).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from distributor.channel import RowChannel
from distributor.settings import Settings


@dataclass(frozen=True)
class Route:
    """Which of a list's active readers a row channel sends to: those whose format is one of
    `formats`, or with `other_formats`, every format but `excluded` (the list's other channels)."""

    list: str
    formats: tuple[str, ...]
    other_formats: bool = False
    excluded: tuple[str, ...] = ()


def lists_by_channel(channels: Iterable[RowChannel], settings: Settings) -> dict[str, tuple[str, ...]]:
    """Return the lists each enabled row channel names, by channel, for those that name any. A disabled
    channel sends nothing, so it is no format to choose: its readers get the list through the others."""
    return {channel.name: lists for channel in channels
            if settings.channels[channel.name].enabled and (lists := channel.recipient_lists(settings))}


def routes(channel: str, served: dict[str, tuple[str, ...]]) -> tuple[Route, ...]:
    """Return the routes of `channel` over `served` (every row channel's lists, as `lists_by_channel`)."""
    found = []
    for list_name in served.get(channel, ()):
        serving = tuple(name for name, lists in served.items() if list_name in lists)
        first = serving[0] == channel
        found.append(Route(list_name, (channel,), other_formats=first, excluded=serving if first else ()))
    return tuple(found)


def formats_offered(list_name: str, served: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Return the channels a reader of `list_name` may choose between (one: nothing to choose)."""
    return tuple(name for name, lists in served.items() if list_name in lists)


def known_lists(served: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Return every list some channel sends to, each once, in the order the settings name them."""
    return tuple(dict.fromkeys(name for lists in served.values() for name in lists))


def sharing(channel: str, served: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Return the other channels that send one of `channel`'s lists: a reader reached through one of them
    must not get the same issue through `channel` too."""
    lists = served.get(channel, ())
    return tuple(name for name, theirs in served.items() if name != channel and set(lists) & set(theirs))
