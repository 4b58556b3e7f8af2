"""The WeChat Official Account rendition: an article within the draft API's rules and limits."""
from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import urljoin

from distributor.channels.wechat.article_html import to_wechat_html
from distributor.channels.wechat.images import needs_upload, replace_image_sources
from distributor.models import Body, Issue
from distributor.render.templating import common_context, render_template
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



@dataclass(frozen=True)
class WechatRendition:
    """The article for the draft API: its fields, and the content with links as numbered references."""

    title: str
    author: str
    digest: str
    content: str                  # article HTML: inline styles, links as numbered references
    content_source_url: str
    cover: str | None             # absolute URL of the cover image, if the issue names one
    references: tuple[str, ...]
    images: tuple[str, ...]
    warnings: tuple[str, ...] = ()

def render_wechat(issue: Issue, body: Body, settings: Settings) -> WechatRendition:
    """Render the article; a field over its limit is a warning here and an error at publish."""
    wechat = settings.channels.wechat
    converted = to_wechat_html(body.html)
    context = common_context(issue, settings, body.page_url)
    content = render_template(settings, "wechat/article.html", **context, content=converted.html)
    cover = issue.cover or wechat.default_cover
    if cover and not cover.startswith(("http://", "https://")):
        cover = urljoin(settings.site.base_url.rstrip("/") + "/", cover.lstrip("/"))
    rendition = WechatRendition(
        title=issue.title,
        author=issue.author or wechat.author or "",
        digest=issue.description or _shorten(body.summary, DIGEST_LIMIT),
        content=content,
        content_source_url=body.page_url or "",
        cover=cover,
        references=converted.references,
        images=converted.image_urls,
        warnings=body.warnings,
    )
    return replace(rendition, warnings=rendition.warnings + tuple(limit_violations(rendition)))


def content_as_sent(rendition: WechatRendition) -> tuple[str, int]:
    """Return the article's content as it will be sent, every image still to upload pointing at a URL
    of UPLOADED_URL_BOUND characters (no shorter than the one WeChat will give), and how many such
    images there are."""
    uploads = {url: _LONGEST_UPLOADED_URL for url in rendition.images if needs_upload(url)}
    return replace_image_sources(rendition.content, uploads), len(uploads)


def limit_violations(rendition: WechatRendition) -> list[str]:
    """Say which fields of the article break the draft API's limits (empty when none does), the
    content measured as it will be sent."""
    problems = []
    for field, value, limit in (("title", rendition.title, TITLE_LIMIT),
                                ("author", rendition.author, AUTHOR_LIMIT),
                                ("digest", rendition.digest, DIGEST_LIMIT)):
        if len(value) > limit:
            problems.append(f"wechat {field} is {len(value)} characters; the limit is {limit}")
    content, uploads = content_as_sent(rendition)
    counted = (f" as sent, each of its {uploads} images to upload counted at {UPLOADED_URL_BOUND} characters "
               "(a safe bound for the URL WeChat gives an upload)") if uploads else ""
    if len(content) >= CONTENT_LIMIT:
        problems.append(f"wechat content is {len(content)} characters{counted}; the limit is under {CONTENT_LIMIT}")
    size = len(content.encode("utf-8"))
    if size >= CONTENT_BYTES_LIMIT:
        problems.append(f"wechat content is {size} bytes{counted}; the limit is under 1 MB")
    return problems


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
