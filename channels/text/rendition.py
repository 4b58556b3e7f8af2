"""The plain-text rendition: wrapped for CJK display width, links as numbered references."""
from __future__ import annotations

from dataclasses import dataclass
from html import escape

from distributor.channels.text.plaintext import html_to_text
from distributor.models import UNSUBSCRIBE_PLACEHOLDER, Body, Issue
from distributor.render.templating import common_context, render_template
from distributor.settings import Settings


@dataclass(frozen=True)
class TextRendition:
    """The issue as plain text, its links numbered at the end; the unsubscribe line a placeholder."""

    subject: str
    text: str
    links: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def render_text(issue: Issue, body: Body, settings: Settings) -> TextRendition:
    """Render the issue as plain text; the unsubscribe line keeps its per-recipient placeholder."""
    width = settings.channels.text.width
    plain = html_to_text(body.html, width=width)
    context = common_context(issue, settings, body.page_url)
    meta = " · ".join(part for part in (context["date"], issue.author) if part)
    text = render_template(
        settings, "text/issue.txt", **context,
        title_block=html_to_text(f"<h1>{escape(issue.title)}</h1>", width=width).text.strip("\n"),
        meta_line=meta, body_text=plain.text.rstrip("\n") + "\n",
        unsubscribe_url=UNSUBSCRIBE_PLACEHOLDER)
    return TextRendition(subject=issue.title, text=text, links=plain.links, warnings=body.warnings)
