"""Load an issue and render it once for each channel asked for."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from distributor.channels.email.rendition import render_email
from distributor.channels.text.rendition import render_text
from distributor.channels.wechat.article import render_wechat

from distributor.render.body import render_body
from distributor.errors import InputError
from distributor.render.issue import load_issue
from distributor.render.markup import MarkupTooDeep
from distributor.models import Body, EmailRendition, Issue, TextRendition, WechatRendition
from distributor.settings import Settings

CHANNELS = ("email", "wechat", "text")


@dataclass(frozen=True)
class Renditions:
    """An issue with its body and the renditions of the channels asked for (None for the others)."""

    issue: Issue
    body: Body
    email: EmailRendition | None
    wechat: WechatRendition | None
    text: TextRendition | None

    def by_channel(self) -> dict[str, EmailRendition | WechatRendition | TextRendition]:
        """Return the renditions that were made, keyed by channel name."""
        made = {"email": self.email, "wechat": self.wechat, "text": self.text}
        return {name: rendition for name, rendition in made.items() if rendition is not None}


def render_issue(path: str | Path, settings: Settings, channels: Iterable[str] = CHANNELS, *,
                 title: str | None = None) -> Renditions:
    """Load the issue at `path` (with `title` for its own, from --title) and render it for `channels`;
    Markdown is rendered once for all."""
    wanted = set(channels)
    issue = load_issue(path, settings.site, title=title)
    try:
        body = render_body(issue, settings.site)
    except MarkupTooDeep as exc:
        raise InputError(exc.problem, path=str(issue.source_path),
                         line=issue.body_first_line + exc.body_line - 1) from exc
    except InputError as exc:
        if exc.path is not None:
            raise
        raise InputError(str(exc), path=str(issue.source_path)) from exc
    # The email's text part is the text rendition, so email needs it even when text is not asked for.
    text = render_text(issue, body, settings) if wanted & {"text", "email"} else None
    return Renditions(
        issue=issue,
        body=body,
        email=render_email(issue, body, text, settings) if "email" in wanted else None,
        wechat=render_wechat(issue, body, settings) if "wechat" in wanted else None,
        text=text if "text" in wanted else None,
    )
