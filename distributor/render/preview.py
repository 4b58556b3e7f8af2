"""Write an issue's renditions to a folder for a person to look at, and summarise them."""
from __future__ import annotations

from dataclasses import dataclass

from distributor import registry
from distributor.render.renditions import Renditions
from distributor.settings import Settings


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


def preview_files(renditions: Renditions, settings: Settings) -> dict[str, bytes]:
    """Return each file of the preview by name, rendered in memory: what each channel shows of its rendition."""
    files: dict[str, bytes] = {}
    for name, rendition in renditions.items():
        files.update(registry.channel(name).preview_files(rendition, renditions.issue, settings))
    return files


def summarise(renditions: Renditions) -> list[ChannelSummary]:
    """Return the size, link, image and warning counts of each rendition."""
    summaries = []
    for name, rendition in renditions.items():
        counts = registry.channel(name).summary(rendition)
        summaries.append(ChannelSummary(name, counts.size_bytes, counts.links, counts.images, rendition.warnings))
    return summaries
