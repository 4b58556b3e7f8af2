"""Every rendition of the example and of every corpus issue keeps to its channel's rules."""
from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import sys

import lxml.html
import pytest
from wcwidth import wcswidth

from distributor.channels.email.channel import EmailChannel
from distributor.channels.wechat.article_html import shows_its_url
from distributor.models import UNSUBSCRIBE_PLACEHOLDER
from distributor.render.renditions import render_issue
from distributor.settings import Settings

from .conftest import EXAMPLE, ROOT
from .corpus import CORPUS, FIDELITY, corpus_files
from .test_sanitizer import check_nothing_executable

SETTINGS = Settings()
GOLDEN = ROOT / "tests" / "golden"
CORPUS_IDS = [str(path.relative_to(CORPUS)) for path in corpus_files()]


@pytest.fixture(scope="module", params=[EXAMPLE, *corpus_files()], ids=["example", *CORPUS_IDS])
def rendered(request):
    return render_issue(request.param, SETTINGS)


def source_links(body_html: str) -> set[str]:
    """The outside links the WeChat article must list: all but those whose text is their own URL."""
    tree = lxml.html.fragment_fromstring(body_html, create_parent="div")
    return {link.get("href") for link in tree.iter("a")
            if (link.get("href") or "").startswith("http") and not shows_its_url(link, link.get("href"))}


def test_email_styles_inline_except_media_rules(rendered):
    tree = lxml.html.fromstring(rendered["email"].html)
    styles = tree.xpath("//style")
    assert len(styles) == 1 and styles[0].getparent().tag == "head"
    assert re.fullmatch(r"\s*@media[^{]+\{.*\}\s*", styles[0].text, re.S)
    content = tree.xpath("//div[contains(@class, 'content')]")[0]
    for element in content.iter("p", "li", "a", "blockquote", "pre", "td", "th", "h2", "h3", "img", "ul", "ol"):
        assert element.get("style"), f"<{element.tag}> has no inline style"


def test_email_urls_absolute_and_every_source_link_kept(rendered):
    tree = lxml.html.fromstring(rendered["email"].html)
    for url in tree.xpath("//a/@href | //img/@src"):
        assert url.startswith(("https://", "http://", "mailto:", "#")) or url == UNSUBSCRIBE_PLACEHOLDER, url
    assert source_links(rendered.body.html) <= set(rendered["email"].links)


def test_email_sample_parses_and_subject_decodes(rendered):
    raw = EmailChannel().sample_message(rendered["email"], rendered.issue, SETTINGS)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Subject"] == rendered.issue.title
    assert message.get_content_type() == "multipart/alternative"
    text, html = (part.get_content() for part in message.iter_parts())
    assert rendered.issue.title.split()[0] in html
    assert "%%" not in text and "%%" not in html
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_wechat_has_no_outside_links_and_one_reference_per_link(rendered):
    content = rendered["wechat"].content
    assert "href=" not in content and "<a " not in content and "<style" not in content
    assert set(rendered["wechat"].references) == source_links(rendered.body.html)
    assert len(rendered["wechat"].references) == len(set(rendered["wechat"].references))
    assert not re.search(r"color:\s*(#000\b|#000000\b|black\b)", content)


def test_email_and_wechat_carry_nothing_executable(rendered):
    """The corpus's own raw HTML (scripts, comments, embeds) passes the allow list like hostile input does."""
    check_nothing_executable(rendered)


def test_text_lines_fit_72_columns_unless_they_end_in_a_url(rendered):
    for line in rendered["text"].text.splitlines():
        if wcswidth(line) > 72:
            assert re.search(r"\S+://\S+$", line) or " " not in line.strip(), line


def test_renders_are_deterministic(rendered):
    again = render_issue(rendered.issue.source_path, SETTINGS)
    assert (again["email"], again["wechat"], again["text"]) == (rendered["email"], rendered["wechat"], rendered["text"])


@pytest.mark.parametrize("name", [path.name for path in corpus_files() if path.parent.name == "tinylab"])
def test_tinylab_email_keeps_what_the_site_shows(name, corpus, tmp_path):
    candidate = tmp_path / "email.html"
    candidate.write_text(render_issue(corpus / "tinylab" / name, SETTINGS)["email"].html, encoding="utf-8")
    reference = corpus / "reference" / "tinylab" / name.replace(".md", ".html")
    result = subprocess.run([sys.executable, str(FIDELITY), str(reference), str(candidate)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("channel, attribute, file", [
    ("email", "html", "example-email.html"),
    ("wechat", "content", "example-wechat.html"),
    ("text", "text", "example-text.txt"),
])
def test_example_matches_golden_file(channel, attribute, file):
    """Set UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate change."""
    produced = getattr(render_issue(EXAMPLE, SETTINGS)[channel], attribute)
    golden = GOLDEN / file
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(produced, encoding="utf-8")
    assert produced == golden.read_text(encoding="utf-8")
