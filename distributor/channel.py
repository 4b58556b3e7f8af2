"""The channel contract: what a channel declares, how it renders, and which core run delivers it.

A channel is a class with a `name`, a settings block (`settings_class`: a frozen dataclass whose every
field has a default, read from `channels.<name>` in the settings file and checked there), a pure
`render` of the issue's `Body` into its rendition, and one of two ways of being delivered, both run
by the core:

- `RowChannel` (email, text): one ledger row per recipient. The core's row run
  (`delivery.row_run.RowRun`) claims each row, rate-limits, retries and records the outcome; the
  channel's `RowSender` builds a recipient's message and makes exactly one attempt to hand it over.
- `StepChannel` (WeChat): checkpointed steps, e.g. upload → cover → draft → publish. The core's step
  run (`delivery.step_run`) holds the issue's lease, retries each call and records each step; the
  channel's steps say what to call and what to record.

Either way the adapter makes one attempt and classifies a failure into `distributor.errors`:
`PermanentDeliveryError` (this recipient never will), `TransientDeliveryError` (try again later; a
`SenderThrottledError` slows the whole channel down), `UncertainDeliveryError` (it may have gone
through: never repeated), `ChannelStoppedError` (the service refuses everyone for now: the row goes
back to pending and the run stops, exit 3, to be resumed). It never retries, sleeps or writes the
ledger. A dry run hands the channel a sink (`open_transport(..., sink=out)`, `steps(..., sink=out)`)
instead of its real client: the same code runs, nothing leaves the machine.

Adding a channel, say a fax gateway, in a package of its own:

1. Write its settings block: a frozen dataclass with `enabled: bool` and whatever it needs, every
   field defaulted; declare per-key checks in `text_checks` / `bounds` (see `settings.py`).
2. Subclass `RowChannel` (per-recipient sends) or `StepChannel`, set `name` and `settings_class`,
   and implement `render` (pure: no network, no ledger) and the delivery half. A row channel's
   recipients come from the lists of the ledger's subscriber store its `recipient_lists` names, or
   from the subscriber file its `recipients_file` names (CSV or YAML with an `email` column), both
   read by the core: the address identifies the recipient. The core signs each row's
   unsubscribe link with `$DISTRIBUTOR_UNSUBSCRIBE_SECRET` and refuses a real run without it.
   `check` lets `distributor check` and `schedule add` reach the channel's service.
3. Register the class under the entry point group `distributor.channels` in its pyproject.toml:

       [project.entry-points."distributor.channels"]
       fax = "distributor_fax:FaxChannel"

   Once installed, `channels.fax` is a settings block, `--channel fax` is accepted, `preview` writes
   its files, and `publish`, a resumed `publish`, `status` and `check` handle it like the built-in
   channels. tests/pager_channel.py is such a channel, registered only by the tests.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TextIO, TypeVar

from distributor.models import Body, Issue

if TYPE_CHECKING:
    from distributor.settings import Settings


# --- the contract -----------------------------------------------------------------------------------


class Channel(ABC):
    """What every channel declares and renders. Subclass `RowChannel` or `StepChannel`."""

    name: ClassVar[str]
    settings_class: ClassVar[type]

    @abstractmethod
    def render(self, issue: Issue, body: Body, settings: Settings) -> Rendition:
        """Render the issue for this channel: pure, the same input always gives the same rendition."""

    @abstractmethod
    def summary(self, rendition: Any) -> RenditionSummary:
        """Return the rendition's size, links and images."""

    @abstractmethod
    def preview_files(self, rendition: Any, issue: Issue, settings: Settings) -> dict[str, bytes]:
        """Return the files `preview` writes for this rendition, by name."""

    def refusals(self, rendition: Any) -> list[str]:
        """Say why publishing must refuse this rendition (a limit it breaks); empty when none."""
        return []

    def configuration_problems(self, settings: Settings, *, test_copy: bool = False) -> list[str]:
        """Say what in the settings keeps this channel from delivering; empty when nothing does."""
        return []

    def archive(self, rendition: Any, issue: Issue, settings: Settings) -> ArchiveFile | None:
        """Return a file to write when the issue is published, if the channel keeps one."""
        return None

    def check(self, settings: Settings, cache: KeyValueCache) -> ServiceCheck | None:
        """Reach the service this channel delivers through as a publish would (connect, log in), and
        send nothing; None when there is nothing to check. Channels of one transport group are checked
        once."""
        return None

    def dns_checks(self, settings: Settings) -> list[ServiceCheck]:
        """Look up what receivers will find in DNS about this channel's deliveries (`check --dns`), one
        check per record; [] for a channel DNS has no say in."""
        return []


