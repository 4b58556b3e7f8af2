"""The email channel: the issue as an HTML mail with every style inlined and a text part."""
from __future__ import annotations

from distributor.channel import RenditionSummary
from distributor.channels.email.rendition import EmailRendition, render_email
from distributor.channels.email.settings import EmailSettings
from distributor.channels.mail.channel import MailChannel
from distributor.channels.mail.message import MessageParts
from distributor.channels.text.rendition import render_text
from distributor.models import Body, Issue
from distributor.settings import Settings


class EmailChannel(MailChannel):
    name = "email"
    settings_class = EmailSettings

    def render(self, issue: Issue, body: Body, settings: Settings) -> EmailRendition:
        # The text part is the text channel's rendition of the same body.
        return render_email(issue, body, render_text(issue, body, settings), settings)

    def summary(self, rendition: EmailRendition) -> RenditionSummary:
        return RenditionSummary(len(rendition.html.encode()), len(rendition.links), len(rendition.images))

    def preview_files(self, rendition: EmailRendition, issue: Issue, settings: Settings) -> dict[str, bytes]:
        return {"email.html": rendition.html.encode("utf-8"),
                "email.eml": self.sample_message(rendition, issue, settings)}

    def message_parts(self, rendition: EmailRendition, issue: Issue) -> MessageParts:
        return MessageParts(issue.key, self.name, rendition.subject, rendition.text, rendition.html)
