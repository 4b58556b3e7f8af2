"""The images of a WeChat article: read or fetch each one, make it a type and size WeChat takes
(`convert`), and point the article's `<img src>` at the uploaded copies.

Site images (URLs under `site.base_url`) are read from `site.site_root` when it is set, so a
publish works before the site is deployed; every other image is fetched, over HTTP by
`fetch_over_http` (a dry run passes a fetch that downloads nothing). Every check runs before
anything is uploaded, so a bad image never leaves a half-made draft.
"""
from __future__ import annotations

import hashlib
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import lxml.html
import requests

from distributor.channels.wechat.convert import ConversionError, fit
from distributor.errors import InputError, TransientDeliveryError
from distributor.settings import Settings

# media/uploadimg takes jpg and png under 1 MB; a cover is permanent material (10 MB, more types).
CONTENT_IMAGE_KINDS = ("jpg", "png")
CONTENT_IMAGE_MAX_BYTES = 1024 * 1024 - 1
COVER_KINDS = ("jpg", "png", "gif", "bmp")
COVER_MAX_BYTES = 10 * 1024 * 1024
# What is read of an image before it is converted to fit (a 3 MB screenshot, say); more is refused.
SOURCE_MAX_BYTES = 20 * 1024 * 1024
SIGNATURES = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF8", "gif"), (b"BM", "bmp"))
MIME_TYPES = {"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif", "bmp": "image/bmp"}
# Images already on WeChat's own hosts need no upload.
WECHAT_IMAGE_HOSTS = ("mmbiz.qpic.cn", "mmbiz.qlogo.cn")
_CHUNK = 64 * 1024

Fetch = Callable[[str, Settings, str, int], bytes]
"""Get a remote image's bytes: (url, settings, what the image is, the most bytes worth reading)."""


@dataclass(frozen=True)
class LoadedImage:
    """One image ready to upload: where the article names it, its bytes, type and sha256."""

    url: str
    data: bytes
    kind: str
    sha256: str

    @property
    def mime(self) -> str:
        return MIME_TYPES[self.kind]

    @property
    def filename(self) -> str:
        return f"{self.sha256[:16]}.{self.kind}"


def needs_upload(url: str) -> bool:
    """Say whether an image must be uploaded (it is not on WeChat's own image hosts yet)."""
    return urlsplit(url).hostname not in WECHAT_IMAGE_HOSTS


def load_content_image(url: str, settings: Settings, fetch: Fetch) -> LoadedImage:
    """Load an article image as a jpg or png under 1 MB, converted when it is not one, or raise InputError."""
    return _load(url, settings, fetch, "image", CONTENT_IMAGE_KINDS, CONTENT_IMAGE_MAX_BYTES)


def load_cover(url: str, settings: Settings, fetch: Fetch) -> LoadedImage:
    """Load the cover image as a jpg, png, gif or bmp of at most 10 MB, converted when it is not one."""
    return _load(url, settings, fetch, "cover", COVER_KINDS, COVER_MAX_BYTES)


def replace_image_sources(content: str, uploaded: dict[str, str]) -> str:
    """Return `content` with each `<img src>` found in `uploaded` (original URL to new URL)
    replaced. The HTML is parsed, so escaped values (`&amp;` for `&`) and quotes are handled."""
    serialised = []
    for part in lxml.html.fragments_fromstring(content) if content.strip() else []:
        if isinstance(part, str):  # text before the first element
            serialised.append(html.escape(part, quote=False))
            continue
        for image in part.iter("img"):
            if image.get("src") in uploaded:
                image.set("src", uploaded[image.get("src")])
        serialised.append(lxml.html.tostring(part, encoding="unicode"))
    return "".join(serialised)


def _load(url: str, settings: Settings, fetch: Fetch, what: str, kinds: tuple[str, ...], limit: int) -> LoadedImage:
    """Read the image (at most SOURCE_MAX_BYTES) and make it one WeChat takes (`convert`)."""
    local = _local_path(url, settings)
    data = _read_file(url, local, what, SOURCE_MAX_BYTES) if local else fetch(url, settings, what, SOURCE_MAX_BYTES)
    if len(data) > SOURCE_MAX_BYTES:
        raise InputError(f"WeChat {what} {url} is larger than {SOURCE_MAX_BYTES // (1024 * 1024)} MB, more than "
                         "any image worth converting")
    try:
        fitted, kind = fit(data, kinds, limit)
    except ConversionError as exc:
        raise InputError(f"WeChat {what} {url} {exc}") from None
    return LoadedImage(url, fitted, kind, hashlib.sha256(fitted).hexdigest())


def _local_path(url: str, settings: Settings) -> Path | None:
    """Map a site URL to its file under site_root, or None when it must be fetched."""
    site_root, prefix = settings.site.site_root, settings.site.base_url.rstrip("/") + "/"
    if not site_root or not url.startswith(prefix):
        return None
    relative = unquote(urlsplit(url).path[len(urlsplit(prefix).path):])
    root = Path(site_root).expanduser().resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise InputError(f"WeChat image {url} points outside site.site_root")
    return path


def _read_file(url: str, path: Path, what: str, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(limit + 1)
    except FileNotFoundError as exc:
        raise InputError(f"WeChat {what} {url} not found: no file {path}") from exc
    except OSError as exc:
        raise InputError(f"WeChat {what} {url} cannot be read from {path}: {exc.strerror}") from exc


def fetch_over_http(url: str, settings: Settings, what: str, limit: int) -> bytes:
    """GET the image, reading at most one byte past the limit, so a huge file is not downloaded."""
    try:
        with requests.get(url, timeout=settings.channels.wechat.timeout_seconds, stream=True) as reply:
            if reply.status_code >= 500 or reply.status_code == 429:
                raise TransientDeliveryError(f"fetching WeChat {what} {url}: HTTP {reply.status_code}")
            if reply.status_code != 200:
                raise InputError(f"WeChat {what} {url} not found: HTTP {reply.status_code}")
            data = bytearray()
            for chunk in reply.iter_content(_CHUNK):
                data += chunk
                if len(data) > limit:
                    break
            return bytes(data)
    except requests.RequestException as exc:
        raise TransientDeliveryError(f"fetching WeChat {what} {url} failed ({type(exc).__name__})") from exc
