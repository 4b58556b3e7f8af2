from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import lxml.html
import markdown
import pytest

from distributor.channels.wechat.article_html import WechatBody, shows_its_url, to_wechat_html

from .corpus import corpus_files, corpus_params, issue_body, require_corpus

PURE_BLACK = re.compile(r"#000(?:000)?\b|\bblack\b|rgba?\(\s*0\s*,\s*0\s*,\s*0\s*[,)]", re.I)


def parse(html: str) -> lxml.html.HtmlElement:
    return lxml.html.fragment_fromstring(html, create_parent="div")


def text_of(element: lxml.html.HtmlElement) -> str:
    return " ".join(element.text_content().split())


def style_of(element: lxml.html.HtmlElement) -> str:
    return element.get("style", "").replace(" ", "")


def check_links_numbered(body: WechatBody, tree: lxml.html.HtmlElement) -> None:
    assert body.references == ("https://a.example/x", "https://b.example/y")
    assert "See the docs[1], the blog[2] and the docs again[1]." in text_of(tree)
    assert [sup.text for sup in tree.iter("sup")] == ["[1]", "[2]", "[1]"]
    spans = [span for span in tree.iter("span") if span.text == "the blog"]
    assert len(spans) == 1 and "color:" in style_of(spans[0])
    listing = tree.xpath("//p")[-1]            # the references: one paragraph, a line each
    assert len(listing.xpath("br")) == 1
    assert text_of(listing) == "[1] https://a.example/x[2] https://b.example/y"
    assert "参考链接" in text_of(tree)


def check_url_as_text_not_numbered(body: WechatBody, tree: lxml.html.HtmlElement) -> None:
    # The reader sees the URL already: no number, and not again in the references.
    assert body.references == ()
    assert text_of(tree) == "Home: http://c.example/" and "color:" in style_of(next(tree.iter("span")))


def check_mailto_and_anchor_plain(body: WechatBody, tree: lxml.html.HtmlElement) -> None:
    assert body.references == ()
    assert text_of(tree) == "Write to me@example.org, see note 1."
    assert "参考链接" not in body.html and "<sup" not in body.html


def check_footnotes_plain(body: WechatBody, tree: lxml.html.HtmlElement) -> None:
    assert body.references == ()
    assert "Claim1" in text_of(tree) and "The source." in text_of(tree)


def check_nested_lists(body: WechatBody, tree: lxml.html.HtmlElement) -> None:
    innermost = tree.xpath("//ul/li/ul/li/ol/li")
    assert [text_of(li) for li in innermost] == ["three"]
    markers = [re.search(r"list-style-type:(\w+)", style_of(lst)).group(1)
               for lst in tree.iter("ul", "ol")]
    assert markers == ["disc", "circle", "decimal"]
    for item in tree.iter("li"):
        assert not (item.text or "").strip(), "list item text must sit in a block"
        assert all(child.tag in ("section", "p", "ul", "ol", "blockquote", "pre") for child in item)
    first = tree.xpath("//li")[0][0]
    assert first.tag == "section" and not style_of(first)      # a section has no margin of its own
    assert text_of(first) == "one bold"


def check_blockquote_in_item(body: WechatBody, tree: lxml.html.HtmlElement) -> None:
    quotes = tree.xpath("//ul/li/blockquote")
    assert len(quotes) == 1 and text_of(quotes[0]) == "quoted"
    assert "border-left:" in style_of(quotes[0]) and "background:" in style_of(quotes[0])
    assert [child.tag for child in tree.xpath("//li")[0]] == ["p", "blockquote", "section"]


def check_images(body: WechatBody, tree: lxml.html.HtmlElement) -> None:
    assert body.image_urls == ("https://img.example/1.png", "https://img.example/2.png")
    first = next(tree.iter("img"))
    assert first.get("src") == "https://img.example/1.png" and first.get("alt") == "chart"
    assert first.get("width") is None and first.get("height") is None
    style = style_of(first)
    for part in ("max-width:100%", "height:auto", "display:block", "margin:"):
        assert part in style


