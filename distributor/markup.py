"""Render an issue's Markdown body to an HTML fragment the way the issue's own site shows it.

Issues are written for CommonMark-style renderers (kramdown's GFM mode, GitHub), while
Python-Markdown keeps the original Markdown.pl block rules. Before Python-Markdown parses
the body, a line-based normaliser reads the block structure with the CommonMark rules and
writes it back in the form Python-Markdown reads the same way:

- a list item's content belongs to it when indented to the item's content column (2, 3 or
  4 spaces); it is re-indented by 4 spaces per nesting level, as Python-Markdown needs;
- a list may start right after a paragraph line (a bullet with text, or ``1.``, as in
  CommonMark, so a wrapped ``2019.`` stays text); a blank line is put in front of it;
- blockquotes, fenced code and paragraphs inside list items stay inside the item;
- fenced code is recognised at any nesting (indented fences too) when a closing fence
  follows, and stored as finished HTML so its lines are never rewritten;
- ``#`` not followed by a space starts text, not a heading (``#123,`` wrapped from an
  issue number), so it is escaped;
- indented code (4 spaces or a TAB) and raw HTML blocks pass through untouched.

Python-Markdown then runs with ``extra`` (tables, footnotes, attr_list, md_in_html, abbr,
def_list) and ``sane_lists``; soft line breaks stay soft (no ``nl2br``). Raw HTML is kept:
sanitising is a later stage's job.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

import markdown
from markdown.extensions import Extension
from markdown.preprocessors import Preprocessor

_STEP = 4  # Python-Markdown's indentation per nesting level
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?: |$)")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(?: *\1){2,} *$")
_LIST_ITEM = re.compile(r"^( {0,3})([-+*]|(\d{1,9})[.)])( +|$)")
_QUOTE = re.compile(r"^ {0,3}> ?")
_HTML_START = re.compile(r"^ {0,3}<(!--|/?([A-Za-z][A-Za-z0-9-]*)(?=[\s/>]|$))")
_RAW_TEXT_TAGS = frozenset({"script", "pre", "style", "textarea"})
_LIST_KINDS = ("ul", "ol")


@dataclass(frozen=True)
class _Block:
    """One block read from a container: its kind, the index after it, and its rewritten lines."""

    kind: str  # "para" (one paragraph line), "block", or a list item: "ul" / "ol"
    end: int
    lines: list[str]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _trim_blank_tail(lines: list[str], end: int, start: int) -> int:
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return end


class _BlockNormaliser:
    """Rewrite CommonMark block structure into the dialect Python-Markdown parses alike."""

    def __init__(self, stash: Callable[[str], str], block_tags: frozenset[str]) -> None:
        self._stash = stash
        self._block_tags = block_tags

    def container(self, lines: list[str], in_item: bool) -> list[str]:
        """Normalise the lines of one container (document, list item or blockquote)."""
        out: list[str] = []
        last, loose_item = "blank", False
        i = 0
        while i < len(lines):
            if not lines[i].strip():
                out.append("")
                last, i = "blank", i + 1
                continue
            block = self._block(lines, i, last)
            if block.kind in _LIST_KINDS:
                # Python-Markdown needs a blank line before a list, except for a list nested
                # tightly under its item's first line and for the next item of a tight list.
                tight_child = in_item and last == "para" and len(out) == 1
                sibling = last == block.kind and not loose_item
                if last != "blank" and not tight_child and not sibling:
                    out.append("")
                loose_item = "" in block.lines
            elif last != "blank" and (block.kind != "para" or last != "para"):
                out.append("")
            out.extend(block.lines)
            last, i = block.kind, block.end
        return out

    def _block(self, lines: list[str], i: int, last: str) -> _Block:
        line = lines[i]
        if last != "para" and _indent(line) >= _STEP:
            end = i + 1
            while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) >= _STEP):
                end += 1
            end = _trim_blank_tail(lines, end, i)
            return _Block("block", end, [text if text.strip() else "" for text in lines[i:end]])
        fence = _FENCE.match(line)
        if fence and (close := self._closing_fence(lines, i, fence)) is not None:
            return _Block("block", close + 1, [self._stash_code(lines[i + 1 : close], fence)])
        if _ATX_HEADING.match(line):
            return _Block("block", i + 1, [line.strip()])
        if _THEMATIC_BREAK.match(line) and not (last == "para" and set(line.strip()) == {"-"}):
            return _Block("block", i + 1, [line.strip()])
        if _QUOTE.match(line):
            return self._quote(lines, i)
        if (end := self._html_end(lines, i)) is not None:
            return _Block("block", end, lines[i:end])
        item = _LIST_ITEM.match(line)
        if item and (last != "para" or self._interrupts_paragraph(line, item)):
            return self._item(lines, i, item)
        return _Block("para", i + 1, [self._paragraph_text(line, item if last == "para" else None)])

    @staticmethod
    def _paragraph_text(line: str, marker: re.Match[str] | None) -> str:
        text = line.lstrip(" ")
        if text.startswith("#"):
            return "\\" + text
        if marker and marker.group(3):
            digits = marker.group(3)
            return digits + "\\" + text[len(digits) :]
        return text

    @staticmethod
    def _interrupts_paragraph(line: str, item: re.Match[str]) -> bool:
        has_content = bool(line[item.end() :].strip())
        return has_content and item.group(3) in (None, "1")

    def _is_block_start(self, line: str) -> bool:
        return bool(
            _LIST_ITEM.match(line)
            or _QUOTE.match(line)
            or _ATX_HEADING.match(line)
            or _FENCE.match(line)
            or _THEMATIC_BREAK.match(line)
            or self._html_end([line], 0) is not None
        )

    def _item(self, lines: list[str], i: int, item: re.Match[str]) -> _Block:
        line, marker = lines[i], item.group(2)
        after_marker = len(item.group(1)) + len(marker)
        if not line[item.end() :].strip() or len(item.group(4)) > _STEP:
            content_column = after_marker + 1
        else:
            content_column = item.end()
        content, end = [line[content_column:]], i + 1
        while end < len(lines):
            text = lines[end]
            if text.strip() and _indent(text) >= content_column:
                content.append(text[content_column:])
            elif not text.strip():
                content.append("")
            elif content[-1].strip() and not self._is_block_start(text):
                content.append(text.lstrip(" "))
            else:
                break
            end += 1
        end = _trim_blank_tail(lines, end, i)
        body = self.container(content[: end - i], in_item=True)
        kind = "ol" if item.group(3) else "ul"
        head = f"{marker.replace(')', '.')} {body[0]}"
        return _Block(kind, end, [head] + [" " * _STEP + text if text else "" for text in body[1:]])

    def _quote(self, lines: list[str], i: int) -> _Block:
        content: list[str] = []
        end = i
        while end < len(lines):
            text = lines[end]
            if prefix := _QUOTE.match(text):
                content.append(text[prefix.end() :])
            elif text.strip() and content[-1].strip() and not self._is_block_start(text):
                content.append(text)
            else:
                break
            end += 1
        body = self.container(content, in_item=False)
        return _Block("block", end, [f"> {text}" if text else ">" for text in body])

    def _html_end(self, lines: list[str], i: int) -> int | None:
        start = _HTML_START.match(lines[i])
        if not start:
            return None
        tag = (start.group(2) or "").lower()
        if start.group(1) == "!--":
            closer = re.compile("-->")
        elif tag in _RAW_TEXT_TAGS:
            closer = re.compile(rf"</{tag}\s*>", re.I)
        elif tag in self._block_tags:
            closer = None
        else:
            return None
        depth = 0
        for end in range(i, len(lines)):
            if closer is not None and closer.search(lines[end]):
                return end + 1
            if closer is None:
                depth += len(re.findall(rf"<{tag}(?=[\s/>]|$)", lines[end], re.I))
                depth -= len(re.findall(rf"</{tag}\s*>", lines[end], re.I))
                if depth <= 0:
                    return end + 1
        end = i + 1
        while end < len(lines) and lines[end].strip():
            end += 1
        return end

    @staticmethod
    def _closing_fence(lines: list[str], i: int, fence: re.Match[str]) -> int | None:
        mark = fence.group(2)
        if mark[0] == "`" and "`" in fence.group(3):
            return None
        closer = re.compile(rf"^ {{0,3}}{re.escape(mark[0])}{{{len(mark)},}} *$")
        return next((j for j in range(i + 1, len(lines)) if closer.match(lines[j])), None)

    def _stash_code(self, body: list[str], fence: re.Match[str]) -> str:
        indent = len(fence.group(1))
        code = "".join(text[min(indent, _indent(text)) :] + "\n" for text in body)
        language = fence.group(3).strip().split(" ")[0]
        css = f' class="language-{html.escape(language)}"' if language else ""
        return self._stash(f"<pre><code{css}>{html.escape(code, quote=False)}</code></pre>")


class _NormaliseBlocks(Preprocessor):
    """Run the block normaliser after Python-Markdown has expanded TABs."""

    def run(self, lines: list[str]) -> list[str]:
        block_tags = frozenset(self.md.block_level_elements)
        return _BlockNormaliser(self.md.htmlStash.store, block_tags).container(lines, False)


class _CommonMarkBlocks(Extension):
    """Register the block normaliser between whitespace normalising and fenced code."""

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (Python-Markdown API)
        md.preprocessors.register(_NormaliseBlocks(md), "commonmark_blocks", 27)


_local = threading.local()


def _converter() -> markdown.Markdown:
    converter = getattr(_local, "converter", None)
    if converter is None:
        converter = markdown.Markdown(extensions=["extra", "sane_lists", _CommonMarkBlocks()])
        _local.converter = converter
    return converter


def render_markdown(body: str) -> str:
    """Render an issue body (front matter already removed, Liquid already resolved) to an HTML fragment."""
    converter = _converter()
    converter.reset()
    return converter.convert(body)
