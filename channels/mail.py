"""The mail channels (email and text): one message per recipient through a transport."""
from __future__ import annotations

from typing import Callable, Protocol

from .email_message import MessageTemplate, Recipient


class MailTransport(Protocol):
    """What carries messages: the SMTP pool, or a sink that stands in for it."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, envelope_from: str, recipient: str, wire: bytes) -> str: ...


class MailChannel:
    """Deliver one rendition as mail; `deliver` makes exactly one attempt and never retries."""

    def __init__(self, name: str, template: MessageTemplate, transport: MailTransport,
                 unsubscribe_url: Callable[[Recipient], str]):
        self.name = name
        self.template = template
        self.transport = transport
        self.unsubscribe_url = unsubscribe_url

    async def deliver(self, recipient: Recipient) -> str:
        """Hand the recipient's message to the transport; return the server's reply."""
        wire = self.template.render(recipient, self.unsubscribe_url(recipient))
        return await self.transport.send(self.template.envelope_from, recipient.address, wire)