def check_table(body: WechatBody, tree: lxml.html.HtmlElement) -> None:
    header, cell = next(tree.iter("th")), next(tree.iter("td"))
    assert "background:" in style_of(header) and "text-align:left" in style_of(header)
    assert "border:1px" in style_of(cell) and "padding:" in style_of(cell)
    assert cell.get("colspan") == "2"
    assert "border-collapse:collapse" in style_of(next(tree.iter("table")))


def code_lines(pre: lxml.html.HtmlElement) -> str:
    """A WeChat code block's text as the reader sees it: its <br>s as line ends, no-break spaces as spaces."""
    copy = lxml.html.fromstring(lxml.html.tostring(pre))
    for line_break in copy.iter("br"):
        line_break.tail = "\n" + (line_break.tail or "")
    return copy.text_content().replace("\u00a0", " ")


def check_code(body: WechatBody, tree: lxml.html.HtmlElement) -> None:
    pre = next(tree.iter("pre"))
    # Every space protected (the editor collapses runs of them), every line a <br>, a TAB four spaces.
    assert " " not in pre.text_content() and "\n" not in pre.text_content()
    assert code_lines(pre) == "fn main() {\n\n    let  x = 1;    // <tag> & co\n}"
    for part in ("white-space:nowrap", "overflow-x:auto", "monospace", "font-size:13px",
                 "background:"):
        assert part in style_of(pre)
    inline = tree.xpath("//p/code")[0]
    assert "background:" in style_of(inline) and "color:" in style_of(inline)   # monospace: the reader's own


def check_headings(body: WechatBody, tree: lxml.html.HtmlElement) -> None:
    assert "border-bottom:" in style_of(next(tree.iter("h2")))
    assert "border-left:" in style_of(next(tree.iter("h3")))


def check_unknown_tags(body: WechatBody, tree: lxml.html.HtmlElement) -> None:
    centred = tree.xpath("//section[contains(@style, 'text-align:center')]")
    assert [text_of(section) for section in centred] == ["图片源自网络"]
    assert "<center" not in body.html and "<div" not in body.html and "<blink" not in body.html
    assert text_of(tree) == "图片源自网络boxedodd"


def check_behaviour_dropped(body: WechatBody, tree: lxml.html.HtmlElement) -> None:
    assert text_of(tree) == "kept"
    assert "text-align:right" in style_of(next(tree.iter("p")))
    for banned in ("<script", "alert", "<!--", "onclick", "data-", "target=", "rel=", "id="):
        assert banned not in body.html


def check_layout_whitespace(body: WechatBody, tree: lxml.html.HtmlElement) -> None:
    assert "\n" not in body.html, "whitespace between blocks must go"
    assert text_of(next(tree.iter("p"))) == "bold italic", "spaces between inline elements stay"


CASES: list[tuple[str, str, Callable[[WechatBody, lxml.html.HtmlElement], None]]] = [
    ("links-numbered-and-deduplicated",
     '<p>See <a href="https://a.example/x" target="_blank" rel="noopener">the docs</a>, '
     '<a href="https://b.example/y">the blog</a> and '
     '<a href=" https://a.example/x ">the docs again</a>.</p>', check_links_numbered),
    ("url-as-text-link", '<p>Home: <a href="http://c.example/">http://c.example/</a></p>',
     check_url_as_text_not_numbered),
    ("mailto-and-anchor", '<p>Write to <a href="mailto:me@example.org">me@example.org</a>, '
     'see note <a href="#fn1">1</a>.</p>', check_mailto_and_anchor_plain),
    ("footnotes", markdown.markdown("Claim[^1]\n\n[^1]: The source.\n", extensions=["extra"]),
     check_footnotes_plain),
    ("nested-lists", "<ul>\n<li>one <strong>bold</strong>\n<ul>\n<li>two\n<ol>\n<li>three</li>\n"
     "</ol>\n</li>\n</ul>\n</li>\n</ul>", check_nested_lists),
    ("blockquote-in-item", "<ul>\n<li>\n<p>lead</p>\n<blockquote>\n<p>quoted</p>\n</blockquote>\n"
     "after</li>\n</ul>", check_blockquote_in_item),
    ("images", '<p><img height="300px" width="500px" src="https://img.example/1.png" alt="chart" '
     'title="t"></p><img src="https://img.example/2.png"><img src="https://img.example/1.png">',
     check_images),
    ("table", '<table>\n<thead>\n<tr>\n<th style="text-align: left;">h</th>\n</tr>\n</thead>\n'
     '<tbody>\n<tr>\n<td colspan="2">c</td>\n</tr>\n</tbody>\n</table>', check_table),
    ("code", "<pre><code>fn main() {\n\n    let  x = 1;\t// &lt;tag&gt; &amp; co\n}\n</code></pre>"
     "<p>Run <code>make</code>.</p>", check_code),
    ("layout-whitespace", "<ul>\n<li>a</li>\n</ul>\n<p><strong>bold</strong> <em>italic</em></p>\n"
     "<blockquote>\n<p>q</p>\n</blockquote>\n<table>\n<tr>\n<td>c</td>\n</tr>\n</table>\n",
     check_layout_whitespace),
    ("headings", "<h2>Two</h2><h3>Three</h3>", check_headings),
    ("unknown-tags", "<center>图片源自网络</center><div>boxed</div><blink>odd</blink>",
     check_unknown_tags),
    ("behaviour-dropped", '<style>p { color: black }</style><script>alert(1)</script><!-- note -->'
     '<p id="x" class="lead" onclick="go()" data-k="v" style="color:#000;text-align:right">kept</p>',
     check_behaviour_dropped),
]


