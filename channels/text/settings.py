"""The `channels.text` settings block."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class TextSettings:
    """`channels.text`: plain-text mail (sent like the email channel) and an optional archive folder."""

    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {"width": (20, 1000)}

    enabled: bool = True
    subscribers: str | None = None
    output_dir: str | None = None
    width: int = 72
