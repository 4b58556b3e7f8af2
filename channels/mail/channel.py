"""What the two mail channels (email, text) share: one SMTP pool, one message per recipient."""
from __future__ import annotations

import asyncio
import datetime as dt
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, TextIO

from distributor.channel import KeyValueCache, Recipient, RowChannel, RowTransport, SendLimits, ServiceCheck
from distributor.channels.mail.console_sink import ConsoleSink
from distributor.channels.mail.dkim import alignment_problem, signer_for
from distributor.channels.mail.dns_check import mail_dns_checks
from distributor.channels.mail.message import MessageParts, MessageTemplate
from distributor.channels.mail.relay import smtp_config
from distributor.channels.mail.sender import MailSender
from distributor.channels.mail.smtp import SmtpPool, check_relay
from distributor.errors import DeliveryError
from distributor.models import Issue
from distributor.settings import Settings, missing_env

# The recipient a sample message (preview, the size `publish` shows) is addressed to.
SAMPLE_RECIPIENT = Recipient(address="reader@example.org", name="读者 Reader", subscriber_id="sample")


class MailChannel(RowChannel):
    """A channel whose rendition goes out as one mail per recipient through the `smtp` relay, with the
    sender's identity and unsubscribe links of `channels.email`."""

    transport_group = "smtp"

    @abstractmethod
    def message_parts(self, rendition: Any, issue: Issue) -> MessageParts:
        """Return what the mail says: subject, text part, and HTML part if any."""

    def recipients_file(self, settings: Settings) -> str | None:
        return settings.channels[self.name].subscribers

    def recipient_lists(self, settings: Settings) -> tuple[str, ...]:
        return tuple(settings.channels[self.name].lists)

    def open_transport(self, settings: Settings, *, sink: TextIO | None = None) -> RowTransport:
        return ConsoleSink(sink) if sink is not None else SmtpPool(smtp_config(settings))

    def limits(self, settings: Settings) -> SendLimits:
        smtp = settings.smtp
        # Two messages per connection: one on it, and one whose envelope can go ahead behind it (SmtpPool).
        return SendLimits(smtp.per_second, smtp.hourly_cap, smtp.daily_cap, concurrency=2 * smtp.pool_size,
                          sender_refusals_to_stop=smtp.policy_refusals_to_stop)

    def sender(self, rendition: Any, issue: Issue, settings: Settings, transport: RowTransport,
               unsubscribe_url: Callable[[Recipient], str]) -> MailSender:
        assert isinstance(transport, (SmtpPool, ConsoleSink)), "a mail channel sends through its own transport"
        return MailSender(self.name, self.template(rendition, issue, settings), transport, unsubscribe_url)

    def template(self, rendition: Any, issue: Issue, settings: Settings) -> MessageTemplate:
        """Prepare the channel's message once for the issue, dated now."""
        return MessageTemplate(self.message_parts(rendition, issue), settings.channels.email,
                               date=dt.datetime.now(dt.timezone.utc), signer=signer_for(settings.smtp.dkim))

    def sample_message(self, rendition: Any, issue: Issue, settings: Settings) -> bytes:
        """Return the whole message as the sample recipient would receive it."""
        url = settings.channels.email.unsubscribe_url.replace("{token}", "sample-token")
        return self.template(rendition, issue, settings).render(SAMPLE_RECIPIENT, url)

    def describe(self, rendition: Any, issue: Issue, settings: Settings, recipients: int) -> str:
        size = len(self.sample_message(rendition, issue, settings))
        return f"{recipients} recipients, subject {issue.title!r}, {size / 1024:.1f} KB per message"

    def check(self, settings: Settings, cache: KeyValueCache) -> ServiceCheck:
        try:
            return ServiceCheck("smtp", True, asyncio.run(check_relay(smtp_config(settings))))
        except DeliveryError as exc:
            return ServiceCheck("smtp", False, f"{exc}" + (f": {exc.reply}" if exc.reply else ""))

    def dns_checks(self, settings: Settings) -> list[ServiceCheck]:
        return mail_dns_checks(settings)

    def configuration_problems(self, settings: Settings, *, test_copy: bool = False) -> list[str]:
        block = f"channels.{self.name}"
        if self.recipients_file(settings) and self.recipient_lists(settings):
            return [f"{block}.subscribers and {block}.lists are both set: send to a file or to lists, not both"]
        if not (test_copy or self.recipients_file(settings) or self.recipient_lists(settings)):
            return [f"neither {block}.subscribers nor {block}.lists is set: no one to send the {self.name} channel to"]
        problems = []
        if settings.smtp.username:
            problems += missing_env(settings.smtp.password_env, "the SMTP password (smtp.username is set)")
        if (dkim := settings.smtp.dkim) is not None:
            if problem := alignment_problem(dkim.domain, settings.channels.email.from_address):
                problems.append(problem)
            for variable in (dkim.private_key_env, dkim.ed25519_key_env):
                if variable:
                    problems += missing_env(variable, "a DKIM private key, in PEM")
        return problems

