"""Tests for distributor.render.markup: Markdown body to HTML fragment, checked against real issues."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import lxml.html
import pytest

from distributor.render.markup import render_markdown

from .corpus import ABSENT, CORPUS, FIDELITY, corpus_files, corpus_params, issue_body, require_corpus

LEAKS = {
    "bold marker": re.compile(r"\*\*\S"),
    "link syntax": re.compile(r"\]\("),
    "list marker": re.compile(r"^\s*[*-] \S", re.M),
    "heading marker": re.compile(r"^\s*#{1,6} \S", re.M),
}


def parse(fragment: str) -> lxml.html.HtmlElement:
    return lxml.html.fragment_fromstring(fragment, create_parent="div")


def leaked_markdown(fragment: str) -> dict[str, int]:
    """Count Markdown syntax left as visible text (code, scripts and comments aside)."""
    root = parse(fragment)
    for element in root.xpath("//pre | //code[not(ancestor::pre)] | //script | //style"):
        element.drop_tree()
    text = root.text_content()
    counts = {name: len(pattern.findall(text)) for name, pattern in LEAKS.items()}
    return {name: count for name, count in counts.items() if count}


# --- the TinyLab posts against the site's own rendering --------------------------------------


@pytest.mark.parametrize("post", corpus_params(corpus_files("tinylab/*")))
def test_tinylab_post_keeps_every_measure_of_the_site_rendering(post: Path, tmp_path: Path) -> None:
    if not FIDELITY.is_file():
        pytest.skip(f"{FIDELITY} not present")
    reference = CORPUS / "reference" / "tinylab" / f"{post.stem}.html"
    candidate = tmp_path / f"{post.stem}.html"
    candidate.write_text(f"<html><body>{render_markdown(issue_body(post))}</body></html>", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(FIDELITY), str(reference), str(candidate)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_corpus_has_the_files_the_tests_expect() -> None:
    require_corpus()
    assert len(corpus_files("tinylab/*")) == 15
    assert len(corpus_files()) == 25


@pytest.mark.parametrize("source", corpus_params(corpus_files()))
def test_corpus_file_renders_without_leaking_markdown(source: Path) -> None:
    fragment = render_markdown(issue_body(source))
    assert parse(fragment).xpath("//p | //li | //h2 | //h3"), "rendered nothing readable"
    assert leaked_markdown(fragment) == {}


def test_soft_wrapped_issue_number_in_twir_538_stays_in_its_paragraph() -> None:
    source = CORPUS / "this-week-in-rust" / "2024-03-13-this-week-in-rust.md"
    if not source.is_file():
        pytest.skip(ABSENT)
    root = parse(render_markdown(issue_body(source)))
    assert not root.xpath("//h1[starts-with(normalize-space(), '122010')]")
    assert root.xpath("//p[contains(normalize-space(), 'PR #122010, which undoes')]")


# --- each trap as a small case -----------------------------------------------------------------

STRUCTURE_CASES = [
    ("nested list by 4 spaces", "- fruit\n    - apple\n    - pear\n- tea",
     {"//ul/li/ul/li": 2, "/div/ul/li": 2}),
    ("nested list by 2 spaces", "- fruit\n  - apple\n  - pear\n- tea",
     {"//ul/li/ul/li": 2, "/div/ul/li": 2}),
    ("nested list by 3 spaces", "1. fruit\n   1. apple\n   2. pear\n2. tea",
     {"//ol/li/ol/li": 2, "/div/ol/li": 2}),
    ("three levels, loose", "* a\n\n    * b\n\n        * c\n* d",
     {"//li/ul/li/ul/li": 1, "/div/ul/li": 2}),
    ("top-level list indented 3 spaces", "Kernel:\n\n   - one\n   - two\n",
     {"/div/ul/li": 2, "//pre": 0}),
    ("list right after a paragraph", "Sources:\n- https://a.example\n- b",
     {"/div/p": 1, "/div/ul/li": 2}),
    ("year does not start a list", "It rained in\n2019. Then it stopped.",
     {"//ol": 0, "/div/p": 1}),
    ("lazy line stays in its item", "- first\ncontinued\n- second",
     {"/div/ul/li": 2}),
    ("quote and paragraph in item at 2 spaces",
     "- [News](https://n.example)\n\n  > Quoted text.\n\n  Translation.\n\n\n- Next",
     {"/div/ul/li": 2, "/div/ul/li[1]/blockquote/p": 1, "/div/ul/li[1]/p": 2}),
    ("quote and paragraphs in item at 3 spaces",
     "- News\n\n   > Quoted text.\n\n   Translation.\n   \n   Source: <https://n.example>",
     {"/div/ul/li": 1, "/div/ul/li/blockquote/p": 1, "/div/ul/li/p": 3, "/div/p": 0}),
    ("quote right under the item line", "- item\n  > quoted\n- next",
     {"/div/ul/li[1]/blockquote": 1, "/div/ul/li": 2}),
    ("list inside a quote", "> - a\n>   - b\n> - c",
     {"/div/blockquote/ul/li": 2, "//blockquote/ul/li/ul/li": 1}),
    ("#123 wrapped to a line start", "Fixed by PR\n#122010, which undoes it.",
     {"//h1": 0, "/div/p": 1}),
    ("#123 opening a paragraph", "#42 is the answer.",
     {"//h1": 0, "/div/p": 1}),
    ("real headings", "# Title\n\n## Part\nText",
     {"//h1": 1, "//h2": 1, "/div/p": 1}),
    ("TAB-indented lines are code", "Intro\n\n\tmore details\n\tsecond line\n\nAfter",
     {"//pre/code": 1, "/div/p": 2}),
    ("TAB-indented fence opener is code", "News\n\n\t```\n\nText",
     {"//pre/code": 1}),
    ("fenced code in list item", "- Run:\n\n  ```sh\n  cargo run\n  # note\n  ```\n\n  Done.\n- Next",
     {"/div/ul/li[1]/pre/code[@class='language-sh']": 1, "/div/ul/li[1]/p": 2, "//h1": 0}),
    ("1、 pseudo-list stays paragraphs", "1、第一条\n\n2、第二条",
     {"//ol": 0, "//li": 0, "/div/p": 2}),
    ("emoji", "## 🐍 Python\n\n- ✅ done\n- ❌ not yet",
     {"//h2": 1, "//li": 2}),
    ("pipe table", "| a | b |\n|---|---|\n| ✅ | <br /> |",
     {"//table//td": 2}),
    ("hard line break", "line one  \nline two",
     {"//p/br": 1}),
    ("thematic break after paragraph", "Text\n- - -\nMore",
     {"//hr": 1, "//li": 0}),
]


@pytest.mark.parametrize(
    ("markdown_text", "expected"),
    [pytest.param(text, shape, id=name) for name, text, shape in STRUCTURE_CASES],
)
def test_structure(markdown_text: str, expected: dict[str, int]) -> None:
    root = parse(render_markdown(markdown_text))
    found = {xpath: len(root.xpath(xpath)) for xpath in expected}
    assert found == expected, lxml.html.tostring(root, encoding="unicode")


def test_fenced_code_lines_are_kept_verbatim() -> None:
    code = "- not a list\n#not a heading\n    indented\n\tTAB\n> not a quote\n"
    fenced = f"Example:\n\n```text\n{code}```\n\n- item\n\n  ~~~\n  {code[:13]}\n  ~~~"
    root = parse(render_markdown(fenced))
    blocks = root.xpath("//pre/code")
    assert [block.text for block in blocks] == [code.replace("\t", "    "), code[:13] + "\n"]
    assert blocks[0].get("class") == "language-text"


def test_indented_code_is_not_rewritten() -> None:
    root = parse(render_markdown("Shell:\n\n    #!/bin/sh\n    - x\n        deeper\n\nEnd"))
    assert root.xpath("//pre/code")[0].text == "#!/bin/sh\n- x\n    deeper\n"


def test_raw_html_passes_through_for_the_sanitiser() -> None:
    fragment = render_markdown(
        '<center>图片源自网络</center>\n\n<script>var items = ["- a", "# b"];</script>\n\n'
        '<iframe src="https://v.example/embed"></iframe>\n\n'
        '<img height="100" width="200" src="https://i.example/a.png">'
    )
    assert '<script>var items = ["- a", "# b"];</script>' in fragment
    assert "<center>图片源自网络</center>" in fragment
    assert '<iframe src="https://v.example/embed"></iframe>' in fragment
    assert '<img height="100" width="200" src="https://i.example/a.png">' in fragment


def test_unclosed_fence_is_text_not_the_rest_of_the_issue() -> None:
    root = parse(render_markdown("```\nloose fence\n\n- item\n\n## Next"))
    assert root.xpath("//li") and root.xpath("//h2") and not root.xpath("//pre")


def test_repeated_calls_do_not_share_state() -> None:
    with_reference = "See [docs][d] and note[^1].\n\n[d]: https://docs.example\n[^1]: A footnote."
    first = render_markdown(with_reference)
    assert render_markdown(with_reference) == first
    assert 'href="https://docs.example"' in first and "footnote" in first
    alone = render_markdown("See [docs][d].")
    assert "href" not in alone and "footnote" not in alone
