"""Keep Python-Markdown's inline patterns linear in the size of a paragraph.

Python-Markdown's link, image, reference and footnote patterns scan forward from every `[` for
its closing `]`, and from every `](` for its closing `)`: a paragraph of 100,000 `[` (or `![`,
`[a](`, `[^`) takes hours. Just before those patterns run (after code spans and backslash
escapes have been taken out), one pass over the paragraph finds the brackets that cannot start
anything and swaps them for private-use stand-ins, which `restore` turns back into brackets in
the finished HTML, so the output is what Python-Markdown would have made:

- a `[` with no `]` to balance it, unless it starts a footnote reference that is defined;
- a balanced `[…]` that is not followed by `(`, by `[` (a reference), and whose text is not a
  defined reference or footnote: both brackets;
- a `(` after `]` that can never close: no `)` balances it, no quote follows (a quoted link
  title changes how Python-Markdown counts) and no `<` destination begins it.

`markup` uses the same stand-ins for a `<` after the last `>` of the body (it can open nothing)
and for fence lines that can neither open nor close a block. Backslash escapes are taken out in
one pass too, and so are the matches of the patterns that only look forward (links, images,
references, footnotes, code spans, autolinks, inline HTML, entities, line breaks):
Python-Markdown copies the paragraph once per match. Emphasis keeps its own loop.
"""
from __future__ import annotations

import bisect
import re
from typing import TYPE_CHECKING

import markdown
from markdown.extensions.footnotes import FootnoteInlineProcessor
from markdown.inlinepatterns import (
    ESCAPE_RE,
    AutolinkInlineProcessor,
    AutomailInlineProcessor,
    BacktickInlineProcessor,
    EscapeInlineProcessor,
    HtmlInlineProcessor,
    InlineProcessor,
    LinkInlineProcessor,
    SubstituteTagInlineProcessor,
)
from markdown.treeprocessors import InlineProcessor as InlineTreeprocessor
from markdown.util import ETX, STX, AtomicString

_NEWLINES = re.compile(r"\s+")
_ANGLE_DESTINATION = re.compile(r"\s*<")
_ESCAPE = re.compile(ESCAPE_RE)
# Patterns that look only forward from their match, so every match can be taken in one pass over
# the text as it was (code spans look behind only after a run of backslashes, handled below).
# Emphasis keeps state between matches: it stays with Python-Markdown's loop.
_IN_ONE_PASS = (LinkInlineProcessor, BacktickInlineProcessor, AutolinkInlineProcessor, AutomailInlineProcessor,
                HtmlInlineProcessor, SubstituteTagInlineProcessor, FootnoteInlineProcessor)
_CANDIDATES = range(0xF0000, 0xFFFFE)      # Supplementary Private Use Area-A
_RESTORED = ("[", "]", "(", "&lt;", "`", "~")

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from markdown.inlinepatterns import Pattern

    class _InlineTreeprocessor(InlineTreeprocessor):
        """The private methods of Python-Markdown's inline tree processor that `GuardedInline`
        overrides and calls; its stubs leave them out."""

        def _InlineProcessor__applyPattern(self, pattern: Pattern, data: str, patternIndex: int,
                                           startIndex: int = 0) -> tuple[str, bool, int]: ...

        def _InlineProcessor__handleInline(self, data: str, patternIndex: int = 0) -> str: ...

        def _InlineProcessor__stashNode(self, node: Element | str, type: str) -> str: ...
else:
    _InlineTreeprocessor = InlineTreeprocessor


def stand_ins(text: str) -> tuple[str, ...]:
    """Pick private-use characters that `text` does not contain, for `[`, `]`, `(`, `<`, a backtick
    and a tilde."""
    present = set(text)
    chosen = []
    for code in _CANDIDATES:
        if chr(code) not in present:
            chosen.append(chr(code))
            if len(chosen) == len(_RESTORED):
                return tuple(chosen)
    raise ValueError("no free private-use characters")   # 65,534 candidates: cannot happen under 2 MB


def restore(html: str, marks: tuple[str, ...]) -> str:
    """Turn the stand-ins back into the brackets they replaced (`<` was text: it is `&lt;` in HTML)."""
    for mark, bracket in zip(marks, _RESTORED, strict=True):
        html = html.replace(mark, bracket)
    return html


class BracketGuard(InlineProcessor):
    """A marker in the inline pattern list: where it stands, `GuardedInline` rewrites the text."""

    def __init__(self, md: markdown.Markdown):
        super().__init__(r"(?!)", md)
        self.marks: tuple[str, ...] = _RESTORED

    def guard(self, data: str) -> str:
        if "[" not in data:
            return data
        return _Paragraph(data, self.md).rewrite(self.marks)


