"""Rewrite rendered issue HTML into article HTML that the WeChat Official Account editor keeps.

WeChat drops `<style>`, classes and outside links, and mangles lists whose item text is not wrapped
in a block, so every element carries its look in an inline `style`, outside links become numbered
plain-text references listed at the end, and each list item's loose text sits in a `<section>`.
"""
from __future__ import annotations

import functools
import html
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import lxml.html

from distributor.render.themes import DEFAULT_THEME, Theme, with_publisher_css

MONO = "Menlo,Monaco,Consolas,'Courier New',monospace"


@functools.lru_cache(maxsize=8)
def tag_styles(theme: Theme) -> dict[str, str]:
    """The inline style of each tag in `theme`: what the editor keeps of the look, the reader's own
    defaults (bold headings, monospace code) left out."""
    minor = f"margin:1em 0 0.6em;font-size:16px;line-height:1.4;color:{theme.heading}"
    quote_background = f";background:{theme.quote_background}" if theme.quote_background else ""
    block_border = f";border:1px solid {theme.block_border}" if theme.block_border else ""
    return {
        "base": (f"font-size:15px;line-height:1.75;color:{theme.text};letter-spacing:0.5px;"
                 "overflow-wrap:break-word;word-break:break-word;text-align:left"),
        "h1": (f"margin:1.2em 0 0.8em;padding-bottom:6px;border-bottom:2px solid {theme.accent};"
               f"font-size:22px;line-height:1.4;color:{theme.heading}"),
        "h2": (f"margin:1.2em 0 0.8em;padding-bottom:4px;border-bottom:1px solid {theme.accent};"
               f"font-size:19px;line-height:1.4;color:{theme.heading}"),
        "h3": (f"margin:1.1em 0 0.7em;padding-left:10px;border-left:4px solid {theme.accent};"
               f"font-size:17px;line-height:1.4;color:{theme.heading}"),
        "h4": minor, "h5": minor, "h6": minor,
        "p": "margin:0 0 1em",
        "blockquote": (f"margin:1em 0;padding:8px 14px;border-left:4px solid {theme.quote_border}"
                       f"{quote_background};color:{theme.quote_text}"),
        # Lines are <br>s and spaces no-break spaces (`_protect_code`): nowrap keeps long lines whole,
        # and the block scrolls sideways on a phone.
        "pre": (f"margin:1em 0;padding:12px 14px;background:{theme.block_background}{block_border};"
                f"border-radius:6px;color:#24292f;font-family:{MONO};font-size:13px;line-height:1.6;"
                "white-space:nowrap;overflow-x:auto;letter-spacing:0"),
        "code": f"padding:1px 4px;background:{theme.code_background};color:{theme.code_text};font-size:13px",
        "table": "border-collapse:collapse;width:100%;margin:0;font-size:14px;line-height:1.6",
        "th": "border:1px solid #ddd;padding:4px 8px;background:#eef1f4",
        "td": "border:1px solid #ddd;padding:4px 8px",
        "img": "max-width:100%;height:auto;display:block;margin:12px auto",
        "hr": "margin:1.5em 0;height:0;border:0;border-top:1px solid #dddddd",
        "a": f"color:{theme.link}",
    }


LIST_STYLE = "margin:0.5em 0 1em;padding-left:1.8em"
NESTED_LIST_STYLE = "margin:0.2em 0;padding-left:1.5em"
BULLETS = ("disc", "circle", "square")
PRE_CODE_STYLE = ("padding:0;margin:0;background:none;color:inherit;font-family:inherit;"
                  "font-size:inherit;white-space:inherit")
LI_PARAGRAPH_STYLE = "margin:0 0 0.5em"
QUOTE_PARAGRAPH_STYLE = "margin:0.3em 0"
TABLE_FRAME_STYLE = "margin:1em 0;overflow-x:auto"
REFERENCES_STYLE = "margin-top:2em;font-size:13px;line-height:1.6;color:#888888;word-break:break-all"
REFERENCE_HEADING = "参考链接"

# Tags with behaviour or media the article cannot carry: removed with their content.
DROPPED = {"script", "style", "template", "iframe", "object", "embed", "applet", "form", "input",
           "button", "select", "textarea", "link", "meta", "base", "title", "svg", "canvas",
           "audio", "video", "source", "track", "map", "area", "frame", "frameset", "noembed"}
