"""Fenced code highlighted with inline styles in email and WeChat; plain text keeps the code as written."""
from __future__ import annotations

import lxml.html
import pytest

from distributor.render.highlight import MAX_HIGHLIGHTED_CHARACTERS, highlighted
from distributor.render.renditions import render_issue
from distributor.settings import Settings

CODE = 'def greet(name):\n    return f"hi {name}"   # three spaces before\n\n    print(greet("<b>"))\n'


def write_issue(tmp_path, body: str):
    path = tmp_path / "2024-01-06-code.md"
    path.write_text(f"---\ntitle: Code\n---\n\nBefore.\n\n{body}\n\nAfter.\n", encoding="utf-8")
    return path


def test_a_known_language_is_coloured_with_short_inline_styles_and_the_text_unchanged() -> None:
    coloured = highlighted(CODE, "python")
    assert coloured is not None
    fragment = lxml.html.fragment_fromstring(f"<code>{coloured}</code>")
    assert fragment.text_content() == CODE
    styles = {span.get("style") for span in fragment.iter("span")}
    assert "color:#008000;font-weight:bold" in styles                 # def, return
    assert all(" " not in style for style in styles)
    assert not any(span.text_content().isspace() for span in fragment.iter("span"))   # no span for blanks


@pytest.mark.parametrize(("language", "code"), [
    ("", CODE), ("no-such-language", CODE), ("python", "x = 1\n" * (MAX_HIGHLIGHTED_CHARACTERS // 6 + 1)),
])
def test_an_unknown_language_or_a_huge_block_stays_plain(language: str, code: str) -> None:
    assert highlighted(code, language) is None


def test_email_and_wechat_colour_the_code_and_text_keeps_it(tmp_path) -> None:
    renditions = render_issue(write_issue(tmp_path, f"```python\n{CODE}```"), Settings())
    email = lxml.html.fromstring(renditions["email"].html)
    (code,) = email.xpath("//pre/code")
    assert code.text_content() == CODE and code.xpath(".//span[contains(@style, 'color:')]")
    (pre,) = email.xpath("//pre")
    assert "white-space:pre" in pre.get("style").replace(" ", "")     # long lines scroll, not wrap
    wechat = lxml.html.fromstring(renditions["wechat"].content)
    (block,) = wechat.iter("pre")
    assert block.xpath(".//span[contains(@style, 'color:#008000')]")
    assert len(block.xpath(".//br")) == 3          # between its 4 lines
    assert "    return" not in block.text_content() and "\u00a0\u00a0\u00a0\u00a0return" in block.text_content()
    assert all(line in renditions["text"].text for line in CODE.splitlines() if line)


def test_a_hostile_fence_language_cannot_reach_the_markup(tmp_path) -> None:
    renditions = render_issue(write_issue(tmp_path, '```python" onmouseover="alert(1)\nx = 1\n```'), Settings())
    assert "onmouseover" not in renditions["email"].html and "onmouseover" not in renditions["wechat"].content