class RowChannel(Channel):
    """A channel delivered one recipient at a time, each recipient a ledger row."""

    # Channels of one group share one transport in a run (email and text go through one SMTP pool).
    transport_group: ClassVar[str] = ""

    @abstractmethod
    def recipients_file(self, settings: Settings) -> str | None:
        """Return the subscriber file this channel sends to, or None when it has none."""

    def recipient_lists(self, settings: Settings) -> tuple[str, ...]:
        """Return the lists of the subscriber store this channel sends to (none by default). A reader on
        a list that several channels send to reads it through the one their format names."""
        return ()

    @abstractmethod
    def open_transport(self, settings: Settings, *, sink: TextIO | None = None) -> RowTransport:
        """Return the transport this channel hands its messages to; with `sink`, one that sends nothing
        and shows on `sink` what it would send (the dry run)."""

    @abstractmethod
    def sender(self, rendition: Any, issue: Issue, settings: Settings, transport: RowTransport,
               unsubscribe_url: Callable[[Recipient], str]) -> RowSender:
        """Return the sender of this issue's messages through `transport`, prepared once per issue."""

    def limits(self, settings: Settings) -> SendLimits:
        """Return how fast this channel may send; the channels of one transport group share the first's."""
        return SendLimits()

    def describe(self, rendition: Any, issue: Issue, settings: Settings, recipients: int) -> str:
        """Say in one line what the channel is about to send."""
        return f"{recipients} recipients"


class StepChannel(Channel):
    """A channel delivered as checkpointed steps under a lease (one account, not a list of recipients)."""

    label: ClassVar[str]        # the channel's name in messages ("WeChat")

    @abstractmethod
    def steps(self, rendition: Any, issue: Issue, settings: Settings, cache: KeyValueCache, *,
              sink: TextIO | None = None, preview_to: str | None = None) -> Steps[StepOutcome]:
        """Return the steps that deliver the rendition through the channel's client (its state kept in
        `cache`); with `sink`, through a console client that shows each call on `sink` and calls nothing.
        `preview_to` sends a preview to that one account instead (`publish --to-wechat`)."""

    @abstractmethod
    def lease_times(self, settings: Settings) -> LeaseTimes:
        """Return the lease the step run holds on an issue's steps while it works."""

    @abstractmethod
    def describe(self, rendition: Any, settings: Settings) -> str:
        """Say in one line what the channel is about to do."""

    def state(self, recorded: RecordedSteps, issue: Issue, settings: Settings,
              publish_command: str) -> StepState | None:
        """Return what `status` shows of the recorded steps (None when nothing is recorded)."""
        return None


# --- what a row channel exchanges with the row run --------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """One row's recipient: the address, the name to greet, the opaque id of its unsubscribe token."""

    address: str
    name: str | None = None
    subscriber_id: str | None = None


@dataclass(frozen=True)
class PreparedMessage:
    """One recipient's message, ready to hand over: `message_id` is recorded with the row."""

    recipient: str
    message_id: str
    payload: bytes


class RowSender(Protocol):
    """One channel's messages for one issue: built per recipient, handed over one attempt at a time."""

    name: str

    def prepare(self, recipient: Recipient, *, test_copy: bool = False) -> PreparedMessage: ...

    async def deliver(self, message: PreparedMessage) -> str: ...

    # Optional: `async def deliver_handing_over(message, hand_over) -> str` delivers like `deliver` and
    # awaits `hand_over()` (the row run's claim of the row) itself, just before its first write that could
    # deliver the message, so that a message waiting for a connection holds no claim. Without it, the
    # row run claims the row before `deliver`.


