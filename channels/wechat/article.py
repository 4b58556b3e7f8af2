"""The WeChat Official Account rendition: an article within the draft API's rules and limits."""
from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import urljoin

import lxml.html

from distributor.channels.wechat.article_html import compose, parts_listing, to_wechat_html
from distributor.channels.wechat.images import needs_upload, replace_image_sources
from distributor.channels.wechat.split import MAX_ARTICLES, ArticlePart, cited, part_title, split_body
from distributor.models import Body, Issue
from distributor.render.templating import common_context, render_template
from distributor.render.themes import Theme, publisher_css, theme_named
from distributor.settings import Settings

# Limits of the draft API (draft/add), in characters unless the name says bytes.
TITLE_LIMIT = 32
AUTHOR_LIMIT = 16
DIGEST_LIMIT = 128
CONTENT_LIMIT = 20_000
CONTENT_BYTES_LIMIT = 1024 * 1024
# The content limit applies to the article as sent, with each image's src pointing at its uploaded
# copy, whose URL is only known after the upload. WeChat does not document how long that URL is: its
# own example (http://mmbiz.qpic.cn/mmbiz/<88-character id>/0) is 117 characters, and replies today
# (http://mmbiz.qpic.cn/sz_mmbiz_png/<id>/0?wx_fmt=png&from=appmsg, the & written &amp; in the HTML)
# about 150. Every image still to upload is counted at this generous bound, before anything is uploaded,
# so preview, the dry run and publish refuse the same articles.
UPLOADED_URL_BOUND = 256
_LONGEST_UPLOADED_URL = "http://mmbiz.qpic.cn/" + "x" * (UPLOADED_URL_BOUND - len("http://mmbiz.qpic.cn/"))
# An issue is split so each article stays under the limit, the first with room for the list of the parts.
SPLIT_BUDGET = CONTENT_LIMIT
PARTS_LISTING_BOUND = 120 + MAX_ARTICLES * (TITLE_LIMIT + 10)
_IMAGE_SOURCE = re.compile(r'<img[^>]*?\ssrc="([^"]*)"')


@dataclass(frozen=True)
class WechatRendition:
    """The article for the draft API: its fields, and the content with links as numbered references;
    `parts`, the articles of the draft (one, or the issue split when it does not fit one)."""

    title: str
    author: str
    digest: str
    content: str                  # article HTML: inline styles, links as numbered references
    content_source_url: str
    cover: str | None             # absolute URL of the cover image, if the issue names one
    references: tuple[str, ...]
    images: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    parts: tuple[ArticlePart, ...] = ()

    @property
    def articles(self) -> tuple[ArticlePart, ...]:
        return self.parts or (ArticlePart(self.title, self.digest, self.content),)


def render_wechat(issue: Issue, body: Body, settings: Settings) -> WechatRendition:
    """Render the article, split into several when it does not fit one; a field over its limit is a
    warning here and an error at publish."""
    wechat = settings.channels.wechat
    theme = theme_named(settings.site.theme)
    converted = to_wechat_html(body.html, theme, publisher_css(settings.site.theme_css))
    context = common_context(issue, settings, body.page_url)

    def wrap(html: str) -> str:
        return render_template(settings, "wechat/article.html", **context, content=html)

    content = wrap(converted.html)
    cover = issue.cover or wechat.default_cover
    if cover and not cover.startswith(("http://", "https://")):
        cover = urljoin(settings.site.base_url.rstrip("/") + "/", cover.lstrip("/"))
    digest = issue.description or _shorten(body.summary, DIGEST_LIMIT)
    title = _shorten(issue.title, TITLE_LIMIT)
    shortened = (f"{issue.source_path}: the title has {len(issue.title)} characters, WeChat takes {TITLE_LIMIT}: "
                 f"the article is titled {title!r}",) if title != issue.title else ()
    rendition = WechatRendition(
        title=title,
        author=issue.author or wechat.author or "",
        digest=digest,
        content=content,
        content_source_url=body.page_url or "",
        cover=cover,
        references=converted.references,
        images=converted.image_urls,
        warnings=body.warnings + shortened,
        parts=_parts(converted.blocks, converted.references, wrap, issue.title, digest, context["labels"], theme),
    )
    return replace(rendition, warnings=rendition.warnings + tuple(limit_violations(rendition)))