RENAMED = {  # tag -> (tag the editor keeps, style it needs for the same look)
    "center": ("section", "text-align:center"), "div": ("section", ""),
    "article": ("section", ""), "aside": ("section", ""), "header": ("section", ""),
    "footer": ("section", ""), "main": ("section", ""), "nav": ("section", ""),
    "figure": ("section", ""), "details": ("section", ""), "dl": ("section", ""),
    "address": ("section", ""), "summary": ("section", "font-weight:bold"),
    "figcaption": ("section", "text-align:center;font-size:13px;color:#888888"),
    "dt": ("section", "margin:0.6em 0 0.2em;font-weight:bold"), "dd": ("section", "margin:0 0 0.6em 2em"),
    "b": ("strong", ""), "i": ("em", ""), "strike": ("s", ""), "ins": ("u", ""),
    "small": ("span", "font-size:13px"), "big": ("span", "font-size:18px"),
    "mark": ("span", "background:#fff5b1"), "kbd": ("code", ""), "samp": ("code", ""),
    "tt": ("code", ""), "var": ("em", ""),
}
KEPT = {"section", "p", "span", "strong", "em", "u", "s", "del", "sub", "sup", "br", "hr",
        "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre", "code", "a",
        "table", "caption", "colgroup", "col", "thead", "tbody", "tfoot", "tr", "th", "td", "img"}
BLOCKS = {"section", "p", "ul", "ol", "blockquote", "pre", "table", "hr",
          "h1", "h2", "h3", "h4", "h5", "h6"}
