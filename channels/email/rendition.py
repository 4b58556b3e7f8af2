"""The email rendition: a complete HTML document with every style inlined, plus its text part."""
from __future__ import annotations

import base64
import logging
from dataclasses import dataclass

import lxml.html
from premailer import Premailer

from distributor.channels.text.rendition import TextRendition
from distributor.models import NAME_PLACEHOLDER, UNSUBSCRIBE_PLACEHOLDER, Body, Issue
from distributor.render.templating import common_context, render_template
from distributor.render.themes import publisher_css, with_publisher_css
from distributor.settings import Settings

# Gmail shows only the first 102 KB of a message's HTML and hides the rest behind a link.
GMAIL_CLIP_BYTES = 102 * 1024


@dataclass(frozen=True)
class EmailRendition:
    """The email as sent to everyone: per-recipient values left as placeholders."""

    subject: str
    html: str                     # complete document, styles inlined, with the per-recipient placeholders
    text: str                     # the text/plain alternative, with the same placeholders
    preheader: str
    links: tuple[str, ...]
    images: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def render_email(issue: Issue, body: Body, text: TextRendition, settings: Settings) -> EmailRendition:
    """Render the email for `issue` once; per-recipient values stay as placeholders."""
    context = common_context(issue, settings, body.page_url)
    body_html = with_publisher_css(body.html, publisher_css(settings.site.theme_css))
    document = render_template(
        settings, "email/issue.html", **context, body_html=body_html, preheader=body.summary,
        unsubscribe_url=UNSUBSCRIBE_PLACEHOLDER, recipient_name=NAME_PLACEHOLDER)
    html = inline_styles(document)
    warnings = list(body.warnings) + list(text.warnings)
    encoded_size = len(base64.encodebytes(html.encode("utf-8")))
    if encoded_size > GMAIL_CLIP_BYTES:
        warnings.append(f"email HTML is {encoded_size // 1024} KB as sent; Gmail clips messages over 102 KB")
    tree = lxml.html.fromstring(html)
    links = tuple(dict.fromkeys(href for href in tree.xpath("//a/@href") if href != UNSUBSCRIBE_PLACEHOLDER))
    images = tuple(dict.fromkeys(tree.xpath("//img/@src")))
    return EmailRendition(subject=issue.title, html=html, text=text.text, preheader=body.summary,
                          links=links, images=images, warnings=tuple(dict.fromkeys(warnings)))


def inline_styles(document: str) -> str:
    """Move every CSS rule onto the elements it styles; only `@media` rules stay in `<head>`."""
    premailer = Premailer(
        document,
        base_url=None,              # URLs are absolute already; a base would rewrite the placeholders
        allow_network=False,
        keep_style_tags=False,
        strip_important=False,      # the @media overrides need !important to beat inline styles
        remove_classes=False,       # the @media rules select by class
        cssutils_logging_level=logging.CRITICAL,
        disable_validation=True,
    )
    return premailer.transform(pretty_print=False)
