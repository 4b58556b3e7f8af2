"""Images WeChat would refuse, made into ones it takes: the same picture as a JPEG or PNG under the limit.

`media/uploadimg` takes JPEG and PNG under 1 MB; a cover (permanent material) JPEG, PNG, GIF or BMP of
at most 10 MB. GIF (its first frame), WebP, BMP and SVG (rasterised by resvg, at most `MAX_WIDTH`
wide) become PNG when they have transparency and JPEG otherwise; any image over the limit is scaled
down in steps, and a JPEG recompressed, until it fits. Pillow decodes at most `MAX_PIXELS`, so a
decompression bomb is an error, not a hang. The conversion is deterministic: the same source gives the
same bytes, so their SHA-256 finds the upload of an earlier run and a re-run uploads nothing.
"""
from __future__ import annotations

import io
import re

import resvg_py
from lxml import etree
from PIL import Image, UnidentifiedImageError

MAX_WIDTH = 1080            # a phone's screen at 3x is narrower; nothing wider is worth its bytes
MAX_PIXELS = 40_000_000
JPEG_QUALITY = 85
_SCALE_STEP = 0.8
_MAX_STEPS = 12             # 0.8 ** 12 is a fourteenth of the width: far past any limit met in practice
_SVG_DEFAULT_WIDTH = 800    # an SVG that gives no size of its own
_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(px)?\s*$")

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ConversionError(ValueError):
    """The bytes are no image Pillow or resvg can read, or cannot be brought under the limit."""


def image_kind(data: bytes) -> str | None:
    """jpg, png, gif, bmp, webp or svg by the bytes' own signature; None for anything else."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"GIF8"):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096].lower():
        return "svg"
    return None


def fit(data: bytes, kinds: tuple[str, ...], limit: int) -> tuple[bytes, str]:
    """Return (bytes, kind) of the image as one of `kinds` (jpg and png among them) of at most `limit`
    bytes: `data` itself when it is already, else converted."""
    kind = image_kind(data)
    if kind in kinds and len(data) <= limit:
        return data, kind
    if kind is None:
        raise ConversionError("not an image this distributor can read (JPEG, PNG, GIF, WebP, BMP or SVG)")
    picture = _rasterised(data) if kind == "svg" else _decoded(data)
    if picture.width > MAX_WIDTH:
        picture = picture.resize((MAX_WIDTH, max(1, round(picture.height * MAX_WIDTH / picture.width))),
                                 Image.Resampling.LANCZOS)
    transparent = picture.mode == "RGBA"          # `_decoded` gives RGBA where there is transparency, else RGB
    for _ in range(_MAX_STEPS):
        encoded = _encode(picture, transparent)
        if len(encoded) <= limit:
            return encoded, "png" if transparent else "jpg"
        picture = picture.resize((max(1, round(picture.width * _SCALE_STEP)),
                                  max(1, round(picture.height * _SCALE_STEP))), Image.Resampling.LANCZOS)
    raise ConversionError(f"cannot be made smaller than {limit} bytes")


def _decoded(data: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.seek(0)                      # an animation: its first frame
            picture = opened.convert("RGBA" if _has_alpha(opened) else "RGB")
    except Image.DecompressionBombError:
        raise ConversionError(f"has more than {MAX_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ConversionError(f"cannot be read as an image ({exc.__class__.__name__})") from None
    return picture


def _has_alpha(picture: Image.Image) -> bool:
    return picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info)


def _rasterised(data: bytes) -> Image.Image:
    """Draw the SVG at its own width (at most MAX_WIDTH, its height within MAX_PIXELS). Its size is read
    first by a parser that resolves no entity and loads nothing, so a huge or hostile one is refused
    before resvg allocates its canvas."""
    width, height = _svg_size(data)
    scale = min(1.0, MAX_WIDTH / width, (MAX_PIXELS / (width * height)) ** 0.5)
    try:
        png = bytes(resvg_py.svg_to_bytes(svg_string=data.decode("utf-8"), width=max(1, round(width * scale))))
    except (UnicodeDecodeError, ValueError, RuntimeError) as exc:
        raise ConversionError(f"is an SVG that cannot be drawn ({exc.__class__.__name__})") from None
    return _decoded(png)


def _svg_size(data: bytes) -> tuple[float, float]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise ConversionError(f"is an SVG that cannot be read ({exc.msg})") from None
    box = [float(number) for number in re.findall(r"-?[0-9]*\.?[0-9]+", root.get("viewBox") or "")]
    sizes = [_LENGTH.match(root.get(name) or "") for name in ("width", "height")]
    width = float(sizes[0].group(1)) if sizes[0] else (box[2] if len(box) == 4 else _SVG_DEFAULT_WIDTH)
    height = float(sizes[1].group(1)) if sizes[1] else (box[3] if len(box) == 4 else width * 0.75)
    if width <= 0 or height <= 0:
        raise ConversionError("is an SVG without a usable size")
    return width, height


def _encode(picture: Image.Image, transparent: bool) -> bytes:
    out = io.BytesIO()
    if transparent:
        picture.save(out, "PNG", optimize=True)
    else:
        picture.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
    return out.getvalue()
