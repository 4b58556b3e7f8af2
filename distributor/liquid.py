"""Resolve the Jekyll/Liquid leftovers that Markdown sources carry, or report them.

`{% raw %}…{% endraw %}` only protects its content from Liquid: the tags go, the content stays
as written. `{{ site.url }}`, `{{ site.baseurl }}` and `{{ page.title }}` have values we know.
Anything else cannot be evaluated here: it is left as text and reported with its line.
"""
from __future__ import annotations

import re

from .settings import SiteSettings

_RAW_BLOCK = re.compile(r"\{%-?\s*raw\s*-?%\}(.*?)\{%-?\s*endraw\s*-?%\}", re.S)
_TAG = re.compile(r"\{%-?.*?-?%\}|\{\{-?.*?-?\}\}", re.S)
_KNOWN_OUTPUT = re.compile(r"^\{\{-?\s*(site\.url|site\.baseurl|page\.title)\s*-?\}\}$")


def resolve_liquid(text: str, site: SiteSettings, *, title: str) -> tuple[str, list[tuple[int, str]]]:
    """Return the text with Liquid resolved, and (line, message) warnings for what was left."""
    if "{%" not in text and "{{" not in text:
        return text, []
    values = {"site.url": site.base_url.rstrip("/"), "site.baseurl": "", "page.title": title}
    warnings: list[tuple[int, str]] = []
    pieces: list[str] = []
    position = 0
    for raw in _RAW_BLOCK.finditer(text):
        pieces.append(_resolve_tags(text[position:raw.start()], position, text, values, warnings))
        pieces.append(raw.group(1))
        position = raw.end()
    pieces.append(_resolve_tags(text[position:], position, text, values, warnings))
    return "".join(pieces), warnings


def _resolve_tags(chunk: str, offset: int, whole: str, values: dict[str, str],
                  warnings: list[tuple[int, str]]) -> str:
    def replace(match: re.Match[str]) -> str:
        known = _KNOWN_OUTPUT.match(match.group(0))
        if known:
            return values[known.group(1)]
        line = whole.count("\n", 0, offset + match.start()) + 1
        warnings.append((line, f"Liquid left as text: {match.group(0)[:60]}"))
        return match.group(0)

    return _TAG.sub(replace, chunk)
