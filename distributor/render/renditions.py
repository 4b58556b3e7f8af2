"""Load an issue and render it once for each channel asked for."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributor import registry
from distributor.channel import Rendition
from distributor.errors import InputError
from distributor.models import Body, Issue
from distributor.render.body import render_body
from distributor.render.issue import load_issue
from distributor.render.markup import MarkupTooDeep
from distributor.settings import Settings


@dataclass(frozen=True)
class Renditions(Mapping[str, Any]):
    """An issue with its body and the renditions of the channels asked for, by channel name."""

    issue: Issue
    body: Body
    by_name: Mapping[str, Rendition]

    def __getitem__(self, name: str) -> Any:
        return self.by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_name)

    def __len__(self) -> int:
        return len(self.by_name)


def render_issue(path: str | Path, settings: Settings, channels: Iterable[str] | None = None, *,
                 title: str | None = None) -> Renditions:
    """Load the issue at `path` (with `title` for its own, from --title) and render it for `channels`
    (every installed channel when None); Markdown is rendered once for all."""
    wanted = registry.names() if channels is None else tuple(channels)
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
    by_name = {name: registry.channel(name).render(issue, body, settings) for name in wanted}
    return Renditions(issue=issue, body=body, by_name=by_name)
