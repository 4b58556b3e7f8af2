"""A channel from outside the distributor: each subscriber gets a short notice of the issue (title,
summary, page URL) through a pager gateway's HTTP API, `POST {gateway_url}/page` with the JSON
`{"to": address, "id": message_id, "text": notice}`.

It is built on the channel contract and the public helpers alone (distributor.channel, errors,
models, settings, validate), as a package of its own would be, and registered only by the tests
(test_channel_plugin.py), under the entry point group `distributor.channels`.

One attempt per delivery, classified for the core's retry policy:

- 2xx: paged; the reply is the first line of the gateway's answer.
- 429 and 503: the gateway limits or sheds the sender, not this recipient: `SenderThrottledError`
  with the Retry-After it asked for, so the channel slows down and, if the gateway keeps refusing
  past `retry.deadline_seconds`, stops with the rows still pending for the next run.
- any other 4xx: this page will be refused again (`PermanentDeliveryError`).
- any other 5xx, or a connection lost while waiting for the answer: the gateway had the whole page
  and may have sent it (`UncertainDeliveryError`: never paged twice without --resend-uncertain).
- a connection lost while the request was being written: the gateway cannot have the page (transient).
- a gateway that cannot be reached, or whose GET /health does not answer 2xx when the transport
  opens: the channel stops (`ChannelStoppedError`) before any row is touched.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import hashlib
import http.client
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TextIO
from urllib.parse import urlsplit

from distributor.channel import (
    KeyValueCache,
    PreparedMessage,
    Recipient,
    RenditionSummary,
    RowChannel,
    RowTransport,
    SendLimits,
    ServiceCheck,
)
from distributor.errors import (
    ChannelStoppedError,
    PermanentDeliveryError,
    SenderThrottledError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from distributor.models import Body, Issue
from distributor.settings import Settings
from distributor.validate.addresses import http_url_problem

# A notice fits a pager's screen: the summary is cut to this many characters.
SUMMARY_CHARACTERS = 160
# Pages handed to the gateway at once.
PAGES_IN_FLIGHT = 4
# What of the gateway's answer is kept as the reply.
REPLY_CHARACTERS = 200


@dataclass(frozen=True)
class PagerSettings:
    """`channels.pager`: who is paged (`pagers`, a subscriber file with an `email` column) and through which
    gateway. The file's key is not the mail channels' `subscribers`: the core asks `recipients_file`."""

    text_checks: ClassVar[dict[str, Callable[[str], str | None]]] = {"gateway_url": http_url_problem}
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {"timeout_seconds": (0.01, 300)}

    enabled: bool = True
    pagers: str | None = None
    gateway_url: str = "http://127.0.0.1:9/"
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class PagerRendition:
    """The notice every subscriber is paged, and the links in it."""

    text: str
    links: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def render_notice(issue: Issue, body: Body) -> PagerRendition:
    """Render the notice: the title, the summary on one line (cut to SUMMARY_CHARACTERS), the page URL."""
    warnings = []
    summary = " ".join(body.summary.split())
    if len(summary) > SUMMARY_CHARACTERS:
        summary = summary[:SUMMARY_CHARACTERS - 1].rstrip() + "…"
        warnings.append(f"pager: the summary is cut to {SUMMARY_CHARACTERS} characters")
    if body.page_url is None:
        warnings.append("pager: the issue has no page URL, so the notice links nowhere")
    lines = [issue.title, summary, body.page_url or ""]
    links = (body.page_url,) if body.page_url else ()
    return PagerRendition("\n".join(line for line in lines if line) + "\n", links, tuple(warnings))


class PagerChannel(RowChannel):
    name = "pager"
    settings_class = PagerSettings

    def render(self, issue: Issue, body: Body, settings: Settings) -> PagerRendition:
        return render_notice(issue, body)

    def summary(self, rendition: PagerRendition) -> RenditionSummary:
        return RenditionSummary(len(rendition.text.encode("utf-8")), len(rendition.links), 0)

    def preview_files(self, rendition: PagerRendition, issue: Issue, settings: Settings) -> dict[str, bytes]:
        return {"pager.txt": rendition.text.encode("utf-8")}

    def configuration_problems(self, settings: Settings, *, test_copy: bool = False) -> list[str]:
        if test_copy or self.recipients_file(settings):
            return []
        return ["channels.pager.pagers is not set: no one to page"]

    def recipients_file(self, settings: Settings) -> str | None:
        return settings.channels.pager.pagers

    def open_transport(self, settings: Settings, *, sink: TextIO | None = None) -> RowTransport:
        if sink is not None:
            return PagerSink(sink)
        pager = settings.channels.pager
        return PagerGateway(pager.gateway_url, pager.timeout_seconds)

    def limits(self, settings: Settings) -> SendLimits:
        return SendLimits(concurrency=PAGES_IN_FLIGHT)

    def sender(self, rendition: PagerRendition, issue: Issue, settings: Settings, transport: RowTransport,
               unsubscribe_url: Callable[[Recipient], str]) -> PagerSender:
        assert isinstance(transport, (PagerGateway, PagerSink)), "the pager sends through its own transport"
        return PagerSender(self.name, issue.key, rendition.text, transport)

    def describe(self, rendition: PagerRendition, issue: Issue, settings: Settings, recipients: int) -> str:
        return f"{recipients} recipients, {len(rendition.text)} characters per page"

    def check(self, settings: Settings, cache: KeyValueCache) -> ServiceCheck:
        pager = settings.channels.pager
        try:
            asyncio.run(PagerGateway(pager.gateway_url, pager.timeout_seconds).open())
        except ChannelStoppedError as exc:
            return ServiceCheck("pager", False, str(exc))
        return ServiceCheck("pager", True, f"gateway {pager.gateway_url} is healthy")


class PagerSender:
    """The issue's pages: one per recipient, its id derived from the issue and the address so that a
    gateway can tell a repeat from a new page."""

    def __init__(self, name: str, issue_key: str, text: str, transport: PagerGateway | PagerSink):
        self.name = name
        self.issue_key = issue_key
        self.text = text
        self.transport = transport

    def prepare(self, recipient: Recipient, *, test_copy: bool = False) -> PreparedMessage:
        if test_copy:
            message_id = f"pager-test-{uuid.uuid4().hex}"
        else:
            digest = hashlib.sha256(f"{self.issue_key}\0{recipient.address.lower()}".encode("utf-8")).hexdigest()
            message_id = f"pager-{digest[:32]}"
        payload = json.dumps({"to": recipient.address, "id": message_id, "text": self.text}, ensure_ascii=False)
        return PreparedMessage(recipient.address, message_id, payload.encode("utf-8"))

    async def deliver(self, message: PreparedMessage) -> str:
        return await self.transport.page(message)


class PagerGateway:
    """The gateway's HTTP API, one connection per request, each made in a worker thread."""

    def __init__(self, url: str, timeout_seconds: float):
        parts = urlsplit(url)
        self.https = parts.scheme.lower() == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.base_path = parts.path.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.where = url

    async def open(self) -> None:
        """Check that the gateway answers GET /health, so a gateway that is down stops the channel
        before any row is claimed."""
        try:
            status, reason, line, _ = await asyncio.to_thread(self._exchange, "GET", "/health", None)
        except _NotReached as exc:
            raise ChannelStoppedError(f"pager gateway {self.where} cannot be reached: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ChannelStoppedError(f"pager gateway {self.where} did not answer its health check: {exc}") from exc
        if not 200 <= status < 300:
            reply = f"{status} {line or reason}"
            raise ChannelStoppedError(f"pager gateway {self.where} is not healthy: {reply}", reply=reply)

    async def close(self) -> None:
        return None

    async def page(self, message: PreparedMessage) -> str:
        """Make one attempt to hand the page over; return the gateway's answer, or raise it classified."""
        try:
            status, reason, line, retry_after = await asyncio.to_thread(self._exchange, "POST", "/page",
                                                                        message.payload)
        except _NotReached as exc:
            raise ChannelStoppedError(f"pager gateway {self.where} cannot be reached: {exc}") from exc
        except _NotWritten as exc:
            raise TransientDeliveryError(f"the page to {message.recipient} was not written whole: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise UncertainDeliveryError(f"no answer from pager gateway {self.where} after the page to "
                                         f"{message.recipient}: {type(exc).__name__}: {exc}") from exc
        if 200 <= status < 300:
            return line or f"{status} {reason}"
        reply = f"{status} {line or reason}"
        if status in (429, 503):
            raise SenderThrottledError(f"pager gateway {self.where} refuses pages for now: {reply}", reply=reply,
                                       retry_after_seconds=retry_after)
        if 400 <= status < 500:
            raise PermanentDeliveryError(f"pager gateway refused the page to {message.recipient}: {reply}",
                                         reply=reply)
        raise UncertainDeliveryError(f"pager gateway {self.where} failed while paging {message.recipient}: {reply}",
                                     reply=reply)

    def _exchange(self, method: str, path: str, payload: bytes | None) -> tuple[int, str, str, float | None]:
        """Make one request; return the status, the reason, the answer's first line and its Retry-After.
        Raises _NotReached when no connection opened, _NotWritten when the request was not sent whole."""
        kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        connection = kind(self.host, self.port, timeout=self.timeout_seconds)
        try:
            try:
                connection.connect()
            except OSError as exc:
                raise _NotReached(f"{type(exc).__name__}: {exc}") from exc
            headers = {"Content-Type": "application/json; charset=utf-8"} if payload is not None else {}
            try:
                connection.request(method, self.base_path + path, body=payload, headers=headers)
            except OSError as exc:
                raise _NotWritten(f"{type(exc).__name__}: {exc}") from exc
            response = connection.getresponse()
            answer = response.read(64 * 1024).decode("utf-8", "replace")
            line = answer.strip().splitlines()[0][:REPLY_CHARACTERS] if answer.strip() else ""
            return response.status, response.reason, line, retry_after_seconds(response.getheader("Retry-After"))
        finally:
            connection.close()


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Read a Retry-After header: a number of seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - (now or dt.datetime.now(dt.timezone.utc))).total_seconds(), 0.0)


class _NotReached(Exception):
    """No connection to the gateway opened: nothing was handed over."""


class _NotWritten(Exception):
    """The connection broke while the request was being written: the gateway has no whole page."""


@dataclass
class PagerSink:
    """Stands in for the gateway in a dry run: shows the first few pages it would make, sends nothing."""

    stream: TextIO
    shown: int = 5
    count: int = 0

    async def open(self) -> None:
        return None

    async def page(self, message: PreparedMessage) -> str:
        self.count += 1
        if self.count <= self.shown:
            notice: dict[str, Any] = json.loads(message.payload)
            first_line = notice["text"].splitlines()[0] if notice["text"] else ""
            print(f"  would page {message.recipient}: {first_line}", file=self.stream)
        return "dry run: not paged"

    async def close(self) -> None:
        if self.count > self.shown:
            print(f"  … and {self.count - self.shown} more pages", file=self.stream)
