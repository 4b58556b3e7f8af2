"""One mail channel's messages for one issue: built per recipient from a template, one attempt each."""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from distributor.channel import PreparedMessage, Recipient
from distributor.channels.mail.message import MessageTemplate


class MailTransport(Protocol):
    """What carries messages: the SMTP pool, or a sink that stands in for it."""

    async def open(self) -> object: ...

    async def close(self) -> None: ...

    async def send(self, envelope_from: str, recipient: str, wire: bytes) -> str: ...


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

    def prepare(self, recipient: Recipient, *, test_copy: bool = False) -> PreparedMessage:
        """Build the recipient's message from the issue's template; a test copy gets a Message-ID of its
        own, so that it never stands for the recipient's real copy."""
        template = self.template
        message_id = template.test_copy_message_id() if test_copy else template.message_id(recipient.address)
        wire = template.render(recipient, self.unsubscribe_url(recipient), message_id=message_id)
        return PreparedMessage(recipient.address, message_id, wire)

    async def deliver(self, message: PreparedMessage) -> str:
        """Hand the message to the transport; return the server's reply."""
        return await self.transport.send(self.template.envelope_from, message.recipient, message.payload)