class RowTransport(Protocol):
    """What carries a row channel's messages: a pool of sessions, or a sink that stands in for it."""

    async def open(self) -> object: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class SendLimits:
    """How fast a row channel may send: messages per second (0: no spacing), hourly and daily caps
    (counted over every channel's sends in the ledger), how many messages the row run has in hand at
    once (each waiting for its transport or being handed over; a row is claimed only once its
    hand-over starts), and how many refusals of the sender in a row (`SenderRefusedError`) stop the
    channel."""

    per_second: float = 0.0
    hourly_cap: int | None = None
    daily_cap: int | None = None
    concurrency: int = 1
    sender_refusals_to_stop: int = 3


# --- what a step channel exchanges with the step run ------------------------------------------------


T = TypeVar("T")


class KeyValueCache(Protocol):
    """Values kept across runs by kind and key, each until it expires (the ledger's cache is one)."""

    def cached(self, kind: str, key: str) -> str | None: ...

    def cache(self, kind: str, key: str, value: str, expires_at: float | None = None) -> None: ...

    def uncache(self, kind: str, key: str) -> None: ...


class StepContext(Protocol):
    """What a step channel's steps work with, given by the core's step run: the issue's recorded
    steps (written only while the run holds the issue's lease), a cache and clock kept across runs,
    and calls made under the one retry policy. Set `step` to the step under way: a failure is
    recorded with it."""

    step: str

    @property
    def cache(self) -> KeyValueCache: ...

    def clock(self) -> float: ...

    def recorded(self, step: str) -> str | None: ...

    def record(self, step: str, value: str) -> None: ...

    def forget(self, step: str) -> None: ...

    def start(self, step: str) -> float: ...

    def call(self, function: Callable[..., T], *args: Any, repeatable: bool = False,
             **kwargs: Any) -> Awaitable[T]: ...

    def poll(self, ask: Callable[[], T], *, every_seconds: float, for_seconds: float) -> Awaitable[T]: ...


class StepOutcome(Protocol):
    """What a channel's steps return: a frozen dataclass whose `detail` is its one line for the terminal."""

    @property
    def detail(self) -> str: ...


OutcomeT_co = TypeVar("OutcomeT_co", bound=StepOutcome, covariant=True)


class Steps(Protocol[OutcomeT_co]):
    """A channel's steps for one issue: `run` does what the recorded steps leave to do."""

    def run(self, context: StepContext) -> Awaitable[OutcomeT_co]: ...


@dataclass(frozen=True)
class StepFailure:
    """Why the last run of an issue's steps ended early: at which step, what kind of failure
    (stopped, uncertain, bad input, failed), and the error's text."""

    step: str
    kind: str
    reason: str


@dataclass(frozen=True)
class RecordedSteps:
    """What the ledger records of an issue's steps on a channel, for `status`: each step's value by name,
    the last run's failure if it ended early, and the run holding the lease right now (None when none does)."""

    steps: Mapping[str, str]
    failure: StepFailure | None
    holder: str | None
    held_until: float | None


@dataclass(frozen=True)
class LeaseTimes:
    """How long a step run's lease on an issue lasts unless renewed, and how long a second run waits for it."""

    seconds: float
    wait_seconds: float


class StepState(Protocol):
    """What `status` shows of a step channel: a frozen dataclass (its fields go into `--json`) and lines."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    def lines(self) -> list[str]: ...


# --- what every channel hands back ------------------------------------------------------------------


class Rendition(Protocol):
    """What every rendition has: the warnings its rendering raised (shown by preview and publish)."""

    @property
    def warnings(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class RenditionSummary:
    """A rendition's size and counts, for `preview`'s one line per channel."""

    size_bytes: int
    links: int
    images: int


@dataclass(frozen=True)
class ArchiveFile:
    """A file a channel writes when an issue is published (the text channel's archive copy)."""

    path: Path
    data: bytes


@dataclass(frozen=True)
class ServiceCheck:
    """How reaching the service a channel delivers through went (`distributor check`)."""

    service: str         # "smtp", "wechat", …
    healthy: bool
    detail: str          # e.g. the relay's greeting and TLS, the token fetched, or why it failed

    def line(self) -> str:
        return f"{self.service}: {self.detail}"
