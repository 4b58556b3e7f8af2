"""An issue too long for one WeChat article, split into the articles of one multi-article draft.

The draft API's limit (content under 20,000 characters as sent) is per article, and `draft/add`
takes up to eight articles in one news item. A body that does not fit is cut at its own boundaries:
between top-level blocks (headings, paragraphs, lists, quotes, tables, code), and a top-level list
too long for one article between its items (an ordered list goes on with its numbering). Nothing is
ever cut inside a list item, a quote or a code block: a block that alone is too long becomes an
article of its own, over the limit, which the limit check then refuses naming it. Each article
carries the references it cites, keeps their numbers, and is titled "… (2/3)"; the first lists them all.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import lxml.html

from distributor.channels.wechat.article_html import cited_numbers, compose
from distributor.render.themes import Theme

MAX_ARTICLES = 8          # draft/add: at most eight articles in one news item
Measure = Callable[[str], int]
"""The characters an article's content counts as sent (its images at their uploaded URLs' bound)."""


@dataclass(frozen=True)
class ArticlePart:
    """One article of the draft: its title, digest and content (its images as the issue names them)."""

    title: str
    digest: str
    content: str


def split_body(blocks: Sequence[str], references: Sequence[str], *, budget: int, first_budget: int,
               measure: Measure, wrap: Callable[[str], str], theme: Theme) -> list[list[str]]:
    """Group `blocks` into articles each measuring under `budget` once wrapped (`wrap` adds the template
    around a body), the first under `first_budget`; one group when everything fits in one article."""
    def size(group: Sequence[str]) -> int:
        return measure(wrap(compose(group, cited(group, references), theme)))

    if size(blocks) < budget:
        return [list(blocks)]
    units = [unit for block in blocks for unit in _list_items(block, first_budget, size)]
    groups: list[list[str]] = []
    for unit in units:
        room = first_budget if len(groups) == 1 else budget
        if groups and size([*groups[-1], unit]) < room:
            groups[-1].append(unit)
        else:
            groups.append([unit])
    return groups


def cited(group: Sequence[str], references: Sequence[str]) -> list[tuple[int, str]]:
    """The (number, URL) pairs of the references the blocks of `group` cite, in number order."""
    numbers = sorted({number for block in group for number in cited_numbers(block) if number <= len(references)})
    return [(number, references[number - 1]) for number in numbers]


def _list_items(block: str, budget: int, size: Callable[[Sequence[str]], int]) -> list[str]:
    """A top-level list too long for one article (`size` measures an article of some blocks) as lists of
    consecutive items, each as long as fits; any other block as it is."""
    if size([block]) < budget or not block.startswith(("<ul", "<ol")):
        return [block]
    element = lxml.html.fragment_fromstring(block)
    items = [lxml.html.tostring(item, encoding="unicode") for item in element]
    start = int(element.get("start") or 1) if (element.get("start") or "1").isdigit() else 1

    def listing(chunk: Sequence[str], first: int) -> str:
        shell = lxml.html.Element(element.tag, style=element.get("style") or "")
        if element.tag == "ol" and first != 1:
            shell.set("start", str(first))
        opening = lxml.html.tostring(shell, encoding="unicode").removesuffix(f"</{element.tag}>")
        return f"{opening}{''.join(chunk)}</{element.tag}>"

    chunks: list[list[str]] = []
    for item in items:
        if chunks and size([listing([*chunks[-1], item], start)]) < budget:
            chunks[-1].append(item)
        else:
            chunks.append([item])
    pieces, number = [], start
    for chunk in chunks:
        pieces.append(listing(chunk, number))
        number += len(chunk)
    return pieces


def part_title(title: str, index: int, count: int, limit: int) -> str:
    """`title (index/count)`, the title shortened with "…" so the whole fits `limit` characters."""
    suffix = f" ({index}/{count})"
    room = limit - len(suffix)
    return (title if len(title) <= room else title[:room - 1] + "…") + suffix