def assert_wechat_safe(body: WechatBody) -> lxml.html.HtmlElement:
    """Check the rules every output keeps and return its parsed tree."""
    for banned in ("href", "<a ", "<a>", "<style", "class="):
        assert banned not in body.html
    for style in re.findall(r'style="([^"]*)"', body.html):
        assert not PURE_BLACK.search(style), style
    assert body.html.startswith("<section style=")
    root = lxml.html.fragment_fromstring(body.html)
    assert root.tag == "section"
    assert "font-size:15px" in style_of(root) and "line-height:1.75" in style_of(root)
    assert lxml.html.tostring(root, encoding="unicode") == body.html
    return root


@pytest.mark.parametrize(("fragment", "check"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_rule(fragment: str, check: Callable[[WechatBody, lxml.html.HtmlElement], None]) -> None:
    body = to_wechat_html(fragment)
    check(body, assert_wechat_safe(body))


def test_empty_fragment_gives_empty_article() -> None:
    body = to_wechat_html("  \n")
    assert_wechat_safe(body)
    assert (body.references, body.image_urls) == ((), ())
    assert text_of(parse(body.html)) == ""


def render_corpus_file(path: Path) -> str:
    return markdown.markdown(issue_body(path), extensions=["extra", "sane_lists"])


@pytest.mark.parametrize("path", corpus_params(corpus_files()))
def test_corpus_issue(path: Path) -> None:
    fragment = render_corpus_file(path)
    body = to_wechat_html(fragment)
    source = parse(fragment)
    tree = assert_wechat_safe(body)
    hrefs = [(link.get("href") or "").strip() for link in source.iter("a") if not shows_its_url(link, link.get("href"))]
    outside = {href for href in hrefs if href.lower().startswith(("http://", "https://"))}
    assert len(body.references) == len(outside) and set(body.references) == outside
    output_text = text_of(tree)
    for link in source.iter("a"):
        assert text_of(link) in output_text
    assert [code_lines(pre) for pre in tree.iter("pre")] == [
        pre.text_content().replace("\t", "    ").removesuffix("\n") for pre in source.iter("pre")]
    sources = ((img.get("src") or "").strip() for img in source.iter("img"))
    assert body.image_urls == tuple(dict.fromkeys(src for src in sources if src))


def test_corpus_size_and_time() -> None:
    require_corpus()
    files = corpus_files()
    fragments = {path.name: render_corpus_file(path) for path in files}
    started = time.perf_counter()
    sizes = {name: len(to_wechat_html(fragment).html) for name, fragment in fragments.items()}
    elapsed = time.perf_counter() - started
    largest = max(sizes, key=sizes.__getitem__)
    print(f"\n{len(files)} issues converted in {elapsed * 1000:.0f} ms; "
          f"largest output {sizes[largest]} characters ({largest})")
    assert elapsed < 10
    assert all(size > 0 for size in sizes.values())
