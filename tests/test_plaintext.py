from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import markdown
import pytest
from wcwidth import wcswidth

from distributor.channels.text.plaintext import PlainText, html_to_text

from .corpus import CORPUS, SOURCES, corpus_files, corpus_params, issue_body, require_corpus

SEPARATOR = "-" * 72

CASES = [
    ("h1 underlined with =", "<h1>Title</h1><p>Body</p>", 72, "Title\n=====\n\nBody\n"),
    ("h3 CJK underline counts columns", "<p>a</p><h3>泰晓资讯</h3><p>b</p>", 72, "a\n\n泰晓资讯\n--------\n\nb\n"),
    ("h2 emoji and CJK underline", "<h2>🦄文章&amp;教程</h2>", 72, "🦄文章&教程\n===========\n"),
    ("whitespace collapsed", "<p>a   b\n\t c </p>\n\n<p> d</p>", 72, "a b c\n\nd\n"),
    ("br is a line break", "<p>one<br>two<br />three</p>", 72, "one\ntwo\nthree\n"),
    ("CJK soft line break joins", "<p>中文\n换行 and\nword</p>", 72, "中文换行 and word\n"),
    ("nested ul aligned under item text", "<ul><li>alpha beta gamma<ul><li>delta epsilon</li></ul></li>"
     "<li>zeta</li></ul>", 16, "- alpha beta\n  gamma\n  - delta\n    epsilon\n- zeta\n"),
    ("ol respects start and marker width", '<ol start="9"><li>nine</li><li>ten ten ten</li></ol>', 11,
     "9. nine\n10. ten ten\n    ten\n"),
    ("blockquote inside loose list item", "<ul><li><p>item</p><blockquote><p>quoted words here</p></blockquote>"
     "</li><li><p>next</p></li></ul>", 14, "- item\n\n  > quoted\n  > words here\n\n- next\n"),
    ("nested blockquotes", "<blockquote><p>a</p><blockquote><p>b c</p></blockquote></blockquote>", 72,
     "> a\n>\n> > b c\n"),
    ("code block verbatim, indented, not wrapped", "<p>x</p><pre><code>fn main() {\n    let  a = 1;   \n"
     "    call_a_function_with_a_long_name();\n}\n</code></pre>", 48,
     "x\n\n    fn main() {\n        let  a = 1;\n        call_a_function_with_a_long_name();\n    }\n"),
    ("code line wider than the width folded with a backslash (RFC 8792)",
     "<pre><code>run --flag one two three https://example.org/a/very/long/path/name\n</code></pre>", 30,
     "    run --flag one two three \\\n    https://example.org/a/very/long/path/name\n"),
    ("code block inside list item", "<ul><li><p>run</p><pre><code>make  all\n</code></pre></li></ul>", 72,
     "- run\n\n      make  all\n"),
    ("inline code in backticks", "<p>call <code>foo(a, b)</code> now</p>", 72, "call `foo(a, b)` now\n"),
    ("links numbered and deduplicated", '<p><a href="https://a.example/">A</a>, <a href="https://b.example/">B'
     '</a> and <a href="https://a.example/">again</a></p>', 72,
     f"A [1], B [2] and again [1]\n\n{SEPARATOR}\n[1] https://a.example/\n[2] https://b.example/\n"),
    ("link whose text is its URL", '<p>see <a href="https://x.example/p">https://x.example/p</a></p>', 72,
     "see https://x.example/p\n"),
    ("in-page anchors and footnotes", '<p>x<sup id="fnref:1"><a class="footnote-ref" href="#fn:1">1</a></sup>'
     '</p><div class="footnote"><hr /><ol><li id="fn:1"><p>Note.&#160;<a class="footnote-backref" '
     'href="#fnref:1">&#8617;</a></p></li></ol></div>', 72, "x^1\n\n* * *\n\n1. Note.\n"),
    ("mailto shows the address", '<p><a href="mailto:ed@example.org">Ed</a> or <a href="mailto:ed@example.org">'
     "ed@example.org</a></p>", 72, "Ed <ed@example.org> or ed@example.org\n"),
    ("images numbered like links", '<p><img src="/a.png" alt="A cat"><a href="/a.png">same</a><img src="/b.png">'
     "</p>", 72, f"[image: A cat] [1] same [1] [image] [2]\n\n{SEPARATOR}\n[1] /a.png\n[2] /b.png\n"),
    ("entities decoded, script and style dropped", "<p>Fish &amp; chips &lt;3 &#20013;&nbsp;</p>"
     "<script>alert(1)</script><style>p {}</style><!-- note -->", 72, "Fish & chips <3 中\n"),
    ("table aligned by columns", "<table><thead><tr><th>Name</th><th>版本</th></tr></thead><tbody><tr>"
     "<td>Linux</td><td>5.7</td></tr></tbody></table>", 72, "Name  | 版本\n------+-----\nLinux | 5.7\n"),
    ("table too wide falls back to header: value", "<table><thead><tr><th>Name</th><th>版本</th></tr></thead>"
     "<tbody><tr><td>Linux</td><td>5.7</td></tr><tr><td>GCC</td><td>14</td></tr></tbody></table>", 11,
     "Name: Linux\n版本: 5.7\n\nName: GCC\n版本: 14\n"),
    ("hr and empty blocks", "<p>a</p><p></p><hr><div><p>b</p>\n\n\n</div>", 72, "a\n\n* * *\n\nb\n"),
    ("no break before closing punctuation", "<p>一二三四五，六</p>", 10, "一二三四\n五，六\n"),
    ("no break after opening quote", "<p>一二三四“五六”</p>", 10, "一二三四\n“五六”\n"),
    ("mixed CJK and Latin", "<p>使用 Rust 编写的内核模块</p>", 12, "使用 Rust 编\n写的内核模块\n"),
    ("URL longer than the width kept whole", '<p>see <a href="https://example.com/a/very/long/path">'
     "https://example.com/a/very/long/path</a> end</p>", 20, "see\nhttps://example.com/a/very/long/path\nend\n"),
    ("empty fragment", "  \n", 72, "\n"),
]


