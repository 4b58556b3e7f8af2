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

The body is untrusted input. Lists and quotes nest at most ``MAX_NESTING`` levels (deeper is
refused with its line: Python-Markdown would exhaust Python's stack); the normaliser finds
closing fences and the ends of HTML blocks through indexes built once per container, so
unclosed openers cost no rescan; and `brackets` keeps the link patterns linear.
"""

from __future__ import annotations

import bisect
import html
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import markdown
from markdown.extensions import Extension
from markdown.preprocessors import Preprocessor

from distributor.errors import InputError
from distributor.render.brackets import BracketGuard, GuardedInline, restore, stand_ins

MAX_NESTING = 50  # lists and quotes inside one another; the deepest corpus issue nests 4
_STEP = 4  # Python-Markdown's indentation per nesting level
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?: |$)")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(?: *\1){2,} *$")
_LIST_ITEM = re.compile(r"^( {0,3})([-+*]|(\d{1,9})[.)])( +|$)")
_QUOTE = re.compile(r"^ {0,3}> ?")
_HTML_START = re.compile(r"^ {0,3}<(!--|/?([A-Za-z][A-Za-z0-9-]*)(?=[\s/>]|$))")
_RAW_TEXT_TAGS = frozenset({"script", "pre", "style", "textarea"})
_LIST_KINDS = ("ul", "ol")
_ANY_FENCE_CLOSER = re.compile(r"^ {0,3}(`{3,}|~{3,}) *$")


class MarkupTooDeep(InputError):
    """Lists or quotes nested deeper than `MAX_NESTING`; `body_line` is the line in the body."""

    def __init__(self, body_line: int):
        self.body_line = body_line
        self.problem = f"lists or quotes nested deeper than {MAX_NESTING} levels"
        super().__init__(self.problem, line=body_line)


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


@dataclass
class _Container:
    """The lines of one container, where it sits (nesting depth, index of its first line in the
    body) and indexes built on first use, so that finding a closer never rescans the lines."""

    lines: list[str]
    depth: int
    first: int
    _closers: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    _lines_with: dict[str, list[int]] = field(default_factory=dict)
    _balance_ends: dict[str, list[int]] = field(default_factory=dict)

    def closing_fence(self, i: int, mark: str) -> int | None:
        """Index of the first line after `i` that closes a fence opened with `mark`."""
        key = (mark[0], len(mark))
        if key not in self._closers:
            self._closers[key] = [index for index, line in enumerate(self.lines)
                                  if (found := _ANY_FENCE_CLOSER.match(line))
                                  and found.group(1)[0] == mark[0] and len(found.group(1)) >= len(mark)]
        closers = self._closers[key]
        at = bisect.bisect_right(closers, i)
        return closers[at] if at < len(closers) else None

    def first_line_with(self, i: int, closer: str, pattern: re.Pattern[str]) -> int | None:
        """Index of the first line from `i` on in which `pattern` (named `closer`) is found."""
        if closer not in self._lines_with:
            self._lines_with[closer] = [index for index, line in enumerate(self.lines) if pattern.search(line)]
        found = self._lines_with[closer]
        at = bisect.bisect_left(found, i)
        return found[at] if at < len(found) else None

    def balanced_end(self, i: int, tag: str) -> int | None:
        """The least `end` > `i` such that lines i..end-1 close every `<tag>` they open, or None."""
        if tag not in self._balance_ends:
            opening, closing = re.compile(rf"<{tag}(?=[\s/>]|$)", re.I), re.compile(rf"</{tag}\s*>", re.I)
            totals = [0]
            for line in self.lines:
                totals.append(totals[-1] + len(opening.findall(line)) - len(closing.findall(line)))
            # For each k, the first k' > k whose running total is not above totals[k].
            ends: list[int] = [-1] * len(totals)
            waiting: list[int] = []
            for index, total in enumerate(totals):
                while waiting and totals[waiting[-1]] >= total:
                    ends[waiting.pop()] = index
                waiting.append(index)
            self._balance_ends[tag] = ends
        end = self._balance_ends[tag][i]
        return end if end >= 0 else None


class _BlockNormaliser:
    """Rewrite CommonMark block structure into the dialect Python-Markdown parses alike."""

    def __init__(self, stash: Callable[[str], str], block_tags: frozenset[str]) -> None:
        self._stash = stash
        self._block_tags = block_tags

    def container(self, lines: list[str], in_item: bool, depth: int = 0, first: int = 0) -> list[str]:
        """Normalise the lines of one container (document, list item or blockquote), the one at
        `depth` whose first line is line `first` (from 0) of the body."""
        if depth > MAX_NESTING:
            raise MarkupTooDeep(first + 1)
        where = _Container(lines, depth, first)
        out: list[str] = []
        last, loose_item = "blank", False
        i = 0
        while i < len(lines):
            if not lines[i].strip():
                out.append("")
                last, i = "blank", i + 1
                continue
            block = self._block(where, i, last)
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

    def _block(self, where: _Container, i: int, last: str) -> _Block:
        lines = where.lines
        line = lines[i]
        if last != "para" and _indent(line) >= _STEP:
            end = i + 1
            while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) >= _STEP):
                end += 1
            end = _trim_blank_tail(lines, end, i)
            return _Block("block", end, [text if text.strip() else "" for text in lines[i:end]])
        fence = _FENCE.match(line)
        if fence and (close := self._closing_fence(where, i, fence)) is not None:
            return _Block("block", close + 1, [self._stash_code(lines[i + 1 : close], fence)])
        if _ATX_HEADING.match(line):
            return _Block("block", i + 1, [line.strip()])
        if _THEMATIC_BREAK.match(line) and not (last == "para" and set(line.strip()) == {"-"}):
            return _Block("block", i + 1, [line.strip()])
        if _QUOTE.match(line):
            return self._quote(where, i)
        if (html_end := self._html_end(where, i)) is not None:
            return _Block("block", html_end, lines[i:html_end])
        item = _LIST_ITEM.match(line)
        if item and (last != "para" or self._interrupts_paragraph(line, item)):
            return self._item(where, i, item)
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
            or self._html_block_tag(line) is not None
        )

    def _item(self, where: _Container, i: int, item: re.Match[str]) -> _Block:
        lines = where.lines
        line, marker = lines[i], item.group(2)
        after_marker = len(item.group(1)) + len(marker)
        # After a blank first line, or before indented code, the content starts one space past the marker.
        one_past_marker = not line[item.end() :].strip() or len(item.group(4)) > _STEP
        content_column = after_marker + 1 if one_past_marker else item.end()
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
        body = self.container(content[: end - i], True, where.depth + 1, where.first + i)
        kind = "ol" if item.group(3) else "ul"
        head = f"{marker.replace(')', '.')} {body[0]}"
        return _Block(kind, end, [head] + [" " * _STEP + text if text else "" for text in body[1:]])

    def _quote(self, where: _Container, i: int) -> _Block:
        lines = where.lines
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
        body = self.container(content, False, where.depth + 1, where.first + i)
        return _Block("block", end, [f"> {text}" if text else ">" for text in body])

    def _html_block_tag(self, line: str) -> str | None:
        """Return what opens the raw HTML block that `line` starts ("!--" or the tag), or None."""
        start = _HTML_START.match(line)
        if not start:
            return None
        tag = (start.group(2) or "").lower()
        if start.group(1) == "!--" or tag in _RAW_TEXT_TAGS or tag in self._block_tags:
            return start.group(1) if start.group(1) == "!--" else tag
        return None

    def _html_end(self, where: _Container, i: int) -> int | None:
        tag = self._html_block_tag(where.lines[i])
        if tag is None:
            return None
        if tag == "!--":
            end = where.first_line_with(i, "-->", re.compile("-->"))
        elif tag in _RAW_TEXT_TAGS:
            end = where.first_line_with(i, f"</{tag}", re.compile(rf"</{tag}\s*>", re.I))
        else:
            end = where.balanced_end(i, tag)
            end = end - 1 if end is not None else None
        if end is not None:
            return end + 1
        lines, end = where.lines, i + 1
        while end < len(lines) and lines[end].strip():
            end += 1
        return end

    @staticmethod
    def _closing_fence(where: _Container, i: int, fence: re.Match[str]) -> int | None:
        mark = fence.group(2)
        if mark[0] == "`" and "`" in fence.group(3):
            return None
        return where.closing_fence(i, mark)

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


_FENCE_RUN = re.compile(r"^(`{3,}|~{3,})")


class _UnclosedFencesHidden(Preprocessor):
    """Run Python-Markdown's fenced code search (it still finds fences the normaliser leaves, those
    in raw HTML blocks) with the fence lines that can neither open nor close a block hidden behind a
    stand-in: its regex rescans from each of them to the end of the text."""

    def __init__(self, md: markdown.Markdown, fenced: Preprocessor, guard: BracketGuard):
        super().__init__(md)
        self._fenced = fenced
        self._guard = guard

    def run(self, lines: list[str]) -> list[str]:
        fences = [(index, found.group(1)) for index, line in enumerate(lines) if (found := _FENCE_RUN.match(line))]
        closers = {fence: index for index, fence in fences if lines[index].rstrip(" ") == fence}   # last of each
        openers: dict[str, int] = {}
        for index, fence in fences:
            openers.setdefault(fence, index)                                                   # first of each
        marks = self._guard.marks
        # Hidden: no closing line after it, and not itself the closing line of an earlier opener.
        hidden = {index for index, fence in fences if closers.get(fence, -1) <= index
                  and (lines[index].rstrip(" ") != fence or openers[fence] == index)}
        shown = [marks[4 if line[0] == "`" else 5] + line[1:] if index in hidden else line
                 for index, line in enumerate(lines)]
        return [line.replace(marks[4], "`").replace(marks[5], "~") for line in self._fenced.run(shown)]


class _CommonMarkBlocks(Extension):
    """Register the block normaliser between whitespace normalising and fenced code, and the
    bracket guard among the inline patterns (kept as `guard`, for the converter's stand-ins)."""

    guard: BracketGuard

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (Python-Markdown API)
        self.guard = BracketGuard(md)
        md.preprocessors.register(_NormaliseBlocks(md), "commonmark_blocks", 27)
        md.preprocessors.register(_UnclosedFencesHidden(md, md.preprocessors["fenced_code_block"], self.guard),
                                  "fenced_code_block", 25)
        # After code spans (190) and escapes (180), before footnotes (175) and links (170-125).
        md.inlinePatterns.register(self.guard, "bracket_guard", 177)
        md.treeprocessors.register(GuardedInline(md), "inline", 20)


_local = threading.local()


@dataclass(frozen=True)
class _Converter:
    """One thread's Markdown converter and the bracket guard registered in it."""

    md: markdown.Markdown
    guard: BracketGuard


def _converter() -> _Converter:
    converter = getattr(_local, "converter", None)
    if converter is None:
        blocks = _CommonMarkBlocks()
        converter = _Converter(markdown.Markdown(extensions=["extra", "sane_lists", blocks]), blocks.guard)
        _local.converter = converter
    return converter


def render_markdown(body: str) -> str:
    """Render an issue body (front matter already removed, Liquid already resolved) to an HTML fragment.
    Raise `MarkupTooDeep` for lists or quotes nested past `MAX_NESTING`."""
    converter = _converter()
    converter.md.reset()
    guard = converter.guard
    guard.marks = stand_ins(body)
    # A `<` after the last `>` can open no tag, comment or autolink: a stand-in keeps Python's HTML
    # parser from scanning to the end from each of them.
    last = body.rfind(">") + 1
    body = body[:last] + body[last:].replace("<", guard.marks[3])
    try:
        return restore(converter.md.convert(body), guard.marks)
    except RecursionError as exc:     # other nesting Python-Markdown recurses on: `markdown="1"` HTML, definitions
        raise InputError("the Markdown is nested too deeply to render") from exc
