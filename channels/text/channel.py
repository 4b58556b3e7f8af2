"""The plain-text channel: the issue as a text-only mail, and optionally as a file in an archive folder."""
from __future__ import annotations

import re
from pathlib import Path

from distributor.channel import ArchiveFile, RenditionSummary
from distributor.channels.mail.channel import MailChannel
from distributor.channels.mail.message import MessageParts
from distributor.channels.text.rendition import TextRendition, render_text
from distributor.channels.text.settings import TextSettings
from distributor.models import UNSUBSCRIBE_PLACEHOLDER, Body, Issue
from distributor.settings import Settings


class TextChannel(MailChannel):
    name = "text"
    settings_class = TextSettings

    def render(self, issue: Issue, body: Body, settings: Settings) -> TextRendition:
        return render_text(issue, body, settings)

    def summary(self, rendition: TextRendition) -> RenditionSummary:
        return RenditionSummary(len(rendition.text.encode()), len(rendition.links), 0)

    def preview_files(self, rendition: TextRendition, issue: Issue, settings: Settings) -> dict[str, bytes]:
        return {"text.txt": rendition.text.encode("utf-8")}

    def message_parts(self, rendition: TextRendition, issue: Issue) -> MessageParts:
        return MessageParts(issue.key, self.name, rendition.subject, rendition.text, None)

    def configuration_problems(self, settings: Settings, *, test_copy: bool = False) -> list[str]:
        # A text channel that only writes the archive file needs no subscribers.
        if settings.channels.text.output_dir and not (test_copy or self.recipients_file(settings)
                                                      or self.recipient_lists(settings)):
            return []
        return super().configuration_problems(settings, test_copy=test_copy)

    def archive(self, rendition: TextRendition, issue: Issue, settings: Settings) -> ArchiveFile | None:
        """The issue as a file in `channels.text.output_dir`, for readers of an archive, not for a
        subscriber: without the unsubscribe line."""
        folder = settings.channels.text.output_dir
        if not folder:
            return None
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", issue.key).strip("-") or "issue"
        lines = rendition.text.splitlines(keepends=True)
        text = "".join(line for line in lines if UNSUBSCRIBE_PLACEHOLDER not in line)
        return ArchiveFile(Path(folder).expanduser() / f"{name}.txt", text.encode("utf-8"))
