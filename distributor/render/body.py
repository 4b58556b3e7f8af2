"""Render an issue's Markdown once into a clean HTML fragment that every channel starts from.

The rendered HTML is cleaned in three steps: an `iframe` (a video embed) with an http(s) source
becomes a link to it; every site-relative link and image is made absolute against the site's base
URL (a URL that cannot be parsed is dropped); then the allow list of `sanitizer` keeps only the tags,
attributes and URL schemes (http, https, mailto) a newsletter needs. Each removal is a warning that
names the file and, where it can be found in the Markdown, the line. Characters HTML cannot carry
(C0 controls but TAB, LF and CR, U+FFFE, U+FFFF, lone surrogates) are removed before parsing, so a
`javascript:` URL behind a control character is seen, and refused, as one.

`page_url` is the permalink made absolute. A permalink that is then no http(s) URL with a host
(`javascript:alert(1)`, `data:…`, `mailto:…`, `http://[::1`) is not a URL for the issue's page: the
issue keeps it as its key, but `page_url` is None, with a warning, so no link, "view in browser"
line or WeChat source URL ever carries it.
"""
from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import lxml.html
from lxml import etree

from distributor.models import Body, Issue
from distributor.render.highlight import highlighted
from distributor.render.markup import render_markdown
from distributor.render.sanitizer import Removal, browser_url, sanitise, url_scheme
from distributor.render.themes import theme_named
from distributor.settings import SiteSettings

_UNREPRESENTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_WEB_SCHEMES = ("http", "https")
_URL_ATTRIBUTES = {"a": "href", "img": "src"}
_SUMMARY_LIMIT = 200


def render_body(issue: Issue, site: SiteSettings) -> Body:
    """Render and clean the issue body; warnings say what was dropped or changed, and where."""
    site_root = site.base_url.rstrip("/") + "/"
    page_url = _page_url(issue.permalink, site_root) if issue.permalink else None
    warnings = list(issue.warnings)
    if issue.permalink and page_url is None:
        warnings.append(f"{issue.source_path}: the permalink {issue.permalink!r} is not an http(s) URL "
                        "once made absolute; the issue gets no page link")
    markup = _UNREPRESENTABLE.sub("", render_markdown(issue.body_markdown))
    container = lxml.html.fragment_fromstring(markup, create_parent="div")
    removals = _replace_iframes(container) + _absolutise(container, site_root, page_url)
    _highlight_code(container, theme_named(site.theme).code_style)
    html, dropped = sanitise(container)
    warnings += [f"{_where(issue, removal.needle)}: {removal.message}" for removal in removals + dropped]
    summary = issue.description or _first_paragraph(container)
    return Body(html=html, summary=summary, page_url=page_url, warnings=tuple(dict.fromkeys(warnings)))


def _highlight_code(container: lxml.html.HtmlElement, style: str) -> None:
    """Colour each fenced code block that names a language (`<pre><code class="language-x">`, text only),
    before the sanitizer, which checks the spans' styles like any others."""
    for code in container.iter("code"):
        parent = code.getparent()
        language = next((name[len("language-"):] for name in (code.get("class") or "").split()
                         if name.startswith("language-")), "")
        if parent is None or parent.tag != "pre" or not language or len(code):
            continue
        coloured = highlighted(code.text or "", language, style=style)
        if coloured is not None:
            code.text = None
            spans = lxml.html.fragment_fromstring(f"<code>{coloured}</code>")
            code.text = spans.text
            code.extend(list(spans))


def _page_url(permalink: str, site_root: str) -> str | None:
    try:
        url = urljoin(site_root, browser_url(permalink))
    except ValueError:
        return None
    if _UNREPRESENTABLE.search(url) or url_scheme(url) not in _WEB_SCHEMES:
        return None
    return _absolute(url, site_root, None)


def _replace_iframes(container: lxml.html.HtmlElement) -> list[Removal]:
    removals = []
    for frame in list(container.iter("iframe")):
        source = browser_url(frame.get("src", ""))
        if source.startswith("//"):
            source = "https:" + source
        scheme = url_scheme(source)
        if not source or scheme not in (None, *_WEB_SCHEMES):
            what = f"with a {scheme}: source" if source else "without a source"
            removals.append(Removal(f"dropped an embedded frame {what}", "<iframe"))
            frame.drop_tree()
            continue
        paragraph = lxml.html.Element("p")
        link = etree.SubElement(paragraph, "a", href=source)
        link.text = f"▶ {source}"
        paragraph.tail = frame.tail
        frame.getparent().replace(frame, paragraph)
        removals.append(Removal(f"embedded frame replaced by a link to {source}", "<iframe"))
    return removals


def _absolutise(container: lxml.html.HtmlElement, site_root: str, page_url: str | None) -> list[Removal]:
    """Make every link and image URL absolute; drop one that cannot be parsed."""
    removals = []
    for element in container.iter(*_URL_ATTRIBUTES):
        attribute = _URL_ATTRIBUTES[element.tag]
        url = element.get(attribute)
        if url is None:
            continue
        absolute = _absolute(browser_url(url), site_root, page_url)
        if absolute is None:
            del element.attrib[attribute]
            removals.append(Removal(f"dropped <{element.tag} {attribute}={url.strip()!r}>: not a URL", url.strip()))
        else:
            element.set(attribute, absolute)
    return removals


def _absolute(url: str, site_root: str, page_url: str | None) -> str | None:
    """Return `url` made absolute, unchanged when it has a scheme or is an anchor; None when unparsable."""
    if url.startswith("#"):
        return url
    try:
        if url_scheme(url):
            absolute = url
        elif url.startswith("//"):
            absolute = "https:" + url
        elif url.startswith("/"):
            absolute = urljoin(site_root, url.lstrip("/"))
        else:
            absolute = urljoin(page_url or site_root, url)
        parts = urlsplit(absolute)
        parts.port  # noqa: B018 (reading it validates the port)
    except ValueError:       # urllib.parse refuses a bad IPv6 host or port, e.g. `http://[::1`
        return None
    return absolute if parts.hostname or parts.scheme not in _WEB_SCHEMES else None


def _where(issue: Issue, needle: str) -> str:
    """Return `FILE:LINE` of the first Markdown line containing `needle`, else just `FILE`."""
    index = issue.body_markdown.lower().find(needle.lower()) if needle else -1
    if index < 0:
        return str(issue.source_path)
    return f"{issue.source_path}:{issue.body_first_line + issue.body_markdown.count(chr(10), 0, index)}"


def _first_paragraph(container: lxml.html.HtmlElement) -> str:
    for paragraph in container.iter("p"):
        text = " ".join(paragraph.text_content().split())
        if text:
            return text if len(text) <= _SUMMARY_LIMIT else text[: _SUMMARY_LIMIT - 1] + "…"
    return ""