def _parts(blocks: tuple[str, ...], references: tuple[str, ...], wrap: Callable[[str], str], title: str,
           digest: str, labels: dict[str, str], theme: Theme) -> tuple[ArticlePart, ...]:
    """The articles of the draft when the issue does not fit one (empty when it does); the first has
    less room, for the list of the parts."""
    groups = split_body(blocks, references, budget=SPLIT_BUDGET, first_budget=SPLIT_BUDGET - PARTS_LISTING_BOUND,
                        measure=sent_length, wrap=wrap, theme=theme)
    return () if len(groups) == 1 else _finish(groups, references, wrap, title, digest, labels, theme)


def _finish(groups: list[list[str]], references: tuple[str, ...], wrap: Callable[[str], str], title: str,
            digest: str, labels: dict[str, str], theme: Theme) -> tuple[ArticlePart, ...]:
    count = len(groups)
    titles = [part_title(title, index, count, TITLE_LIMIT) for index in range(1, count + 1)]
    listing = parts_listing(titles, labels["parts"].format(count=count))
    parts = []
    for index, group in enumerate(groups):
        shown = [listing, *group] if index == 0 else group
        part_digest = digest if index == 0 else _shorten(_text_of(group), DIGEST_LIMIT)
        parts.append(ArticlePart(titles[index], part_digest, wrap(compose(shown, cited(group, references), theme))))
    return tuple(parts)


def _text_of(blocks: list[str]) -> str:
    return " ".join(lxml.html.fragment_fromstring("".join(blocks), create_parent="section").text_content().split())


def sent_length(content: str) -> int:
    """The characters `content` counts as sent: every image still to upload at UPLOADED_URL_BOUND."""
    return len(_as_sent(content)[0])


def _as_sent(content: str) -> tuple[str, int]:
    images = tuple(dict.fromkeys(_IMAGE_SOURCE.findall(content)))
    uploads = {html.unescape(url): _LONGEST_UPLOADED_URL for url in images if needs_upload(html.unescape(url))}
    return (replace_image_sources(content, uploads) if uploads else content), len(uploads)


def content_as_sent(rendition: WechatRendition) -> tuple[str, int]:
    """Return the article's content as it will be sent, every image still to upload pointing at a URL
    of UPLOADED_URL_BOUND characters (no shorter than the one WeChat will give), and how many such
    images there are; for a split issue, its longest article."""
    return max((_as_sent(part.content) for part in rendition.articles), key=lambda found: len(found[0]))


def limit_violations(rendition: WechatRendition) -> list[str]:
    """Say which fields of the article (of each article, when split) break the draft API's limits (empty
    when none does), the content measured as it will be sent."""
    problems = []
    articles = rendition.articles
    if len(articles) > MAX_ARTICLES:
        problems.append(f"wechat: the issue needs {len(articles)} articles; one draft holds at most {MAX_ARTICLES}")
    if len(rendition.author) > AUTHOR_LIMIT:
        problems.append(f"wechat author is {len(rendition.author)} characters; the limit is {AUTHOR_LIMIT}")
    for index, article in enumerate(articles, start=1):
        which = f"wechat article {index}/{len(articles)}" if len(articles) > 1 else "wechat"
        for field, value, limit in (("title", article.title, TITLE_LIMIT), ("digest", article.digest, DIGEST_LIMIT)):
            if len(value) > limit:
                problems.append(f"{which} {field} is {len(value)} characters; the limit is {limit}")
        content, uploads = _as_sent(article.content)
        counted = (f" as sent, each of its {uploads} images to upload counted at {UPLOADED_URL_BOUND} characters "
                   "(a safe bound for the URL WeChat gives an upload)") if uploads else ""
        if len(content) >= CONTENT_LIMIT:
            problems.append(f"{which} content is {len(content)} characters{counted}; the limit is under "
                            f"{CONTENT_LIMIT} (a single block this long cannot be split)")
        size = len(content.encode("utf-8"))
        if size >= CONTENT_BYTES_LIMIT:
            problems.append(f"{which} content is {size} bytes{counted}; the limit is under 1 MB")
    return problems


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
