"""Keep only the HTML a newsletter needs: an allow list of tags, attributes and URL schemes.

nh3 (the binding of Rust's ammonia) does the cleaning, so what reaches a subscriber is what its
HTML5 parser kept: the tags of text, lists, quotes, code, tables and images, their presentational
attributes, `http`, `https` and `mailto` URLs (and `#` anchors) in `href` and `src`, and in `style`
only properties that cannot load anything. Everything else goes: code-carrying elements (`script`,
`style`, `svg`, `math`, `template`, plugins, frames, media, form fields) with their content, other
unknown tags keeping their text; event handlers, `srcset`, `poster`, `xlink:href` and the like; HTML
comments (Outlook runs conditional ones).

nh3 does not say what it removed, so a walk of the lxml tree beforehand notes it for the warnings.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape

import lxml.html
import nh3

URL_SCHEMES = frozenset({"http", "https", "mailto"})
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_TAGS = _HEADINGS | {
    "p", "div", "center", "section", "br", "hr", "blockquote", "pre", "code", "kbd", "samp", "tt", "var",
    "ul", "ol", "li", "dl", "dt", "dd", "figure", "figcaption", "details", "summary",
    "table", "caption", "colgroup", "col", "thead", "tbody", "tfoot", "tr", "th", "td",
    "a", "img", "span", "em", "i", "strong", "b", "u", "s", "strike", "del", "ins", "mark", "small", "big",
    "sub", "sup", "abbr", "cite", "q",
}
# Removed with everything inside: their content is code, a plugin's fallback, or form data.
_DROPPED_WITH_CONTENT = {
    "script", "style", "template", "noscript", "svg", "math", "iframe", "frame", "frameset", "noframes",
    "object", "embed", "applet", "noembed", "canvas", "audio", "video", "textarea", "select", "title",
    "xmp", "plaintext",
}
_CELL = {"colspan", "rowspan", "valign", "width", "height"}
_ATTRIBUTES = {
    "*": {"id", "title", "lang", "dir", "align", "style"},   # id: the footnotes' anchors
    "a": {"href", "name"},
    "img": {"src", "alt", "width", "height"},
    "ol": {"start", "type", "reversed"},
    "li": {"value"},
    "td": _CELL, "th": _CELL | {"scope"},
    "table": {"width", "border", "cellpadding", "cellspacing"},
    "col": {"span", "width"}, "colgroup": {"span", "width"},
    "code": {"class"},        # narrowed to the fence's one `language-*` class by the walk below
    "details": {"open"},
}
_CLASSES = {"div": {"footnote"}, "a": {"footnote-ref", "footnote-backref"}}
_STYLE_PROPERTIES = {
    "text-align", "vertical-align", "width", "max-width", "height", "color", "background-color",
    "font-weight", "font-style", "font-size", "text-decoration", "white-space", "border", "border-collapse",
    "margin", "padding",
}
_CLEANER = nh3.Cleaner(
    tags=_TAGS, clean_content_tags=_DROPPED_WITH_CONTENT, attributes=_ATTRIBUTES, allowed_classes=_CLASSES,
    url_schemes=set(URL_SCHEMES), filter_style_properties=_STYLE_PROPERTIES, link_rel=None,
    strip_comments=True,
)
_URL_ATTRIBUTES = ("href", "src")
# Browsers strip leading and trailing C0 controls and spaces from a URL and drop TAB, LF and CR in it.
_URL_EDGES = "".join(map(chr, range(0x21)))
_URL_NOISE = re.compile(r"[\t\n\r]")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):", re.I)
_STYLE_LOADS = re.compile(r"url\s*\(|expression\s*\(|@import|image-set\s*\(", re.I)
_STYLE_OBFUSCATION = re.compile(r"\\|/\*.*?\*/", re.S)
_LANGUAGE = re.compile(r"^language-[\w+#.-]+$")


@dataclass(frozen=True)
class Removal:
    """Something the allow list removes: what to tell the publisher, and text to find it by in the source."""

    message: str
    needle: str


def browser_url(url: str) -> str:
    """Return `url` as a browser reads it: outer controls and spaces stripped, TAB/LF/CR dropped."""
    return _URL_NOISE.sub("", url.strip(_URL_EDGES))


def url_scheme(url: str) -> str | None:
    """Return the lower-case scheme a browser would see in `url`, or None for a relative URL."""
    match = _SCHEME.match(browser_url(url))
    return match.group(1).lower() if match else None


def sanitise(container: lxml.html.HtmlElement) -> tuple[str, list[Removal]]:
    """Return the children of `container` as allow-listed HTML and what was removed.

    Elements removed with their content are also removed from `container`, so what is read from
    it afterwards (the summary) is what subscribers get.
    """
    removals: list[Removal] = []
    for element in list(container.iter(*_DROPPED_WITH_CONTENT)):
        if container in element.iterancestors():     # not inside one dropped already
            removals.append(Removal(f"dropped <{element.tag}> from the body", f"<{element.tag}"))
            element.drop_tree()
    for element in container.iter():
        if not isinstance(element.tag, str):
            continue        # comments and processing instructions: nh3 strips them
        tag = element.tag.lower()
        if tag not in _TAGS:
            removals.append(Removal(f"dropped the <{tag}> tag from the body, keeping its text", f"<{tag}"))
        else:
            removals += _attribute_removals(element, tag)
    html = escape(container.text or "") + "".join(lxml.html.tostring(child, encoding="unicode")
                                                  for child in container)
    return _CLEANER.clean(html), removals


def _attribute_removals(element: lxml.html.HtmlElement, tag: str) -> list[Removal]:
    removals = []
    for name, value in element.attrib.items():
        lowered = name.lower()
        if lowered.startswith("on"):
            removals.append(Removal(f"dropped the event handler {lowered} of <{tag}> from the body", name))
        elif lowered in _URL_ATTRIBUTES and (scheme := url_scheme(value)) and scheme not in URL_SCHEMES:
            removals.append(Removal(f"dropped a {scheme}: URL from <{tag} {lowered}>", value.strip()[:40]))
        elif lowered == "style" and _STYLE_LOADS.search(_STYLE_OBFUSCATION.sub("", value)):
            removals.append(Removal(f"dropped a style of <{tag}> that loads a URL or runs code", value[:40]))
            del element.attrib[name]
    if tag == "code" and "class" in element.attrib:
        languages = [word for word in element.get("class", "").split() if _LANGUAGE.match(word)]
        if languages:
            element.set("class", languages[0])
        else:
            del element.attrib["class"]
    return removals
