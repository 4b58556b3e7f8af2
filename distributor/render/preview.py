"""Write an issue's renditions to a folder for a person to look at, and summarise them."""
from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from distributor.channels.mail.message import MessageParts, MessageTemplate, Recipient

from distributor.errors import StorageError
from distributor.models import EmailRendition, TextRendition, WechatRendition
from distributor.render.renditions import Renditions
from distributor.settings import Settings

SAMPLE_RECIPIENT = Recipient(address="reader@example.org", name="读者 Reader", subscriber_id="sample")


@dataclass(frozen=True)
class ChannelSummary:
    channel: str
    size_bytes: int
    links: int
    images: int
    warnings: tuple[str, ...]

    def line(self) -> str:
        """Return the summary as one line for the terminal."""
        return (f"{self.channel:7} {self.size_bytes / 1024:7.1f} KB  {self.links:3} links  "
                f"{self.images:3} images  {len(self.warnings)} warnings")


def email_sample(rendition: EmailRendition, renditions: Renditions, settings: Settings) -> bytes:
    """Return the full MIME message as the sample recipient would receive it."""
    parts = MessageParts(issue_key=renditions.issue.key, channel="email", subject=rendition.subject,
                         text=rendition.text, html=rendition.html)
    template = MessageTemplate(parts, settings.channels.email, date=dt.datetime.now(dt.timezone.utc))
    url = settings.channels.email.unsubscribe_url.format(token="sample-token")
    return template.render(SAMPLE_RECIPIENT, url)


def preview_files(renditions: Renditions, settings: Settings) -> dict[str, bytes]:
    """Return each file of the preview by name, rendered in memory."""
    files: dict[str, bytes] = {}
    for rendition in renditions.by_channel().values():
        if isinstance(rendition, EmailRendition):
            files["email.html"] = rendition.html.encode("utf-8")
            files["email.eml"] = email_sample(rendition, renditions, settings)
        elif isinstance(rendition, WechatRendition):
            files["wechat.html"] = rendition.content.encode("utf-8")
        elif isinstance(rendition, TextRendition):
            files["text.txt"] = rendition.text.encode("utf-8")
    return files


def write_files(files: dict[str, bytes], folder: Path) -> None:
    """Write every file or none: each goes to a temporary name in `folder` first, flushed to disk,
    and all are renamed into place only once every one was written whole. A folder that cannot
    be made or written (a full disk, a read-only one) is a `StorageError` and leaves nothing."""
    staged: list[tuple[str, Path]] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
            staged.append((temporary, folder / name))
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
        for temporary, final in staged:
            os.replace(temporary, final)
    except OSError as exc:
        for temporary, _ in staged:
            Path(temporary).unlink(missing_ok=True)
        raise StorageError(f"cannot write {', '.join(files)}: {exc.strerror or exc}; nothing was written",
                           path=str(folder)) from exc


def summarise(renditions: Renditions) -> list[ChannelSummary]:
    """Return the size, link, image and warning counts of each rendition."""
    summaries = []
    for channel, rendition in renditions.by_channel().items():
        if isinstance(rendition, EmailRendition):
            size, links, images = len(rendition.html.encode()), len(rendition.links), len(rendition.images)
        elif isinstance(rendition, WechatRendition):
            size, links, images = len(rendition.content.encode()), len(rendition.references), len(rendition.images)
        else:
            size, links, images = len(rendition.text.encode()), len(rendition.links), 0
        summaries.append(ChannelSummary(channel, size, links, images, rendition.warnings))
    return summaries