@pytest.mark.parametrize(("html", "width", "expected"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_renders_rule(html: str, width: int, expected: str) -> None:
    assert html_to_text(html, width=width).text == expected


def test_links_tuple_follows_reference_order() -> None:
    html = '<p><a href="https://b.example/">B</a> <img src="/i.png"> <a href="https://b.example/">B</a></p>'
    assert html_to_text(html).links == ("https://b.example/", "/i.png")


@pytest.mark.parametrize("width", [20, 41, 72])
def test_long_chinese_paragraph_fills_lines_within_width(width: int) -> None:
    sentence = "泰晓资讯，广泛报道“Linux/开源”业界资讯。欢迎广大读者投递相关资讯来源和素材（本站将进一步收集）。"
    lines = html_to_text(f"<p>{sentence * 12}</p>", width=width).text.rstrip("\n").split("\n")
    assert "".join(lines) == sentence * 12
    assert all(wcswidth(line) <= width for line in lines)
    assert all(wcswidth(line) >= width - 6 for line in lines[:-1])
    assert not any(line[0] in "，。、）”" for line in lines)


def test_rejects_a_width_below_one() -> None:
    with pytest.raises(ValueError):
        html_to_text("<p>x</p>", width=0)


class _HtmlFacts(HTMLParser):
    """Collect link targets, image sources and code-block lines from rendered HTML."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.sources: list[str] = []
        self.code_lines: set[str] = set()
        self._in_pre = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.hrefs.append(values["href"].strip())
        elif tag == "img" and values.get("src"):
            self.sources.append(values["src"].strip())
        self._in_pre += tag == "pre"

    def handle_endtag(self, tag: str) -> None:
        self._in_pre -= tag == "pre"

    def handle_data(self, data: str) -> None:
        if self._in_pre:
            self.code_lines.update(line.strip() for line in data.split("\n"))


def _render_corpus_file(path: Path) -> tuple[str, PlainText]:
    html = markdown.markdown(issue_body(path), extensions=["extra", "sane_lists"])
    return html, html_to_text(html)


def _overlong_line_is_allowed(line: str, facts: _HtmlFacts) -> bool:
    """An over-wide line is a code line, or a prefix followed by one word (a URL or unbreakable)."""
    if line.strip() in facts.code_lines:
        return True
    *prefix, last = line.split()
    return "://" in last or all(re.fullmatch(r">|-|\d+\.|\[\d+\]", word) for word in prefix)


def test_corpus_has_every_source() -> None:
    require_corpus()
    files = corpus_files()
    assert {path.relative_to(CORPUS).parts[0] for path in files} == set(SOURCES)
    assert any("en" in path.relative_to(CORPUS).parts for path in files)


@pytest.mark.parametrize("path", corpus_params(corpus_files()))
def test_corpus_file_renders_within_width_with_every_link(path: Path) -> None:
    html, result = _render_corpus_file(path)
    facts = _HtmlFacts(html)
    lines = result.text.split("\n")
    assert result.text.endswith("\n") and not result.text.endswith("\n\n")
    assert "\n\n\n" not in result.text and not any(line != line.rstrip() for line in lines)
    too_wide = [line for line in lines if wcswidth(line) > 72 and not _overlong_line_is_allowed(line, facts)]
    assert too_wide == []
    references = set(lines[lines.index(SEPARATOR) + 1:]) if result.links else set()
    for number, url in enumerate(result.links, start=1):
        assert f"[{number}] {url}" in references
    for href in facts.hrefs:
        if href.startswith("mailto:"):
            assert unquote(href.removeprefix("mailto:").split("?")[0]) in result.text
        elif not href.startswith("#"):
            assert href in result.links or href in result.text, href
    assert set(facts.sources) <= set(result.links)
