"""Hostile HTML in an issue never reaches a subscriber: each case is a real issue file rendered through the
real pipeline, and every element and attribute of the email and WeChat HTML is walked, not grepped."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import lxml.html
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from distributor.render.renditions import render_issue
from distributor.settings import Settings

SETTINGS = Settings()
BAD_SCHEMES = ("javascript:", "vbscript:", "data:")
# Tags that run code, load a document or a plugin, submit, redirect or restyle the whole message.
FORBIDDEN_TAGS = {"script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "param",
                  "form", "input", "button", "select", "option", "textarea", "isindex", "base", "meta",
                  "link", "svg", "math", "noscript", "template", "video", "audio", "source", "track",
                  "marquee", "portal", "animate", "set", "xml", "title"}
URL_ATTRIBUTES = {"href", "src", "srcset", "poster", "action", "formaction", "data", "background", "cite",
                  "lowsrc", "dynsrc", "ping", "longdesc", "codebase", "classid", "xlink:href", "content"}
CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]+")

HOSTILE = {
    "svg-onload": '<svg onload="alert(1)"><circle r="4"/></svg>',
    "form-action": '<form action="javascript:alert(1)"><input type="submit" value="go"></form>',
    "button-formaction": '<button formaction="javascript:alert(1)">go</button>',
    "input-image": '<input type="image" src="javascript:alert(1)" formaction="javascript:alert(2)">',
    "base": '<base href="javascript:alert(1)//">\n\n[relative](page.html)',
    "meta-refresh": '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    "link": '<link rel="stylesheet" href="javascript:alert(1)">',
    "vbscript-href": '<a href="vbscript:msgbox(1)">x</a>',
    "data-href": '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    "data-img": '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
    "srcset": '<img src="https://example.org/a.png" srcset="javascript:alert(1) 1x, data:text/html,x 2x">',
    "video-poster": '<video poster="javascript:alert(1)"><source src="javascript:alert(2)"></video>',
    "svg-xlink-href": '<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>',
    "math-xlink-href": '<math><maction actiontype="statusline" xlink:href="javascript:alert(1)">x</maction></math>',
    "control-char-x01": "[x](\x01javascript:alert(1))",
    "control-char-nul": "[x](\x00javascript:alert(1))",
    "blockquote-cite": '<blockquote cite="javascript:alert(1)">quoted</blockquote>',
    "conditional-comment": "<!--[if mso]><img src=x onerror=alert(1)><![endif]-->\n\ntext",
    "table-background": '<table background="javascript:alert(1)"><tr><td>x</td></tr></table>',
    "img-lowsrc-dynsrc": '<img src="https://example.org/a.png" lowsrc="javascript:alert(1)" '
                         'dynsrc="javascript:alert(2)">',
    "audio-src": '<audio src="javascript:alert(1)" autoplay></audio>',
    "template-script": '<template><img src="https://example.org/a.png" onerror="alert(1)"></template>',
    "textarea-select": '<textarea name="t">x</textarea><select name="s"><option>o</option></select>',
    "marquee": '<marquee>moving</marquee>',
    "math-href": '<math href="javascript:alert(1)"><mi>x</mi></math>',
    "frameset": '<frameset><frame src="javascript:alert(1)"></frameset>',
}
# Cases the deny-list cleaner already refused; they stay refused.
ALSO_REFUSED = {
    "map-area": '<map name="m"><area shape="rect" coords="0,0,9,9" href="javascript:alert(1)"></map>',
    "img-onerror": '<img src="https://example.org/a.png" onerror="alert(1)">',
    "div-onclick": '<div onclick="alert(1)" onmouseover="alert(2)">text</div>',
    "markdown-javascript-link": "[x](javascript:alert(1))",
    "markdown-javascript-image": "![x](javascript:alert(1))",
    "entity-encoded-scheme": '<a href="&#x6A;avascript&colon;alert(1)">x</a>',
    "tab-in-scheme": '<a href="java&#x09;script:alert(1)">x</a>',
    "case-and-space": '<a href="  JaVaScRiPt:alert(1)">x</a>',
    "iframe-javascript": '<iframe src="javascript:alert(1)"></iframe>',
    "object-embed": '<object data="javascript:alert(1)"></object><embed src="javascript:alert(2)">',
    "style-url": '<p style="background:url(javascript:alert(1))">styled</p>',
    "attr-list-handler": '[x](https://example.org/){: onclick="alert(1)" }',
    "details-ontoggle": "<details open ontoggle=alert(1)><summary>s</summary>x</details>",
    "noscript-mxss": '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
}
PERMALINKS = {
    "permalink-javascript": "javascript:alert(1)",
    "permalink-vbscript": "vbscript:msgbox(1)",
    "permalink-data": "'data:text/html,<script>alert(1)</script>'",
}


def write_issue(tmp_path, body: str, permalink: str | None = None):
    header = f"title: Hostile\npermalink: {permalink}\n" if permalink else "title: Hostile\n"
    path = tmp_path / "2024-01-06-hostile.md"
    path.write_bytes(f"---\n{header}---\n\nBefore.\n\n{body}\n\nAfter.\n".encode("utf-8"))
    return path


def executable_parts(root: etree._Element, allowed_in_head: frozenset[str] = frozenset()) -> list[str]:
    """Return every element, attribute or comment of `root` that could run code or leave the message."""
    found = []
    for node in root.iter():
        if not isinstance(node.tag, str):
            if isinstance(node, etree._Comment):
                found.append(f"comment {node.text!r}")
            continue
        tag = node.tag.lower()
        in_head = any(ancestor.tag == "head" for ancestor in node.iterancestors())
        if tag in FORBIDDEN_TAGS and not (in_head and tag in allowed_in_head):
            found.append(f"<{tag}>")
        for name, value in node.attrib.items():
            name = name.lower()
            squeezed = CONTROL_OR_SPACE.sub("", value).lower()
            if name.startswith("on") or name == "http-equiv":
                found.append(f"<{tag} {name}>")
            if name in URL_ATTRIBUTES | {"style"} and any(scheme in squeezed for scheme in BAD_SCHEMES[:2]):
                found.append(f"<{tag} {name}={value!r}>")
            if name in URL_ATTRIBUTES and "data:" in squeezed:
                found.append(f"<{tag} {name}={value!r}>")
            if name == "style" and ("url(" in squeezed or "expression(" in squeezed):
                found.append(f"<{tag} style={value!r}>")
    return found


def hostile_urls(urls) -> list[str]:
    return [url for url in urls if CONTROL_OR_SPACE.sub("", url).lower().startswith(BAD_SCHEMES)]


def check_nothing_executable(renditions) -> None:
    email_tree = lxml.html.fromstring(renditions["email"].html)
    assert executable_parts(email_tree, frozenset({"meta", "style", "title"})) == []
    wechat_tree = lxml.html.fragment_fromstring(renditions["wechat"].content, create_parent="section")
    assert executable_parts(wechat_tree) == []
    assert hostile_urls(renditions["email"].links + renditions["email"].images) == []
    assert hostile_urls(renditions["text"].links + renditions["wechat"].references) == []
    assert hostile_urls([renditions.body.page_url or "", renditions["wechat"].content_source_url]) == []


@pytest.mark.parametrize("body", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_body_leaves_nothing_executable_in_any_channel(tmp_path, body):
    check_nothing_executable(render_issue(write_issue(tmp_path, body), SETTINGS))


def test_every_hostile_case_in_one_issue_leaves_nothing_executable(tmp_path):
    body = "\n\n".join([*HOSTILE.values(), *ALSO_REFUSED.values()])
    check_nothing_executable(render_issue(write_issue(tmp_path, body, PERMALINKS["permalink-javascript"]), SETTINGS))


@pytest.mark.parametrize("permalink", list(PERMALINKS.values()), ids=list(PERMALINKS))
def test_permalink_of_another_scheme_is_no_link_anywhere(tmp_path, permalink):
    renditions = render_issue(write_issue(tmp_path, "[a link](https://example.org/x)", permalink), SETTINGS)
    check_nothing_executable(renditions)
    assert renditions.body.page_url is None and renditions["wechat"].content_source_url == ""
    assert any("permalink" in warning for warning in renditions.body.warnings)


@pytest.mark.parametrize("permalink, body", [
    ("http://[::1", "[relative](page.html)"),
    ("//[::1", "![relative](image.png)"),
    ("/weekly/", "[broken host](//[::1) and [bad port](https://example.org:99999/) and [ok](/ok/)"),
    ("/weekly/", "[control](/fourth\x01) and [inside](https://example.org/a\x02b) and [spaces](  /spaced/  )"),
], ids=["permalink-bad-ipv6", "permalink-scheme-relative-bad-ipv6", "links-bad-host", "links-controls"])
def test_malformed_urls_render_without_error(tmp_path, permalink, body):
    renditions = render_issue(write_issue(tmp_path, body, permalink), SETTINGS)
    check_nothing_executable(renditions)
    tree = lxml.html.fromstring(renditions["email"].html)
    for url in tree.xpath("//div[contains(@class, 'content')]//a/@href | //img/@src"):
        parts = urlsplit(url)
        assert parts.scheme in ("https", "http") and parts.hostname and parts.port in (None, 443, 80), url


def test_warnings_name_what_was_removed(tmp_path):
    body = ('<script>alert(1)</script>\n\n<form action="https://example.org/"><p>kept text</p></form>\n\n'
            '<a href="javascript:alert(1)" onclick="alert(2)">link text</a>')
    renditions = render_issue(write_issue(tmp_path, body), SETTINGS)
    warnings = "\n".join(renditions.body.warnings)
    assert "<script>" in warnings and "<form>" in warnings
    assert "onclick" in warnings and "javascript:" in warnings
    assert "kept text" in renditions["text"].text and "link text" in renditions["text"].text


NEWSLETTER = """\
| name | value |
| :--- | ---: |
| <span onclick="alert(1)">cell</span> | 42<svg onload="alert(1)"></svg> |

