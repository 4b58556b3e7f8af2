"""The preferences page: the unsubscribe link's page for a reader of the subscriber store.

Next to the button that unsubscribes from everything, a reader in the store sees a checkbox per
list (every list a row channel sends to, and those the signup form offers), ticked where they are
active, and, for a list that several channels send, a choice of format (email or plain text).
Saving ticks lists `active` and unticks those they were on, with `preferences` as the source.

A suppression the reader made themself (one-click, the page's button) is lifted when they tick a
list again: the link in their mail proves the address is theirs. One from a bounce, a complaint or
a command is not; the page says the address cannot be mailed, and no list becomes active. Nor does
a list whose own status is `bounced` or `complained` (an import, or a publisher who lifted the
suppression for another list): the page shows it without a checkbox to tick, and a POST that ticks
it leaves it as it is. Both are `signup.blocked`, so the page refuses what the signup refuses. A
list the reader left (here, or by one-click) is theirs to tick again.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from distributor import registry
from distributor.audience.lists import formats_offered, known_lists, lists_by_channel
from distributor.audience.signup import blocked
from distributor.ledger.subscribers import StoredSubscriber, SubscriberStore
from distributor.render.templating import environment
from distributor.settings import Settings

if TYPE_CHECKING:
    from distributor.ledger.store import Ledger

SAVE_FIELD, SAVE_VALUE = "save", "preferences"     # the name and value of the preferences form's button
LIST_FIELD = "list"                                 # one value per ticked list
FORMAT_PREFIX = "format."                           # format.<list>: the channel the reader reads it through
SOURCE = "preferences"
_WORDS = {
    "zh": {
        "preferences": ("订阅设置", "选择你想接收的 {site} 列表和格式。"),
        "saved": ("已保存", "你的订阅设置已保存。"),
        "refused": ("未保存", "请求中有未知的列表或格式，没有做任何更改。请使用订阅设置页面上的表单。"),
        "blocked": "这个地址目前不能接收邮件（投递被退回、被投诉或由发布者停止）；勾选列表不会恢复发送。",
        "list_blocked": "这个地址不能接收这个列表的邮件（投递被退回或被投诉）。",
        "lists": "列表", "format": "格式：", "save": "保存设置", "all": "不想再收到任何邮件：",
        "formats": {"email": "邮件", "text": "纯文本"},
    },
    "en": {
        "preferences": ("Your subscription", "Choose the lists of {site} you receive, and how."),
        "saved": ("Saved", "Your preferences are saved."),
        "refused": ("Not saved", "The request named a list or format this page does not offer; nothing was "
                                 "changed. Please use the form on the preferences page."),
        "blocked": "This address cannot be mailed at present (a delivery bounced, a complaint, or the publisher "
                   "stopped it); ticking a list does not resume mail.",
        "list_blocked": "This address cannot be mailed on this list (a delivery bounced, or a complaint).",
        "lists": "Lists", "format": "Format:", "save": "Save", "all": "To receive nothing at all:",
        "formats": {"email": "Email", "text": "Plain text"},
    },
}


@dataclass(frozen=True)
class ListOffer:
    """A list the page offers, and the channels a reader may choose between for it (one or none:
    nothing to choose)."""

    name: str
    formats: tuple[str, ...]


@dataclass(frozen=True)
class ListStanding:
    """How one offered list stands for the reader, as the form shows it."""

    name: str
    formats: tuple[str, ...]
    ticked: bool
    format: str
    blocked: bool       # bounced or complained on this list: not the reader's to tick


@dataclass(frozen=True)
class Preferences:
    """What the page shows a reader: their lists, and whether the address can be mailed at all."""

    lists: tuple[ListStanding, ...]
    blocked: bool


@dataclass(frozen=True)
class Choice:
    """A preferences POST checked against the offered lists: the lists ticked, the formats chosen."""

    ticked: frozenset[str]
    formats: Mapping[str, str]


def offered_lists(settings: Settings) -> tuple[ListOffer, ...]:
    """Return every list a row channel sends to, then those only the signup form offers."""
    served = lists_by_channel(registry.row_channels(registry.names()), settings)
    names = dict.fromkeys((*known_lists(served), *settings.signup.lists))
    return tuple(ListOffer(name, formats_offered(name, served)) for name in names)


def is_preferences_post(fields: Mapping[str, Sequence[str]]) -> bool:
    """Whether the POST came from the preferences form's button."""
    return list(fields.get(SAVE_FIELD, ())) == [SAVE_VALUE]


