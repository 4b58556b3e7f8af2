"""Resolve the Jekyll/Liquid leftovers that Markdown sources carry, or report them.

`{% raw %}…{% endraw %}` only protects its content from Liquid: the tags go, the content stays
as written. `{{ site.url }}`, `{{ site.baseurl }}` and `{{ page.title }}` have values we know.
Anything else cannot be evaluated here: it is left as text and reported with its line (the
first `_WARNINGS_SHOWN`, then how many more).

The text is scanned once, left to right, in time linear in its size: an opener without its
closer (`{{` or `{%` alone, 100,000 times) ends the search for that kind instead of being
searched past again from every later opener.
"""
from __future__ import annotations

import bisect
import re

from distributor.settings import SiteSettings

_RAW_OPEN = re.compile(r"\{%-?\s*raw\s*-?%\}")
_RAW_CLOSE = re.compile(r"\{%-?\s*endraw\s*-?%\}")
_KNOWN_OUTPUT = re.compile(r"^\{\{-?\s*(site\.url|site\.baseurl|page\.title)\s*-?\}\}$")
_PAIRS = (("{%", "%}"), ("{{", "}}"))
_WARNINGS_SHOWN = 20


def resolve_liquid(text: str, site: SiteSettings, *, title: str) -> tuple[str, list[tuple[int, str]]]:
    """Return the text with Liquid resolved, and (line, message) warnings for what was left."""
    if "{%" not in text and "{{" not in text:
        return text, []
    values = {"site.url": site.base_url.rstrip("/"), "site.baseurl": "", "page.title": title}
    lines = _LineNumbers(text)
    left: list[tuple[int, str]] = []
    pieces: list[str] = []
    position = 0
    for start, end, content_start, content_end in _raw_blocks(text):
        pieces.append(_resolve_tags(text, position, start, values, lines, left))
        pieces.append(text[content_start:content_end])
        position = end
    pieces.append(_resolve_tags(text, position, len(text), values, lines, left))
    warnings = left[:_WARNINGS_SHOWN]
    if len(left) > _WARNINGS_SHOWN:
        warnings.append((left[_WARNINGS_SHOWN][0], f"and {len(left) - _WARNINGS_SHOWN} more Liquid tags left as text"))
    return "".join(pieces), warnings


class _LineNumbers:
    """Line numbers of offsets in a text, each found by bisection."""

    def __init__(self, text: str):
        self._breaks = [match.start() for match in re.finditer("\n", text)]

    def of(self, offset: int) -> int:
        return bisect.bisect_left(self._breaks, offset) + 1


def _raw_blocks(text: str) -> list[tuple[int, int, int, int]]:
    """Return (start, end, content start, content end) of each `{% raw %}…{% endraw %}`: each
    opener with the first closer after it, left to right."""
    closers = [(match.start(), match.end()) for match in _RAW_CLOSE.finditer(text)]
    blocks, position, index = [], 0, 0
    for opener in _RAW_OPEN.finditer(text):
        if opener.start() < position:
            continue
        while index < len(closers) and closers[index][0] < opener.end():
            index += 1
        if index == len(closers):
            break
        blocks.append((opener.start(), closers[index][1], opener.end(), closers[index][0]))
        position = closers[index][1]
    return blocks


def _resolve_tags(text: str, start: int, stop: int, values: dict[str, str], lines: _LineNumbers,
                  left: list[tuple[int, str]]) -> str:
    """Resolve the tags in text[start:stop]: the leftmost opener first (`{%` before `{{` at one
    place), each ending at the first closer of its kind."""
    out: list[str] = []
    position = start
    next_open = {opener: text.find(opener, start, stop) for opener, _ in _PAIRS}
    while True:
        found = [(at, opener, closer) for opener, closer in _PAIRS if (at := next_open[opener]) >= 0]
        if not found:
            break
        at, opener, closer = min(found)
        end = text.find(closer, at + 2, stop)
        if end < 0:                         # no closer of this kind after here: no later opener closes either
            next_open[opener] = -1
            continue
        tag = text[at:end + 2]
        out.append(text[position:at])
        known = _KNOWN_OUTPUT.match(tag)
        if known:
            out.append(values[known.group(1)])
        else:
            left.append((lines.of(at), f"Liquid left as text: {tag[:60]}"))
            out.append(tag)
        position = end + 2
        for other, _ in _PAIRS:
            if 0 <= next_open[other] < position:
                next_open[other] = text.find(other, position, stop)
    out.append(text[position:stop])
    return "".join(out)