class GuardedInline(_InlineTreeprocessor):
    """Python-Markdown's inline tree processor, which hands the text to `BracketGuard` at its place
    among the patterns (Python-Markdown offers no hook that may change the text there), and takes
    out backslash escapes in one pass."""

    def _InlineProcessor__applyPattern(self, pattern, data, patternIndex, startIndex=0):  # noqa: N802, ANN001
        if isinstance(pattern, BracketGuard):
            return pattern.guard(data), False, 0
        if type(pattern) is EscapeInlineProcessor:
            # What Python-Markdown's loop makes of every backslash escape, in one pass instead of
            # one copy of the paragraph per escape: STX, the character's code point, ETX.
            return _ESCAPE.sub(lambda found: f"{STX}{ord(found.group(1))}{ETX}" if found.group(1) in
                               self.md.ESCAPED_CHARS else found.group(0), data), False, 0
        if isinstance(pattern, _IN_ONE_PASS):
            return self._apply_in_one_pass(pattern, data, patternIndex, startIndex)
        return super()._InlineProcessor__applyPattern(pattern, data, patternIndex, startIndex)

    def _apply_in_one_pass(self, pattern, data: str, pattern_index: int, start_index: int):  # noqa: ANN001
        """Do what Python-Markdown's loop does with every match of `pattern`, building the new text
        once: its loop copies the paragraph once per match (quadratic for 25,000 links in one)."""
        if any(exclude.lower() in self.ancestors for exclude in pattern.ANCESTOR_EXCLUDES):
            return data, False, 0
        pieces: list[str] = []
        position = search_from = start_index
        pieces.append(data[:start_index])
        while True:
            for match in pattern.getCompiledRegExp().finditer(data, search_from):
                node, start, end = pattern.handleMatch(match, data)
                if start is not None and end is not None:
                    break
            else:
                break
            if node is None:                    # text the pattern skips over
                search_from = end
                continue
            if not isinstance(node, str) and not isinstance(node.text, AtomicString):
                for child in [node, *node]:
                    if child.text:
                        self.ancestors.append(child.tag.lower())
                        child.text = self._InlineProcessor__handleInline(child.text, pattern_index + 1)
                        self.ancestors.pop()
                    if child.tail:
                        child.tail = self._InlineProcessor__handleInline(child.tail, pattern_index)
            placeholder = self._InlineProcessor__stashNode(node, pattern.type())
            pieces += [data[position:start], placeholder]
            # Python-Markdown's own odd end, or a code span's run of backslashes (its placeholder hides
            # them from the look-behind of the next match): let its loop go on from here.
            if end < start or (isinstance(pattern, BacktickInlineProcessor) and match.group(1)):
                done = "".join(pieces)
                return done + data[end:], True, len(done)
            position = search_from = end
        pieces.append(data[position:])
        return "".join(pieces), False, 0


class _Paragraph:
    """The brackets of one text as the link patterns will see it, and which of them are inert."""

    def __init__(self, data: str, md: markdown.Markdown):
        self.data, self.md = data, md
        self.closers = [index for index, char in enumerate(data) if char == "]"]
        patterns = md.inlinePatterns
        footnotes = patterns["footnote"] if "footnote" in patterns else None  # noqa: SIM401 (a Registry has no get())
        self.footnotes = footnotes.footnotes.footnotes if isinstance(footnotes, FootnoteInlineProcessor) else {}
        # Names longer than these cannot be defined ones: their text is never sliced off to look up.
        self.longest_footnote = max(map(len, self.footnotes), default=0)
        self.longest_reference = 4 * max(map(len, md.references), default=-1) + 64
        self.last_quote = max(data.rfind('"'), data.rfind("'"))

    def rewrite(self, marks: tuple[str, ...]) -> str:
        data = self.data
        pairs, unmatched = _match(data, "[", "]")
        paren_pairs, _ = _match(data, "(", ")")
        replace: dict[int, str] = {}
        for start in unmatched:
            if not self._footnote(start):
                replace[start] = marks[0]
        for start, end in pairs.items():
            after = end + 1
            link = after < len(data) and data[after] == "("
            if link and self._link_cannot_close(after, paren_pairs):
                replace[after] = marks[2]
                link = False
            if link or self._reference_follows(after) or self._footnote(start) or self._defined(start, end):
                continue
            replace[start], replace[end] = marks[0], marks[1]
        if not replace:
            return data
        chars = list(data)
        for index, mark in replace.items():
            chars[index] = mark
        return "".join(chars)

    def _footnote(self, start: int) -> bool:
        """Whether `[` at `start` begins a reference to a defined footnote (`[^id]`, up to the first `]`)."""
        if not self.data.startswith("^", start + 1) or not self.footnotes:
            return False
        index = bisect.bisect_right(self.closers, start)
        if index == len(self.closers) or self.closers[index] - start - 2 > self.longest_footnote:
            return False
        return self.data[start + 2:self.closers[index]] in self.footnotes

    def _defined(self, start: int, end: int) -> bool:
        """Whether the text between the brackets names a defined reference (`[name]` alone links)."""
        if not self.md.references or end - start > self.longest_reference:
            return False
        return _NEWLINES.sub(" ", self.data[start + 1:end].lower()) in self.md.references

    def _reference_follows(self, after: int) -> bool:
        """Whether `[…]` is followed by a reference's `[id]` (after at most one blank)."""
        data = self.data
        if after < len(data) and data[after].isspace():
            after += 1
        return after < len(data) and data[after] == "[" and bisect.bisect_right(self.closers, after) < len(self.closers)

    def _link_cannot_close(self, opening: int, paren_pairs: dict[int, int]) -> bool:
        if opening in paren_pairs or self.last_quote > opening:
            return False
        return not _ANGLE_DESTINATION.match(self.data, opening + 1)


def _match(data: str, opener: str, closer: str) -> tuple[dict[int, int], list[int]]:
    """Pair each opener with the closer that balances it, as counting forward from it would;
    return {opener: closer} and the openers nothing balances."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for index, char in enumerate(data):
        if char == opener:
            stack.append(index)
        elif char == closer and stack:
            pairs[stack.pop()] = index
    return pairs, stack
