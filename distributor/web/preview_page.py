"""Turn an issue's renditions into what the live preview serves: its page and two framed documents."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from urllib.parse import unquote, urlsplit

from markupsafe import Markup

# The page shows the three built-in channels side by side; `preview` writes every channel's files.
from distributor.channels.email.channel import EmailChannel
from distributor.channels.email.rendition import GMAIL_CLIP_BYTES
from distributor.channels.mail.channel import SAMPLE_RECIPIENT
from distributor.channels.wechat.article import TITLE_LIMIT, WechatRendition
from distributor.models import NAME_PLACEHOLDER, UNSUBSCRIBE_PLACEHOLDER, Issue
from distributor.registry import BUILT_IN
from distributor.render.renditions import render_issue
from distributor.render.templating import environment
from distributor.settings import Settings

# Files of the site checkout (settings.site.site_root) are served under this path.
SITE_PATH = "/site/"
EMAIL_DESKTOP_WIDTH = 720
PHONE_WIDTH = 375


@dataclass(frozen=True)
class EmailPanel:
    subject: str
    preheader: str
    from_name: str
    size_bytes: int               # the whole MIME message as the sample recipient receives it
    warnings: tuple[str, ...]

    @property
    def over_clip_limit(self) -> bool:
        """Say whether the message is larger than what Gmail shows before clipping it."""
        return self.size_bytes > GMAIL_CLIP_BYTES


@dataclass(frozen=True)
class WechatPanel:
    account: str                  # the Official Account's name, shown over the article
    title: str
    author: str
    digest: str
    cover: str | None             # as the browser should load it (site images rewritten to SITE_PATH)
    references: int
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class TextPanel:
    subject: str
    text: str
    width: int
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class RenderedPreview:
    """One successful rendering of the issue, ready to serve."""

    title: str
    source: Path
    email: EmailPanel
    wechat: WechatPanel
    text: TextPanel
    email_html: bytes
    wechat_html: bytes


def render_preview(path: Path, settings: Settings, title: str | None = None) -> RenderedPreview:
    """Render the issue at `path` (titled `title` when given) for every channel and prepare the
    panels and framed documents."""
    renditions = render_issue(path, settings, BUILT_IN, title=title)
    email, wechat, text = renditions["email"], renditions["wechat"], renditions["text"]
    sample = EmailChannel().sample_message(email, renditions.issue, settings)
    return RenderedPreview(
        title=renditions.issue.title,
        source=path,
        email=EmailPanel(subject=email.subject, preheader=email.preheader,
                         from_name=settings.channels.email.from_name,
                         size_bytes=len(sample),
                         warnings=email.warnings + tuple(missing_images(email.images, settings))),
        wechat=_wechat_panel(wechat, settings),
        text=TextPanel(subject=text.subject, text=text.text, width=settings.channels.text.width,
                       warnings=text.warnings),
        email_html=_as_subscriber_sees(email.html, settings).encode("utf-8"),
        wechat_html=_wechat_document(wechat, renditions.issue, settings).encode("utf-8"),
    )


def page_html(preview: RenderedPreview | None, error: str | None, version: int, settings: Settings) -> bytes:
    """Render the preview page: the three panels of `preview`, with `error` shown above them."""
    template = environment(None).get_template("preview/page.html")
    return template.render(
        preview=preview, error=error, version=version, language=settings.site.language, kilobytes=_kilobytes,
        clip_kb=GMAIL_CLIP_BYTES // 1024, title_limit=TITLE_LIMIT, desktop_width=EMAIL_DESKTOP_WIDTH,
        phone_width=PHONE_WIDTH).encode("utf-8")


def static_file(name: str) -> bytes:
    """Return the page's own script or style sheet `name` from the packaged templates."""
    return (files("distributor.templates") / "preview" / name).read_bytes()


def local_url(url: str, settings: Settings) -> str:
    """Return `url` rewritten to the local site folder when it is a site URL and a site root is set."""
    prefix = settings.site.base_url.rstrip("/") + "/"
    if settings.site.site_root and url.startswith(prefix):
        return SITE_PATH + url[len(prefix):]
    return url


def rewrite_site_images(document: str, settings: Settings) -> str:
    """Point every image source under `site.base_url` at the local site folder; links stay as they are."""
    if not settings.site.site_root:
        return document
    prefix = re.escape(settings.site.base_url.rstrip("/") + "/")
    return re.sub(r"""(<img\b[^>]*?\bsrc=["'])""" + prefix, lambda match: match.group(1) + SITE_PATH,
                  document, flags=re.IGNORECASE)


def site_file(request_path: str, settings: Settings) -> Path | None:
    """Map a request under SITE_PATH to an existing file inside the site root, else None."""
    if not settings.site.site_root or not request_path.startswith(SITE_PATH):
        return None
    root = Path(settings.site.site_root).expanduser().resolve()
    try:
        path = (root / unquote(request_path[len(SITE_PATH):])).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None
    except (OSError, ValueError):   # a NUL byte, a name too long for the file system
        return None


def missing_images(urls: tuple[str, ...], settings: Settings) -> list[str]:
    """Name each site image that the local site root does not hold (none when no root is set)."""
    missing = []
    for url in dict.fromkeys(urls):
        local = local_url(url, settings)
        if local.startswith(SITE_PATH) and site_file(urlsplit(local).path, settings) is None:
            missing.append(f"missing image {url}: no such file under site.site_root")
    return missing


def _as_subscriber_sees(document: str, settings: Settings) -> str:
    """Fill the per-recipient markers as for the sample recipient, and open links outside the frame."""
    unsubscribe = settings.channels.email.unsubscribe_url.format(token="sample-token")
    document = document.replace(NAME_PLACEHOLDER, html.escape(SAMPLE_RECIPIENT.name or SAMPLE_RECIPIENT.address))
    document = document.replace(UNSUBSCRIBE_PLACEHOLDER, html.escape(unsubscribe))
    document = re.sub(r"(<head[^>]*>)", r'\1<base target="_blank">', document, count=1, flags=re.IGNORECASE)
    return rewrite_site_images(document, settings)


def _wechat_panel(wechat: WechatRendition, settings: Settings) -> WechatPanel:
    warnings = list(wechat.warnings) + missing_images((*wechat.images, *filter(None, [wechat.cover])), settings)
    if not wechat.cover:
        warnings.append("no cover image: WeChat needs one (front matter cover: or channels.wechat.default_cover)")
    return WechatPanel(account=settings.site.name, title=wechat.title, author=wechat.author, digest=wechat.digest,
                       cover=local_url(wechat.cover, settings) if wechat.cover else None,
                       references=len(wechat.references), warnings=tuple(warnings))


def _wechat_document(wechat: WechatRendition, issue: Issue, settings: Settings) -> str:
    """Wrap the article in a page that looks like the WeChat reader, with its title and byline; a split
    issue's articles one after the other, each under its own title, as the draft holds them."""
    articles = wechat.articles
    return environment(None).get_template("preview/wechat.html").render(
        language=settings.site.language, site_name=settings.site.name, title=articles[0].title,
        author=wechat.author, date=issue.date.strftime("%Y-%m-%d") if issue.date else "",
        parts=[(part.title, Markup(rewrite_site_images(part.content, settings))) for part in articles])


def _kilobytes(size: int) -> str:
    return f"{size / 1024:.1f} KB"
