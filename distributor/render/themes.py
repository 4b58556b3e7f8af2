"""The article themes a publisher chooses with `site.theme`: the colours and the heading, quote and
code styles the email and the WeChat article share, and the Pygments style of their code.

`classic` is the distributor's own look (teal rules, WeChat's blue links); `tinylab` follows the
TinyLab site (Bootstrap 3's blue links, grey-ruled quotes, pink inline code); `ink` is black on white.
A publisher's own CSS file (`site.theme_css`) is inlined after the theme, so its rules win.
"""
from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import lxml.html
from premailer import Premailer

from distributor.errors import SettingsError

MAX_CSS_BYTES = 64 * 1024
# What a style may not do in a mail or an article: load something, or run code (as the sanitizer).
# CSS has no use for a `<` outside strings and comments, and markup is the one thing it could smuggle.
_CSS_LOADS = re.compile(r"url\s*\(|expression\s*\(|@import|image-set\s*\(|javascript:|<", re.I)


@dataclass(frozen=True)
class Theme:
    """The colours (CSS hex) and code style of one theme."""

    name: str
    text: str                 # body text
    heading: str              # headings
    accent: str               # the rule under h1/h2 and beside h3, the email header's rule
    link: str
    quote_border: str
    quote_background: str     # "" for none
    quote_text: str
    code_text: str            # inline code
    code_background: str
    block_background: str     # code blocks
    block_border: str         # "" for none
    code_style: str           # the Pygments style of highlighted code


THEMES = {
    "classic": Theme("classic", text="#3f3f3f", heading="#222222", accent="#2b7a78", link="#576b95",
                     quote_border="#d0d7de", quote_background="#f6f8fa", quote_text="#57606a",
                     code_text="#c7254e", code_background="#f0f1f2", block_background="#f6f8fa", block_border="",
                     code_style="default"),
    "tinylab": Theme("tinylab", text="#333333", heading="#333333", accent="#eeeeee", link="#337ab7",
                     quote_border="#eeeeee", quote_background="", quote_text="#555555",
                     code_text="#c7254e", code_background="#f9f2f4", block_background="#f5f5f5",
                     block_border="#cccccc", code_style="friendly"),
    "ink": Theme("ink", text="#222222", heading="#000000", accent="#000000", link="#000000",
                 quote_border="#999999", quote_background="", quote_text="#444444",
                 code_text="#000000", code_background="#eeeeee", block_background="#f4f4f4", block_border="#dddddd",
                 code_style="bw"),
}
DEFAULT_THEME = THEMES["classic"]


def theme_named(name: str) -> Theme:
    return THEMES[name]


def publisher_css(path: str | None) -> str:
    """The CSS of `site.theme_css` (checked by `css_file_problem` when the settings were read, and again
    here, as the file may have changed since); "" when none is set."""
    if path is None:
        return ""
    try:
        found = Path(path).expanduser().stat()
        text, problem = _read_css_once(path, found.st_mtime_ns, found.st_size)
    except OSError:
        text, problem = _read_css(path)
    if problem:
        raise SettingsError(f"site.theme_css: {problem}")
    return text


def with_publisher_css(fragment: str, css: str) -> str:
    """The HTML fragment with the publisher's CSS inlined into its elements' `style` (premailer): done
    before the email's or the article's own styles, which an element's style then overrides, so the
    publisher's rules win over the theme's."""
    if not css or not fragment.strip():
        return fragment
    document = Premailer(f"<html><body>{fragment}</body></html>", css_text=css, allow_network=False,
                         keep_style_tags=False, remove_classes=False, strip_important=True,
                         disable_validation=True, cssutils_logging_level=logging.CRITICAL).transform()
    body = lxml.html.fromstring(document).find(".//body")
    return (body.text or "") + "".join(lxml.html.tostring(child, encoding="unicode") for child in body)


def css_file_problem(path: str) -> str | None:
    """What is wrong with a CSS file for `site.theme_css`: it must be a regular UTF-8 file of at most
    64 KB that loads nothing and runs nothing."""
    return _read_css(path)[1]


@functools.lru_cache(maxsize=4)
def _read_css_once(path: str, mtime_ns: int, size: int) -> tuple[str, str | None]:
    """`_read_css`, once per version of the file: the email and the article of an issue both inline it."""
    return _read_css(path)


def _read_css(path: str) -> tuple[str, str | None]:
    file = Path(path).expanduser()
    try:
        if not file.is_file() or file.stat().st_size > MAX_CSS_BYTES:
            return "", f"{path} is not a regular file of at most 64 KB"
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return "", f"{path} is not UTF-8 text"
    except OSError as exc:
        return "", f"{path} cannot be read: {exc.strerror}"
    if found := _CSS_LOADS.search(text):
        line = text.count("\n", 0, found.start()) + 1
        return "", (f"{path} line {line}: {found.group(0)!r} loads a resource or runs code, which neither a "
                    "mail nor a WeChat article may")
    return text, None
