"""Fenced code highlighted with inline styles (Pygments, `noclasses`), so the colours reach mail clients
and the WeChat editor, which keep no stylesheet.

A fence is highlighted only when it names a language Pygments knows (```` ```python ````); a fence
without one, or with a name Pygments does not know, stays plain, since guessing a language is slow
and often wrong. The output is text and `<span style="color:…">` only, escaped by Pygments, with the
code's lines as they were; the sanitizer's allow list (colours, weight, style) lets it through. The
spans come from the lexer's tokens and the style's colours directly rather than Pygments' HTML
formatter, whose spans repeat the full style of every token, whitespace included.
"""
from __future__ import annotations

import functools
import html

from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.style import StyleMeta
from pygments.styles import get_style_by_name
from pygments.token import _TokenType
from pygments.util import ClassNotFound

# Pygments' lexers are regular-expression driven; a code block larger than this stays plain, which
# bounds the time one hostile block can take.
MAX_HIGHLIGHTED_CHARACTERS = 50_000
DEFAULT_STYLE = "default"


@functools.lru_cache(maxsize=64)
def _lexer(language: str) -> Lexer | None:
    try:
        return get_lexer_by_name(language, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


@functools.lru_cache(maxsize=8)
def _style(name: str) -> StyleMeta:
    return get_style_by_name(name)


@functools.lru_cache(maxsize=1024)
def _css(style: StyleMeta, token: _TokenType) -> str:
    """The shortest inline style for a token: colour, bold, italic; "" for none."""
    found = style.style_for_token(token)
    parts = [f"color:#{found['color']}"] if found["color"] else []
    parts += ["font-weight:bold"] if found["bold"] else []
    parts += ["font-style:italic"] if found["italic"] else []
    return ";".join(parts)


def highlighted(code: str, language: str, *, style: str = DEFAULT_STYLE) -> str | None:
    """`code` as HTML with inline-styled spans for the fence's `language`; None when it stays plain.
    Whitespace and unstyled tokens are left bare, and neighbours of one style share a span, so the
    markup stays small (WeChat counts it against the article's limit)."""
    if not language or len(code) > MAX_HIGHLIGHTED_CHARACTERS:
        return None
    lexer = _lexer(language.lower())
    if lexer is None:
        return None
    theme = _style(style)
    runs: list[tuple[str, str]] = []
    for token, text in lexer.get_tokens(code):
        css = _css(theme, token) if text.strip() else (runs[-1][0] if runs else "")
        if runs and runs[-1][0] == css:
            runs[-1] = (css, runs[-1][1] + text)
        else:
            runs.append((css, text))
    return "".join(f'<span style="{css}">{html.escape(text, quote=False)}</span>' if css
                   else html.escape(text, quote=False) for css, text in runs)
