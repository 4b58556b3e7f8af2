"""The `channels.text` settings block."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from distributor.settings import list_name_problem


@dataclass(frozen=True)
class TextSettings:
    """`channels.text`: plain-text mail (sent like the email channel) and an optional archive folder."""

    text_checks: ClassVar[dict[str, Callable[[str], str | None]]] = {"lists": list_name_problem}
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {"width": (20, 1000)}

    enabled: bool = True
    subscribers: str | None = None          # a subscriber file, or
    lists: tuple[str, ...] = ()             # the subscribers of these lists in the ledger
    output_dir: str | None = None
    width: int = 72
