"""Render a cleaned HTML fragment as plain text wrapped by display columns, with numbered references."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

import lxml.html
from lxml import etree
from wcwidth import wcswidth, wcwidth

# Stands for <br> inside collected inline text; lxml refuses NUL in input, so it cannot clash.
_HARD_BREAK = "\x00"
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "center", "dd", "details", "div", "dl", "dt", "figcaption", "figure",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "noscript", "ol", "p",
    "pre", "section", "summary", "table", "ul",
})
_SKIPPED_TAGS = frozenset({"script", "style", "template", "head", "title"})
_HEADINGS = {"h1": "=", "h2": "=", "h3": "-", "h4": "-", "h5": "-", "h6": "-"}
_NO_BREAK_BEFORE = frozenset("，。、；：？！）」』》〉】〕”’…,.;:?!)]}%")
_NO_BREAK_AFTER = frozenset("（「『《〈【〔“‘([{")
_SPACE_RUN = re.compile(r"[ \t\n\r\f]+")
_CJK = "\u1100-\u115f\u2e80-\u303e\u3041-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60"
# A source line break between two CJK characters is not a word gap: Chinese has no spaces.
_CJK_SOFT_BREAK = re.compile(rf"(?<=[{_CJK}])[ \t\r\f]*\n[ \t\n\r\f]*(?=[{_CJK}])")


@dataclass(frozen=True)
class PlainText:
    """A plain-text rendering: the body ending with its reference list, and the referenced URLs."""

    text: str
    links: tuple[str, ...]


def html_to_text(fragment: str, *, width: int = 72) -> PlainText:
    """Render an HTML fragment (an issue body already rendered from Markdown and cleaned) as plain text."""
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width}")
    renderer = _Renderer()
    lines = renderer.flow(lxml.html.fragment_fromstring(fragment, create_parent="div"), width)
    if renderer.links:
        lines += ["", "-" * width] + [f"[{number}] {url}" for url, number in renderer.links.items()]
    return PlainText(_tidy(lines), tuple(renderer.links))


class _Renderer:
    """Turn elements into lines for a given width, numbering link and image URLs as it meets them."""

    def __init__(self) -> None:
        self.links: dict[str, int] = {}

    def reference(self, url: str) -> int:
        return self.links.setdefault(url, len(self.links) + 1)

    def flow(self, parent: etree._Element, width: int, loose: bool = True) -> list[str]:
        """Render mixed content: runs of inline content become paragraphs between the block children."""
        chunks: list[list[str]] = []
        run = [parent.text or ""]
        for child in parent:
            if isinstance(child.tag, str) and child.tag in _BLOCK_TAGS:
                chunks += [_paragraph("".join(run), width), self.block(child, width)]
                run = []
            else:
                self.inline(child, run)
            run.append(child.tail or "")
        chunks.append(_paragraph("".join(run), width))
        return _join(chunks, blank=loose)

    def block(self, element: etree._Element, width: int) -> list[str]:
        tag = element.tag
        if tag in ("ul", "ol"):
            return self.listing(element, width)
        if tag == "blockquote":
            return _indent(self.flow(element, max(width - 2, 1)), "> ", "> ", ">")
        if tag == "pre":
            code = element.text_content().strip("\n").split("\n")
            return ["    " + piece if piece.strip() else ""
                    for line in code for piece in _fold_code(line, max(width - 4, 8))]
        if tag == "hr":
            return ["* * *"]
        if tag == "table":
            return self.table(element, width)
        if tag in _HEADINGS:
            return self.heading(element, width)
        if tag == "dd":
            return _indent(self.flow(element, max(width - 4, 1)), "    ", "    ", "")
        return self.flow(element, width)

    def listing(self, element: etree._Element, width: int) -> list[str]:
        """Render ul/ol items with their marker, continuation lines aligned under the item text."""
        items = [child for child in element if child.tag == "li"]
        loose = any(child.tag == "p" for item in items for child in item)
        first = _start_number(element)
        chunks = []
        for offset, item in enumerate(items):
            marker = f"{first + offset}. " if element.tag == "ol" else "- "
            lines = self.flow(item, max(width - len(marker), 1), loose)
            if lines:
                chunks.append(_indent(lines, marker, " " * len(marker), ""))
            else:
                chunks.append([marker.rstrip()])
        return _join(chunks, blank=loose)

    def heading(self, element: etree._Element, width: int) -> list[str]:
        lines = _wrap(_collapse(self.inline_text(element).replace(_HARD_BREAK, " ")), width)
        if not lines:
            return []
        return lines + [_HEADINGS[element.tag] * max(map(_columns, lines))]

    def table(self, element: etree._Element, width: int) -> list[str]:
        """Render rows as aligned ` | ` lines, or as `header: value` lines when a row is too wide."""
        rows = [tr for tr in element.iter("tr") if next(tr.iterancestors("table")) is element]
        cells = [[child for child in tr if child.tag in ("td", "th")] for tr in rows]
        cells = [row for row in cells if row]
        if not cells:
            return []
        texts = [[_collapse(self.inline_text(cell).replace(_HARD_BREAK, " ")) for cell in row] for row in cells]
        header = texts[0] if all(cell.tag == "th" for cell in cells[0]) and len(texts) > 1 else None
        sizes = [max(_columns(row[i]) if i < len(row) else 0 for row in texts)
                 for i in range(max(map(len, texts)))]
        if sum(sizes) + 3 * (len(sizes) - 1) <= width:
            lines = [_table_row(row, sizes) for row in texts]
            if header:
                lines.insert(1, "-+-".join("-" * size for size in sizes))
            return lines
        chunks = []
        for row in texts[1:] if header else texts:
            names = header or []
            chunks.append([line for index, text in enumerate(row) if text for line in _wrap(
                f"{names[index]}: {text}" if index < len(names) and names[index] else text, width)])
        return _join(chunks, blank=True)

    def inline(self, element: etree._Element, run: list[str]) -> None:
        """Append the inline text of one element (not its tail) to `run`."""
        tag = element.tag
        if not isinstance(tag, str) or tag in _SKIPPED_TAGS:
            return
        if tag == "br":
            run.append(_HARD_BREAK)
        elif tag == "img":
            run.append(self.image(element))
        elif tag == "a":
            run.append(self.anchor(element))
        elif tag == "code":
            run.append(f"`{element.text_content()}`")
        elif tag == "sup":
            run.append("^" + self.inline_text(element))
        elif tag in _BLOCK_TAGS or tag in ("td", "th"):
            run.append(f" {self.inline_text(element)} ")
        else:
            run.append(self.inline_text(element))

    def inline_text(self, element: etree._Element) -> str:
        run = [element.text or ""]
        for child in element:
            self.inline(child, run)
            run.append(child.tail or "")
        return "".join(run)

    def anchor(self, element: etree._Element) -> str:
        """Keep the link text in place and add its reference number, the address, or nothing."""
        if "footnote-backref" in (element.get("class") or ""):
            return ""
        label = self.inline_text(element)
        visible = _collapse(label.replace(_HARD_BREAK, " "))
        href = (element.get("href") or "").strip()
        if not href or href.startswith("#"):
            return label
        if href.lower().startswith("mailto:"):
            address = unquote(href[len("mailto:"):].split("?", 1)[0])
            return label if visible == address else f"{label} <{address}>"
        if visible == href:
            return href
        return f"{label} [{self.reference(href)}]"

    def image(self, element: etree._Element) -> str:
        alt = _collapse(element.get("alt") or "")
        label = f"[image: {alt}]" if alt else "[image]"
        source = (element.get("src") or "").strip()
        if not source or source.startswith("data:"):
            return f" {label} "
        return f" {label} [{self.reference(source)}] "


def _start_number(element: etree._Element) -> int:
    try:
        return int(element.get("start") or 1)
    except ValueError:
        return 1


def _table_row(row: list[str], sizes: list[int]) -> str:
    padded = row + [""] * (len(sizes) - len(row))
    return " | ".join(text + " " * (size - _columns(text)) for text, size in zip(padded, sizes, strict=True)).rstrip()


def _join(chunks: list[list[str]], *, blank: bool) -> list[str]:
    lines: list[str] = []
    for chunk in chunks:
        if chunk:
            lines += ([""] if lines and blank else []) + chunk
    return lines


def _indent(lines: list[str], first: str, rest: str, empty: str) -> list[str]:
    return [(first if index == 0 else rest) + line if line else empty for index, line in enumerate(lines)]


def _collapse(text: str) -> str:
    return _SPACE_RUN.sub(" ", _CJK_SOFT_BREAK.sub("", text)).strip(" ")


def _paragraph(inline: str, width: int) -> list[str]:
    """Wrap collected inline text, keeping its hard line breaks."""
    inline = inline.strip(" \t\n\r\f" + _HARD_BREAK)
    parts = [_collapse(part) for part in inline.split(_HARD_BREAK)] if inline else []
    return [line for part in parts for line in (_wrap(part, width) or [""])]


def _columns(text: str) -> int:
    size = wcswidth(text)
    return size if size >= 0 else sum(max(wcwidth(char), 0) for char in text)


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def _breakable(before: str, after: str) -> bool:
    """Tell whether a line may break between two characters of one space-free word."""
    return ((_is_wide(before) or _is_wide(after)) and after not in _NO_BREAK_BEFORE
            and before not in _NO_BREAK_AFTER and wcwidth(before) != 0 and wcwidth(after) != 0)


def _units(line: str) -> list[tuple[bool, str]]:
    """Split a line into unbreakable pieces, each flagged with whether a space precedes it."""
    units = []
    for word in line.split(" "):
        start = 0
        for index in range(1, len(word)):
            if _breakable(word[index - 1], word[index]):
                units.append((start == 0, word[start:index]))
                start = index
        if word:
            units.append((start == 0, word[start:]))
    return units


def _wrap(line: str, width: int) -> list[str]:
    """Fill lines greedily up to `width` columns; a piece wider than that stands alone."""
    lines, current, used = [], "", 0
    for spaced, unit in _units(line):
        size = _columns(unit)
        gap = 1 if spaced and current else 0
        if current and used + gap + size > width:
            lines.append(current)
            current, used, gap = "", 0, 0
        current += " " * gap + unit
        used += gap + size
    if current:
        lines.append(current)
    return lines


def _fold_code(line: str, width: int) -> list[str]:
    """Fold a code line wider than `width` the way RFC 8792 does: a `\\` ends each folded piece.
    Breaks go at spaces where there are any; a URL stays whole even when it is too wide."""
    if _columns(line) <= width:
        return [line]
    pieces, current = [], ""
    for token in re.findall(r"\S+\s*|\s+", line):
        while _columns(current + token) > width - 1:
            if current.strip():
                pieces.append(current.rstrip() + " \\")
                current = ""
            elif "://" in token or _columns(token) <= width - 1:
                break
            else:
                cut = _cut_at_columns(token, width - 1)
                pieces.append(token[:cut] + "\\")
                token = token[cut:]
        current += token
    return pieces + [current]


def _cut_at_columns(text: str, limit: int) -> int:
    used = 0
    for index, char in enumerate(text):
        used += max(wcwidth(char), 0)
        if used > limit:
            return max(index, 1)
    return len(text)


def _tidy(lines: list[str]) -> str:
    """Drop trailing spaces, keep at most one blank line in a row, end with exactly one newline."""
    kept: list[str] = []
    for line in lines:
        line = line.rstrip()
        if line or (kept and kept[-1]):
            kept.append(line)
    while kept and not kept[-1]:
        kept.pop()
    return "\n".join(kept) + "\n"
