"""Article themes (`site.theme`) and a publisher's own CSS (`site.theme_css`), in the email and the WeChat
article alike; the TinyLab look keeps what the TinyLab site shows and still fits WeChat."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import lxml.html
import pytest

from distributor.channels.wechat.article import CONTENT_LIMIT, sent_length
from distributor.channels.wechat.article_html import shortest_style
from distributor.errors import SettingsError
from distributor.render.renditions import render_issue
from distributor.render.themes import THEMES
from distributor.settings import Settings, SiteSettings, load_settings

from .corpus import FIDELITY, corpus_files

ISSUE = ("---\ntitle: Themes\n---\n\n## A heading\n\nA [link](https://example.org/x) and `code`.\n\n"
         "> A quote.\n\n```python\ndef f():\n    return 1\n```\n")


def settings_with(**site: object) -> Settings:
    return dataclasses.replace(Settings(), site=dataclasses.replace(SiteSettings(), **site))


def rendered(tmp_path: Path, settings: Settings):
    path = tmp_path / "2024-01-06-themes.md"
    path.write_text(ISSUE, encoding="utf-8")
    return render_issue(path, settings)


@pytest.mark.parametrize("name", sorted(THEMES))
def test_each_theme_colours_the_email_and_the_article_alike(tmp_path: Path, name: str) -> None:
    theme = THEMES[name]
    renditions = rendered(tmp_path, settings_with(theme=name))
    article = lxml.html.fromstring(renditions["wechat"].content)
    link = next(span for span in article.iter("span") if span.text == "link")
    assert f"color:{short(theme.link)}" in compact(link.get("style"))
    quote = next(article.iter("blockquote"))
    assert f"border-left:4px solid {short(theme.quote_border)}" in compact(quote.get("style"))
    email = lxml.html.fromstring(renditions["email"].html)
    email_link = next(a for a in email.iter("a") if a.text == "link")
    assert f"color:{short(theme.link)}" in compact(email_link.get("style"))
    assert f"border-left:4px solid {short(theme.quote_border)}" in compact(next(email.iter("blockquote")).get("style"))


def short(colour: str) -> str:
    """A colour as both renderings write it: premailer and `shortest_style` shorten #rrggbb alike."""
    return shortest_style(f"color:{colour}").removeprefix("color:").lower()


def compact(style: str) -> str:
    return shortest_style(style).lower()


def test_themes_differ_and_colour_code_with_their_own_style(tmp_path: Path) -> None:
    articles = {name: rendered(tmp_path, settings_with(theme=name))["wechat"].content for name in THEMES}
    assert len(set(articles.values())) == len(THEMES)
    keyword = {name: lxml.html.fromstring(html).xpath("//pre//span")[0].get("style") for name, html in articles.items()}
    assert keyword["classic"] != keyword["tinylab"]          # Pygments' default against friendly


def test_the_publishers_css_is_inlined_over_the_theme(tmp_path: Path) -> None:
    css = tmp_path / "house.css"
    css.write_text("h2 { color: #c00000; border-bottom: 3px dotted #c00000 }\nblockquote p { font-style: italic }\n")
    renditions = rendered(tmp_path, settings_with(theme_css=str(css)))
    heading = next(lxml.html.fromstring(renditions["wechat"].content).iter("h2"))
    style = heading.get("style")
    assert "color:#c00000" in style and "border-bottom:3px dotted #c00000" in style
    assert style.count("color:") == 1 and "border-bottom:1px" not in style      # the theme's own gave way
    quoted = next(lxml.html.fromstring(renditions["wechat"].content).iter("blockquote"))[0]
    assert "font-style:italic" in quoted.get("style")
    email_heading = next(lxml.html.fromstring(renditions["email"].html).iter("h2"))
    assert "color:#c00000" in compact(email_heading.get("style"))


@pytest.mark.parametrize(("text", "problem"), [
    ("p { background: url(https://tracker.example/x.png) }", "line 1: 'url(' loads a resource or runs code"),
    ("p { color: red }\n@import 'other.css';", "line 2: '@import' loads a resource or runs code"),
    ("</style><script>alert(1)</script>", "line 1: '<' loads a resource or runs code"),
])
def test_css_that_loads_or_escapes_is_refused_when_the_settings_are_read(tmp_path: Path, text: str,
                                                                       problem: str) -> None:
    css = tmp_path / "house.css"
    css.write_text(text)
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"site:\n  theme_css: {css}\n")
    with pytest.raises(SettingsError, match=f"site.theme_css: .*{problem.replace('(', '[(]')}"):
        load_settings(settings)


def test_an_unknown_theme_is_a_settings_error(tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("site:\n  theme: neon\n")
    with pytest.raises(SettingsError, match="site.theme"):
        load_settings(settings)


@pytest.mark.parametrize("name", [path.name for path in corpus_files() if path.parent.name == "tinylab"])
def test_the_tinylab_theme_keeps_what_the_site_shows_and_fits_wechat(name: str, corpus: Path, tmp_path: Path) -> None:
    renditions = render_issue(corpus / "tinylab" / name, settings_with(theme="tinylab"))
    assert all(sent_length(part.content) < CONTENT_LIMIT for part in renditions["wechat"].articles)
    reference = corpus / "reference" / "tinylab" / name.replace(".md", ".html")

    def fidelity(candidate_text: str) -> subprocess.CompletedProcess:
        candidate = tmp_path / "candidate.html"
        candidate.write_text(candidate_text, encoding="utf-8")
        return subprocess.run([sys.executable, str(FIDELITY), str(reference), str(candidate)],
                              capture_output=True, text=True, timeout=60)

    email = fidelity(renditions["email"].html)
    assert email.returncode == 0, email.stdout + email.stderr
    # The article keeps every measure but links, which WeChat turns into numbered references by design.
    article = fidelity(renditions["wechat"].content)
    kept = [line for line in article.stdout.splitlines() if not line.startswith(("links", "verdict", "md leaked"))]
    assert kept and all(line.rstrip().endswith("ok") or " lost    0 " in line for line in kept), article.stdout