TEXTLESS = {"ul", "ol", "table", "thead", "tbody", "tfoot", "tr", "colgroup"}
KEPT_ATTRIBUTES = {"a": {"href"}, "img": {"src", "alt"}, "ol": {"start"},
                   "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}}
_CITATION = re.compile(r"<sup>\[(\d{1,6})\]</sup>")
TEXT_ALIGN = re.compile(r"text-align\s*:\s*(left|right|center|justify)\b", re.I)


@dataclass(frozen=True)
class WechatBody:
    """A WeChat article body: its HTML, the outside links it cites, and the images it shows."""

    html: str                        # the article content for draft/add's `content`
    references: tuple[str, ...]      # distinct outside link URLs, in order; [1] is references[0]
    image_urls: tuple[str, ...]      # every <img src> in the content, in order, deduplicated
    blocks: tuple[str, ...] = ()     # the body's top-level blocks, serialised: where it may be split


def to_wechat_html(fragment: str, theme: Theme = DEFAULT_THEME, css: str = "") -> WechatBody:
    """Rewrite an HTML fragment (an issue body rendered from Markdown and cleaned; URLs already absolute)
    into HTML that the WeChat article editor keeps, in `theme`, with the publisher's `css` inlined over it."""
    root = (lxml.html.fragment_fromstring(fragment, create_parent="section") if fragment.strip()
            else lxml.html.Element("section"))
    _drop_unwanted(root)
    for element in list(root.iter()):
        _clean_attributes(element)
        _rename(element)
    if css:
        root = lxml.html.fragment_fromstring(with_publisher_css(lxml.html.tostring(root, encoding="unicode"), css))
    styles = tag_styles(theme)
    for element in root.iter():
        _apply_style(element, styles)
    references = _replace_links(root)
    for element in list(root.iter()):
        _shape_block(element)
    for block in root.iter("pre"):
        _protect_code(block)
    for element in root.iter():
        if element.get("style"):
            element.set("style", shortest_style(element.get("style")))
    image_urls = tuple(dict.fromkeys(img.get("src") for img in root.iter("img")))
    lead = html.escape(root.text or "", quote=False)
    blocks = tuple(lxml.html.tostring(child, encoding="unicode") for child in root)
    blocks = ((lead + blocks[0],) + blocks[1:]) if blocks and lead.strip() else blocks
    numbered = tuple(enumerate(references, start=1))
    return WechatBody(compose(blocks, numbered, theme), references, image_urls, blocks)


def compose(blocks: Sequence[str], references: Sequence[tuple[int, str]], theme: Theme) -> str:
    """An article body: `blocks` in the root section with the theme's base style, then the list of the
    `references` (number, URL) they cite."""
    base = shortest_style(tag_styles(theme)["base"])
    return f'<section style="{base}">{"".join(blocks)}{references_listing(references, theme)}</section>'


def references_listing(references: Sequence[tuple[int, str]], theme: Theme) -> str:
    """The list of numbered outside links at an article's end (one paragraph, a line per reference: the
    list is most of a link-heavy issue's markup); "" when there are none."""
    if not references:
        return ""
    listing = _new("section", shortest_style(REFERENCES_STYLE))
    listing.append(_new("h3", shortest_style(tag_styles(theme)["h3"]), REFERENCE_HEADING))
    lines = _new("p", "margin:0")
    for position, (number, url) in enumerate(references):
        if position:
            lines.append(_line_break(""))
        _append_inline(lines, f"[{number}] {url}")
    listing.append(lines)
    return lxml.html.tostring(listing, encoding="unicode")


def parts_listing(titles: Sequence[str], heading: str) -> str:
    """The list of a split issue's articles, at the top of the first."""
    listing = _new("section", "margin:0 0 1.5em;padding:8px 12px;background:#f6f8fa;font-size:14px;color:#57606a")
    _append_inline(listing, heading)
    for title in titles:
        listing.append(_line_break(title))
    return lxml.html.tostring(listing, encoding="unicode")


def cited_numbers(block: str) -> list[int]:
    """The reference numbers a serialised block cites, in order (its `<sup>[n]</sup>` markers)."""
    return [int(number) for number in _CITATION.findall(block)]


def _drop_unwanted(root: lxml.html.HtmlElement) -> None:
    for node in list(root.iter()):
        sourceless_image = node.tag == "img" and not (node.get("src") or "").strip()
        if not isinstance(node.tag, str) or node.tag in DROPPED or sourceless_image:
            node.drop_tree()


def _clean_attributes(element: lxml.html.HtmlElement) -> None:
    kept = KEPT_ATTRIBUTES.get(element.tag, set())
    if element.tag == "span" and _in_code(element):
        kept = {"style"}          # the highlighting's colours, which the sanitizer checked
    align = TEXT_ALIGN.search(element.get("style", "")) or TEXT_ALIGN.search(
        f"text-align:{element.get('align', '')}")
    values = {name: value.strip() for name, value in element.attrib.items() if name in kept}
    element.attrib.clear()
    element.attrib.update(values)
    if align and element.tag != "img":
        element.set("style", f"text-align:{align.group(1).lower()}")


def _rename(element: lxml.html.HtmlElement) -> None:
    if element.tag in RENAMED:
        element.tag, extra = RENAMED[element.tag]
        if extra:
            element.set("style", ";".join(filter(None, (extra, element.get("style")))))
    elif element.tag not in KEPT:
        element.drop_tag()


def _apply_style(element: lxml.html.HtmlElement, styles: dict[str, str]) -> None:
    parent = element.getparent()
    parent_tag = parent.tag if parent is not None else None
    if element.tag in ("ul", "ol"):
        depth = sum(1 for ancestor in element.iterancestors() if ancestor.tag in ("ul", "ol"))
        marker = "decimal" if element.tag == "ol" else BULLETS[min(depth, len(BULLETS) - 1)]
        style = f"list-style-type:{marker};{NESTED_LIST_STYLE if depth else LIST_STYLE}"
    elif element.tag == "code" and parent_tag == "pre":
        style = PRE_CODE_STYLE
    elif element.tag == "p" and parent_tag in ("li", "blockquote"):
        style = LI_PARAGRAPH_STYLE if parent_tag == "li" else QUOTE_PARAGRAPH_STYLE
    else:
        style = styles.get(element.tag, "")
    combined = ";".join(filter(None, (style, element.get("style"))))
    if combined:
        element.set("style", combined)


def _replace_links(root: lxml.html.HtmlElement) -> tuple[str, ...]:
    """Turn each link into plain text, numbering outside URLs in order of first appearance (but for a
    link that shows its URL already)."""
    numbers: dict[str, int] = {}
    for link in list(root.iter("a")):
        href = link.attrib.pop("href", "")
        if not href.lower().startswith(("http://", "https://")):
            link.drop_tag()
            continue
        link.tag = "span"
        if shows_its_url(link, href):
            continue            # the reader sees the URL already: no number, no second copy in the list
        number = numbers.setdefault(href, len(numbers) + 1)
        # The marker sits inside the link's span, so it takes the link colour without a style of its own.
        link.append(_new("sup", "", f"[{number}]"))
    return tuple(numbers)


def shows_its_url(link: lxml.html.HtmlElement, href: str) -> bool:
    """Whether a link's text is its own URL (`<a href="https://lwn.net/…">https://lwn.net/…</a>`), as
    bare URLs in Markdown are, the scheme and a final slash aside."""
    def bare(url: str) -> str:
        return url.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
    return len(link) == 0 and bare(link.text or "") == bare(href)


def _shape_block(element: lxml.html.HtmlElement) -> None:
    _drop_layout_whitespace(element)
    if element.tag == "li":
        _wrap_loose_text(element)
    elif element.tag == "table":
        frame = _new("section", TABLE_FRAME_STYLE)
        frame.tail, element.tail = element.tail, None
        element.addprevious(frame)
        frame.append(element)


def _drop_layout_whitespace(element: lxml.html.HtmlElement) -> None:
    """Drop whitespace-only text beside blocks, which the editor may turn into empty lines."""
    if element.tag == "pre" or any(ancestor.tag == "pre" for ancestor in element.iterancestors()):
        return
    textless = element.tag in TEXTLESS
    children = list(element)
    if _blank(element.text) and (textless or (children and children[0].tag in BLOCKS)):
        element.text = None
    for child, following in itertools.zip_longest(children, children[1:]):
        beside_block = child.tag in BLOCKS or (following is not None and following.tag in BLOCKS)
        if _blank(child.tail) and (textless or beside_block):
            child.tail = None


_LONG_HEX = re.compile(r"#([0-9a-fA-F])\1([0-9a-fA-F])\2([0-9a-fA-F])\3\b")
_LEADING_ZERO = re.compile(r"(?<![\d.])0\.(\d)")


def shortest_style(style: str) -> str:
    """The same declarations in fewer characters: WeChat counts the article's markup, styles included,
    against its limit. `#222222` is `#222`, `0.8em` is `.8em`, no blanks around `:` and `;`, and of a
    property declared twice only the later, which wins."""
    declarations: dict[str, str] = {}
    for part in style.split(";"):
        name, _, value = part.partition(":")
        if name.strip() and value.strip():
            declarations.pop(name.strip().lower(), None)     # a later declaration of a property wins
            declarations[name.strip().lower()] = value.strip()
    compact = ";".join(f"{name}:{value}" for name, value in declarations.items())
    return _LEADING_ZERO.sub(r".\1", _LONG_HEX.sub(r"#\1\2\3", compact))


def _in_code(element: lxml.html.HtmlElement) -> bool:
    return any(ancestor.tag == "pre" for ancestor in element.iterancestors())


def _protect_code(block: lxml.html.HtmlElement) -> None:
    """Keep a code block's lines as they are: WeChat's editor collapses runs of spaces and the line
    breaks of a `<pre>`, so each line break becomes a `<br>` and each space or TAB a no-break space."""
    for element in list(block.iter()):
        if element.text:
            lines = _protected(element.text).split("\n")
            element.text = lines[0]
            for position, line in enumerate(lines[1:]):
                element.insert(position, _line_break(line))
        if element.tail and element is not block:
            lines = _protected(element.tail).split("\n")
            element.tail = lines[0]
            for line in reversed(lines[1:]):
                element.addnext(_line_break(line))
    last = _last_node(block)
    if last is not None and last.tag == "br" and not last.tail:
        last.drop_tree()          # the code's final line break: no empty line at the end


def _protected(text: str) -> str:
    return text.replace("\t", "    ").replace(" ", "\u00a0")


def _line_break(tail: str) -> lxml.html.HtmlElement:
    line_break = lxml.html.Element("br")
    line_break.tail = tail or None
    return line_break


def _last_node(element: lxml.html.HtmlElement) -> lxml.html.HtmlElement | None:
    """The last element in document order inside `element`, when no text follows it."""
    while len(element):
        child = element[-1]
        if child.tail:
            return None
        if not len(child):
            return child
        element = child
    return None


def _blank(text: str | None) -> bool:
    return text is not None and not text.strip()


def _wrap_loose_text(item: lxml.html.HtmlElement) -> None:
    """Move each run of text and inline elements of a list item into its own `<section>`."""
    nodes: list[str | lxml.html.HtmlElement] = [item.text or ""]
    for child in list(item):
        nodes += [child, child.tail or ""]
        child.tail = None
        item.remove(child)
    item.text = None
    run = None
    for node in nodes:
        if isinstance(node, str) or node.tag not in BLOCKS:
            if run is None and (not isinstance(node, str) or node.strip()):
                run = _new("section", "")     # a section has no margin of its own
                item.append(run)
            if run is not None:
                _append_inline(run, node)
        else:
            run = None
            item.append(node)


def _append_inline(run: lxml.html.HtmlElement, node: str | lxml.html.HtmlElement) -> None:
    if not isinstance(node, str):
        run.append(node)
    elif len(run):
        run[-1].tail = (run[-1].tail or "") + node
    else:
        run.text = (run.text or "") + node


def _new(tag: str, style: str, text: str | None = None) -> lxml.html.HtmlElement:
    element = lxml.html.Element(tag, style=style) if style else lxml.html.Element(tag)
    element.text = text
    return element