def parse_choice(fields: Mapping[str, Sequence[str]], offered: tuple[ListOffer, ...]) -> Choice | None:
    """Check a preferences POST against the allow list of `offered`; None when it names a list or a
    format the page does not offer, or gives one list two formats."""
    by_name = {offer.name: offer for offer in offered}
    ticked = frozenset(fields.get(LIST_FIELD, ()))
    if not ticked <= by_name.keys():
        return None
    formats: dict[str, str] = {}
    for field, values in fields.items():
        if not field.startswith(FORMAT_PREFIX):
            continue
        offer = by_name.get(field.removeprefix(FORMAT_PREFIX))
        if offer is None or len(values) != 1 or values[0] not in offer.formats:
            return None
        formats[offer.name] = values[0]
    return Choice(ticked, formats)


def preferences(ledger: Ledger, subscriber: StoredSubscriber, offered: tuple[ListOffer, ...]) -> Preferences:
    """Return what the page shows `subscriber` (read only: a GET changes nothing)."""
    standings = []
    for offer in offered:
        on = subscriber.on(offer.name)
        current = on.format if on is not None else "email"
        shown = current if current in offer.formats or not offer.formats else offer.formats[0]
        status = _status(subscriber, offer.name)
        standings.append(ListStanding(offer.name, offer.formats, status == "active", shown, blocked(None, status)))
    return Preferences(tuple(standings), blocked(_suppression_source(ledger, subscriber.address), None))


def save(ledger: Ledger, address: str, choice: Choice, offered: tuple[ListOffer, ...]) -> StoredSubscriber | None:
    """Apply `choice` to the reader at `address` in one ledger transaction; return them as they are now
    (None when they are not in the store). The caller holds the lock that serialises ledger calls."""
    store = SubscriberStore(ledger)
    with ledger.transaction():
        subscriber = store.subscriber(address)
        if subscriber is None:
            return None
        source = _suppression_source(ledger, address)
        resumed = {name for name in choice.ticked if not blocked(source, _status(subscriber, name))}
        if resumed and source is not None:
            ledger.unsuppress(address)      # the reader's own suppression: they ask for mail again
        for offer in offered:
            on, wanted = subscriber.on(offer.name), choice.formats.get(offer.name)
            if offer.name in resumed:
                # A new list that one channel sends is read through that channel.
                joined = offer.formats[0] if on is None and len(offer.formats) == 1 else None
                store.set_status(address, offer.name, "active", source=SOURCE, format=wanted or joined)
            elif on is None:
                continue
            elif offer.name not in choice.ticked and on.status in ("active", "unconfirmed"):
                store.set_status(address, offer.name, "unsubscribed", source=SOURCE, format=wanted)
            elif wanted is not None and wanted != on.format:
                store.set_status(address, offer.name, on.status, source=SOURCE, format=wanted)
        return store.subscriber(address)


def render(settings: Settings, language: str, shown: Preferences, what: str, *, button: str, field: str,
           value: str) -> str:
    """Return the page in `language`, headed by `what` ("preferences" or "saved"); `button`, `field` and
    `value` are the unsubscribe-all button's, as on the page of a reader outside the store."""
    words = _WORDS[language]
    heading, message = words[what]
    site = settings.site.name
    return environment(settings.channels.email.template_dir).get_template("web/preferences.html").render(
        language=language, site_name=site, heading=heading, message=message.format(site=site),
        button=button, field=field, value=value, words=words, lists=shown.lists, blocked=shown.blocked,
        list_field=LIST_FIELD, format_prefix=FORMAT_PREFIX, save_field=SAVE_FIELD, save_value=SAVE_VALUE)


def refusal(settings: Settings, language: str) -> str:
    """Return the page that answers a refused preferences POST."""
    heading, message = _WORDS[language]["refused"]
    return environment(settings.channels.email.template_dir).get_template("web/message.html").render(
        language=language, site_name=settings.site.name, heading=heading, message=message)


def _suppression_source(ledger: Ledger, address: str) -> str | None:
    found = ledger.suppression(address)
    return found.source if found is not None else None


def _status(subscriber: StoredSubscriber, list_name: str) -> str | None:
    on = subscriber.on(list_name)
    return on.status if on is not None else None
