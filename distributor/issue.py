"""Turn an issue file into an `Issue`: interpret the header fields and resolve Liquid leftovers."""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from .errors import InputError
from .liquid import resolve_liquid
from .models import Issue
from .settings import SiteSettings
from .source import read_source

# Jekyll names posts YYYY-MM-DD-slug; TinyLab adds the time: YYYY-MM-DD-HH-MM-SS-slug.
_DATED_NAME = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?:-(?P<time>\d{2}-\d{2}-\d{2}))?-(?P<slug>.+)$")
_KNOWN = {"title", "author", "date", "permalink", "tags", "categories", "category", "license",
          "draft", "description", "excerpt", "cover", "image"}


def load_issue(path: str | Path, site: SiteSettings) -> Issue:
    """Load an issue file; raise `InputError` with file and line for anything unusable."""
    source = read_source(Path(path))
    fields = source.fields
    where = str(source.path)
    title = _text(fields.get("title"))
    if not title:
        raise InputError("front matter has no title", path=where, line=1)
    if not source.body.strip():
        raise InputError("the issue has no body", path=where, line=source.body_first_line)
    body, warnings = resolve_liquid(source.body, site, title=title)
    warnings = tuple(f"{where}:{source.body_first_line + line - 1}: {message}"
                     for line, message in warnings)
    name_date, slug = _parse_file_name(source.path)
    permalink = _text(fields.get("permalink"))
    return Issue(
        source_path=source.path,
        key=permalink or slug,
        content_hash=source.content_hash,
        title=title,
        body_markdown=body,
        body_first_line=source.body_first_line,
        author=_text(fields.get("author")),
        date=_date(fields.get("date"), where) or name_date,
        permalink=permalink,
        tags=_names(fields.get("tags")),
        categories=_names(fields.get("categories", fields.get("category"))),
        license=_text(fields.get("license")),
        draft=fields.get("draft") is True or str(fields.get("draft")).lower() == "true",
        description=_text(fields.get("description") or fields.get("excerpt")),
        cover=_text(fields.get("cover") or fields.get("image")),
        extra={key: value for key, value in fields.items() if key not in _KNOWN},
        warnings=warnings,
    )


def _parse_file_name(path: Path) -> tuple[dt.datetime | None, str]:
    match = _DATED_NAME.match(path.stem)
    if not match:
        return None, path.stem
    stamp = match.group("date") + " " + (match.group("time") or "00-00-00").replace("-", ":")
    return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S"), match.group("slug")


def _date(value: Any, where: str) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    text = str(value).strip()
    for form in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, form)
        except ValueError:
            continue
    raise InputError(f"date {text!r} is not YYYY-MM-DD [HH:MM[:SS]]", path=where)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part for part in value.replace(",", " ").split() if part)
    if isinstance(value, (list, tuple)):
        return tuple(str(item).strip() for item in value if str(item).strip())
    return (str(value),)
