"""The values handed from stage to stage: an issue and its rendered body. Each channel defines its own
rendition (`distributor.channel.Rendition`)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Per-recipient values are left in the email rendition as these markers and filled in by the
# email channel for each recipient, so rendering happens once per issue.
NAME_PLACEHOLDER = "%%RECIPIENT_NAME%%"
UNSUBSCRIBE_PLACEHOLDER = "%%UNSUBSCRIBE_URL%%"


@dataclass(frozen=True)
class Issue:
    """One newsletter issue as its source file says it."""

    source_path: Path
    key: str                      # what the ledger knows the issue by: permalink, else the whole file stem
    content_hash: str             # sha256 of the source file's bytes
    title: str
    body_markdown: str
    body_first_line: int          # line of the source file where the body starts
    author: str | None = None
    date: dt.datetime | None = None
    permalink: str | None = None
    tags: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    license: str | None = None
    draft: bool = False
    description: str | None = None
    cover: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)   # front matter keys we do not know
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Body:
    """The issue body rendered once: a clean HTML fragment with absolute URLs, shared by every channel."""

    html: str
    summary: str                  # the description, else the first paragraph's text
    page_url: str | None          # the permalink as an absolute URL
    warnings: tuple[str, ...] = ()
