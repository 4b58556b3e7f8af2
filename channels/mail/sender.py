"""One mail channel's messages for one issue: built per recipient from a template, one attempt each."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from distributor.channel import PreparedMessage, Recipient
from distributor.channels.mail.message import MessageTemplate


class MailTransport(Protocol):
    """What carries messages: the SMTP pool, or a sink that stands in for it."""

    async def open(self) -> object: ...

    async def close(self) -> None: ...

    async def send(self, envelope_from: str, recipient: str, wire: bytes,
                   hand_over: Callable[[], Awaitable[None]] | None = None) -> str: ...


@dataclass(frozen=True)
class MailMessage(PreparedMessage):
    """A recipient's mail with its envelope sender, which differs per recipient with VERP."""

    envelope_from: str = ""


class MailSender:
    """Deliver one rendition as mail: `prepare` builds a recipient's message (before the ledger
    claims the row, so a bad value never leaves a row uncertain), `deliver` makes exactly one
    attempt to hand it over and never retries."""

    def __init__(self, name: str, template: MessageTemplate, transport: MailTransport,
                 unsubscribe_url: Callable[[Recipient], str]):
        self.name = name
        self.template = template
        self.transport = transport
        self.unsubscribe_url = unsubscribe_url

    def prepare(self, recipient: Recipient, *, test_copy: bool = False) -> MailMessage:
        """Build the recipient's message from the issue's template; a test copy gets a Message-ID of its
        own, so that it never stands for the recipient's real copy."""
        template = self.template
        message_id = template.test_copy_message_id() if test_copy else template.message_id(recipient.address)
        wire = template.render(recipient, self.unsubscribe_url(recipient), message_id=message_id)
        return MailMessage(recipient.address, message_id, wire, template.envelope_sender(recipient))

    async def deliver(self, message: PreparedMessage) -> str:
        """Hand the message to the transport; return the server's reply."""
        return await self.deliver_handing_over(message, None)

    async def deliver_handing_over(self, message: PreparedMessage,
                                   hand_over: Callable[[], Awaitable[None]] | None) -> str:
        """Hand the message to the transport, which awaits `hand_over` (the row run's claim) once it
        holds a connection and before it writes anything that could deliver the message (see
        `SmtpPool`); return the server's reply."""
        assert isinstance(message, MailMessage), "a mail sender delivers the messages it prepared"
        return await self.transport.send(message.envelope_from, message.recipient, message.payload, hand_over)
