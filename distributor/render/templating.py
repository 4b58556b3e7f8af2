"""The Jinja2 environment: the user's template folder first, the packaged templates second."""
from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from typing import Any

import jinja2

from distributor.models import Issue
from distributor.render.themes import theme_named
from distributor.settings import Settings

_LABELS = {
    "zh": {"view_in_browser": "在浏览器中阅读", "unsubscribe": "退订", "original": "原文链接",
           "why": "你收到这封邮件，是因为订阅了 {site}。", "sent_to": "本邮件发送给",
           "license": "许可协议", "author": "作者",
           "references": "参考链接", "parts": "本期分为 {count} 篇："},
    "en": {"view_in_browser": "View in browser", "unsubscribe": "Unsubscribe", "original": "Original",
           "why": "You receive this because you subscribed to {site}.", "sent_to": "This copy was sent to",
           "license": "Licence",
           "author": "Author", "references": "References", "parts": "This issue comes in {count} parts:"},
}
_LICENCE_NAMES = {
    "cc-by-4.0": "CC BY 4.0", "cc-by-sa-4.0": "CC BY-SA 4.0", "cc-by-nc-4.0": "CC BY-NC 4.0",
    "cc-by-nc-sa-4.0": "CC BY-NC-SA 4.0", "cc-by-nc-nd-4.0": "CC BY-NC-ND 4.0",
    "cc-by-nd-4.0": "CC BY-ND 4.0", "cc0-1.0": "CC0 1.0",
}


@lru_cache(maxsize=8)
def environment(template_dir: str | None) -> jinja2.Environment:
    """Return the (cached) environment that looks in `template_dir` before the packaged templates."""
    loaders: list[jinja2.BaseLoader] = []
    if template_dir:
        loaders.append(jinja2.FileSystemLoader(template_dir))
    loaders.append(jinja2.FileSystemLoader(str(files("distributor.templates"))))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_template(settings: Settings, name: str, **context: Any) -> str:
    """Render template `name` with `context`; a missing variable is an error, not a blank."""
    template = environment(settings.channels.email.template_dir).get_template(name)
    return template.render(**context)


def labels(settings: Settings) -> dict[str, str]:
    """Return the fixed words of the templates in the site's language (Chinese or English)."""
    words = dict(_LABELS.get(settings.site.language.split("-")[0], _LABELS["en"]))
    words["why"] = words["why"].format(site=settings.site.name)
    return words


def common_context(issue: Issue, settings: Settings, page_url: str | None) -> dict[str, Any]:
    """Return the values every template shares: title, date, author, licence line, labels."""
    words = labels(settings)
    licence_line = None
    if issue.license:
        name = _LICENCE_NAMES.get(issue.license.lower(), issue.license)
        by = f"{words['author']}: {issue.author} · " if issue.author else ""
        licence_line = f"{by}{words['license']}: {name}"
    return {
        "title": issue.title,
        "site_name": settings.site.name,
        "language": settings.site.language,
        "date": issue.date.strftime("%Y-%m-%d") if issue.date else None,
        "author": issue.author,
        "page_url": page_url,
        "license_line": licence_line,
        "labels": words,
        "theme": theme_named(settings.site.theme),
    }
