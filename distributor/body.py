"""Render an issue's Markdown once into a clean HTML fragment that every channel starts from.

Cleaning keeps the raw HTML that is safe in mail and articles (images, line breaks, centred
captions, tables), drops what carries code or plugins (`script`, `style`, `object`, `embed`,
event handler attributes), turns an `iframe` (a video embed) into a link to its source, and
makes every site-relative link and image absolute against the site's base URL.
"""
from __future__ import annotations

import re
from html import escape
from urllib.parse import urljoin

import lxml.html
from lxml import etree

from .markup import render_markdown
from .models import Body, Issue
from .settings import SiteSettings

_DROPPED = ("script", "style", "object", "embed", "noscript")
_URL_ATTRIBUTES = {"a": "href", "img": "src", "source": "src"}
_SUMMARY_LIMIT = 200


def render_body(issue: Issue, site: SiteSettings) -> Body:
    """Render and clean the issue body; warnings say what was dropped or changed."""
    page_url = urljoin(site.base_url.rstrip("/") + "/", issue.permalink) if issue.permalink else None
    container = lxml.html.fragment_fromstring(render_markdown(issue.body_markdown), create_parent="div")
    warnings = list(issue.warnings)
    warnings += _drop_unsafe(container)
    warnings += _replace_iframes(container)
    _absolutise(container, site.base_url, page_url)
    html = escape(container.text or "") + "".join(_serialise(child) for child in container)
    summary = issue.description or _first_paragraph(container)
    return Body(html=html, summary=summary, page_url=page_url, warnings=tuple(warnings))


def _drop_unsafe(container: lxml.html.HtmlElement) -> list[str]:
    warnings = []
    for element in list(container.iter(*_DROPPED)):
        warnings.append(f"dropped <{element.tag}> from the body")
        element.drop_tree()
    for element in container.iter():
        if not isinstance(element.tag, str):
            continue
        for name in [name for name in element.attrib if name.lower().startswith("on")]:
            del element.attrib[name]
        for name in ("href", "src"):
            if element.get(name, "").strip().lower().startswith("javascript:"):
                del element.attrib[name]
    return warnings


def _replace_iframes(container: lxml.html.HtmlElement) -> list[str]:
    warnings = []
    for frame in list(container.iter("iframe")):
        source = frame.get("src", "").strip()
        if source.startswith("//"):
            source = "https:" + source
        if not source:
            warnings.append("dropped an embedded frame without a source")
            frame.drop_tree()
            continue
        paragraph = lxml.html.Element("p")
        link = etree.SubElement(paragraph, "a", href=source)
        link.text = f"▶ {source}"
        paragraph.tail = frame.tail
        frame.getparent().replace(frame, paragraph)
        warnings.append(f"embedded frame replaced by a link to {source}")
    return warnings


def _absolutise(container: lxml.html.HtmlElement, base_url: str, page_url: str | None) -> None:
    site_root = base_url.rstrip("/") + "/"
    for element in container.iter(*_URL_ATTRIBUTES):
        attribute = _URL_ATTRIBUTES[element.tag]
        url = element.get(attribute)
        if url is None or url.startswith(("#", "mailto:", "data:")) or re.match(r"^[a-z][a-z0-9+.-]*:", url, re.I):
            continue
        if url.startswith("//"):
            element.set(attribute, "https:" + url)
        elif url.startswith("/"):
            element.set(attribute, urljoin(site_root, url.lstrip("/")))
        else:
            element.set(attribute, urljoin(page_url or site_root, url))


def _first_paragraph(container: lxml.html.HtmlElement) -> str:
    for paragraph in container.iter("p"):
        text = " ".join(paragraph.text_content().split())
        if text:
            return text if len(text) <= _SUMMARY_LIMIT else text[: _SUMMARY_LIMIT - 1] + "…"
    return ""


def _serialise(element: lxml.html.HtmlElement) -> str:
    return lxml.html.tostring(element, encoding="unicode")