![a cover](/images/cover.png "The cover"){: onerror="alert(1)" srcset="javascript:alert(1) 2x" }

```python
print("<b>not markup</b>")
```

- [https link](https://example.org/a) <a href="vbscript:msgbox(1)">bad</a>
    - [http link](http://example.org/b)
        1. [mail me](mailto:editor@example.org)

> quoted <em>em</em> <strong>strong</strong> <del>del</del> H<sub>2</sub>O x<sup>2</sup>
>
> > nested quote

<center><small>A centred caption</small></center>

Footnote[^1].

[^1]: The note.
"""


def test_newsletter_content_next_to_hostile_content_survives(tmp_path):
    renditions = render_issue(write_issue(tmp_path, NEWSLETTER), SETTINGS)
    check_nothing_executable(renditions)
    content = lxml.html.fromstring(renditions["email"].html).xpath("//div[contains(@class, 'content')]")[0]
    cells = [" ".join(cell.text_content().split()) for cell in content.iter("td", "th")]
    assert cells == ["name", "value", "cell", "42"]
    assert "text-align:right" in content.xpath(".//td")[1].get("style").replace(" ", "")
    image = content.xpath(".//img")[0]
    assert (image.get("src"), image.get("alt"), image.get("title")) == (
        "https://example.org/images/cover.png", "a cover", "The cover")
    code = content.xpath(".//pre/code")[0]
    assert code.get("class") == "language-python" and code.text_content() == 'print("<b>not markup</b>")\n'
    # highlighted: the colours are inline styles the sanitizer let through, and nothing more
    assert [span.get("style") for span in code.iter("span")] == ["color:#008000", "color:#BA2121"]
    links = [(a.get("href"), a.text_content()) for a in content.iter("a") if a.get("href")]
    assert links[:3] == [("https://example.org/a", "https link"), ("http://example.org/b", "http link"),
                         ("mailto:editor@example.org", "mail me")]
    assert content.xpath(".//ul/li/ul/li/ol/li/a")
    assert content.xpath(".//blockquote/blockquote")
    assert [len(content.xpath(f".//blockquote//{tag}")) for tag in ("em", "strong", "del", "sub", "sup")] == [
        1, 1, 1, 1, 1]
    assert content.xpath(".//center/small")[0].text == "A centred caption"
    assert content.xpath(".//sup/a[@href='#fn:1']") and content.xpath(".//li[@id='fn:1']")
    text = renditions["text"].text
    assert "[image: a cover] [" in text and "1. mail me <editor@example.org>" in text


# Pieces of hostile markup, combined at random: tags, attributes and URLs in the forms browsers accept.
TAG_NAMES = sorted(FORBIDDEN_TAGS - {"xml"}) + ["a", "img", "p", "div", "table", "td", "span", "blockquote"]
ATTRIBUTE_NAMES = ["href", "src", "srcset", "poster", "action", "formaction", "xlink:href", "background",
                   "onload", "onerror", "OnClick", "style", "http-equiv", "data", "cite", "title"]
URLS = ["javascript:alert(1)", "JaVaScRiPt:alert(1)", " \x01javascript:alert(1)", "java&#x09;script:alert(1)",
        "&#106;avascript:alert(1)", "vbscript:msgbox(1)", "data:text/html,<script>alert(1)</script>",
        "background:url(javascript:alert(1))", "https://example.org/ok", "/relative", "//[::1"]


@st.composite
def hostile_markup(draw) -> str:
    pieces = []
    for _ in range(draw(st.integers(1, 4))):
        tag = draw(st.sampled_from(TAG_NAMES))
        attributes = " ".join(f'{draw(st.sampled_from(ATTRIBUTE_NAMES))}="{draw(st.sampled_from(URLS))}"'
                              for _ in range(draw(st.integers(0, 3))))
        inner = draw(st.sampled_from(["", "text", "[x](javascript:alert(1))", "<b>bold</b>"]))
        closing = draw(st.sampled_from([f"</{tag}>", ""]))
        pieces.append(f"<{tag} {attributes}>{inner}{closing}")
    return draw(st.sampled_from(["", "\n\n"])).join(pieces)


@settings(max_examples=60, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(markup=hostile_markup())
def test_random_hostile_markup_leaves_nothing_executable(tmp_path, markup):
    check_nothing_executable(render_issue(write_issue(tmp_path, markup), SETTINGS))
