"""Turn an issue file into an `Issue`: interpret the header fields and resolve Liquid leftovers.

Every header field is checked against its type here, once, with the line it is on: text fields
(title, author, permalink, description, cover, license) must be strings without control
characters (they end up in mail headers, URLs and API fields), `date` a date, `tags` and
`categories` a string or a list of strings, `draft` a boolean.
"""
from __future__ import annotations

import datetime as dt
import re
import unicodedata
from pathlib import Path
from typing import Any

from distributor.errors import InputError
from distributor.models import Issue
from distributor.render.liquid import resolve_liquid
from distributor.render.source import SourceFile, read_source
from distributor.settings import SiteSettings

# Jekyll names posts YYYY-MM-DD-slug; TinyLab adds the time: YYYY-MM-DD-HH-MM-SS-slug.
_DATED_NAME = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?:-(?P<time>\d{2}-\d{2}-\d{2}))?-(?P<slug>.+)$")
_TEXT_FIELDS = ("title", "author", "permalink", "description", "excerpt", "cover", "image", "license")
_NAME_FIELDS = ("tags", "categories", "category")
_KNOWN = {*_TEXT_FIELDS, *_NAME_FIELDS, "date", "draft"}
_DATE_FORMS = ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
# Line breaks and TABs are allowed in a description only (a folded YAML block); nowhere else.
_MULTILINE_FIELDS = ("description", "excerpt")


def load_issue(path: str | Path, site: SiteSettings, *, title: str | None = None) -> Issue:
    """Load an issue file; raise `InputError` with file and line for anything unusable. `title`
    (from --title) replaces the file's own title, and is the only one a file without a header has."""
    source = read_source(Path(path))
    where = str(source.path)
    fields = {key: _checked(key, value, source) for key, value in source.fields.items() if key in _KNOWN}
    if title is not None:
        title = _clean_text(title, "--title", None, None)
    title = title or fields.get("title")
    if not title:
        problem = ("front matter has no title" if source.fields else
                   "no front matter and no '# ' title line at the top")
        raise InputError(f"{problem}: add one, or give it with --title TEXT", path=where, line=1)
    if not source.body.strip():
        raise InputError("the issue has no body", path=where, line=source.body_first_line)
    body, liquid_warnings = resolve_liquid(source.body, site, title=title)
    warnings = tuple(f"{where}:{source.body_first_line + line - 1}: {message}"
                     for line, message in liquid_warnings)
    permalink = fields.get("permalink")
    return Issue(
        source_path=source.path,
        key=permalink or source.path.stem,
        content_hash=source.content_hash,
        title=title,
        body_markdown=body,
        body_first_line=source.body_first_line,
        author=fields.get("author"),
        date=fields.get("date") or _date_from_file_name(source.path),
        permalink=permalink,
        tags=fields.get("tags", ()),
        categories=fields.get("categories", fields.get("category", ())),
        license=fields.get("license"),
        draft=fields.get("draft", False),
        description=fields.get("description") or fields.get("excerpt"),
        cover=fields.get("cover") or fields.get("image"),
        extra={key: value for key, value in source.fields.items() if key not in _KNOWN},
        warnings=warnings,
    )


def legacy_key(issue: Issue) -> str | None:
    """Return the key earlier versions gave this issue when it differs from today's: a dated file
    without a permalink was known by its slug alone (`weekly` for `2024-06-10-weekly.md`)."""
    match = _DATED_NAME.match(issue.source_path.stem)
    if issue.permalink or not match:
        return None
    return match.group("slug")


def _checked(key: str, value: Any, source: SourceFile) -> Any:
    """Return the header field's value as the `Issue` holds it, or raise naming its line."""
    line = source.field_lines.get(key)
    where = str(source.path)
    if key in _TEXT_FIELDS:
        return _clean_text(value, key, where, line)
    if key in _NAME_FIELDS:
        return _names(value, key, where, line)
    if key == "date":
        return _date(value, where, line)
    return _draft(value, where, line)


def _clean_text(value: Any, key: str, where: str | None, line: int | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{key} must be text, not {_kind(value)} (put it in quotes)", path=where, line=line)
    text = value.strip()
    allowed = "\n\t" if key in _MULTILINE_FIELDS else ""
    bad = next((char for char in text if char not in allowed and unicodedata.category(char) in ("Cc", "Zl", "Zp")),
               None)
    if bad is not None:
        raise InputError(f"{key} contains the control character U+{ord(bad):04X} (a line break?): "
                         "it must be one line of text", path=where, line=line)
    return text or None


def _names(value: Any, key: str, where: str, line: int | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = value
    else:
        raise InputError(f"{key} must be a string or a list of strings, not {_kind(value)}", path=where, line=line)
    return tuple(text for item in items if (text := _clean_text(item, key, where, line)))


def _date(value: Any, where: str, line: int | None) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, str):
        raise InputError(f"date must be a date, not {_kind(value)}", path=where, line=line)
    text = value.strip()
    for form in _DATE_FORMS:
        try:
            return dt.datetime.strptime(text, form)
        except ValueError:
            continue
    raise InputError(f"date {text[:40]!r} is not a valid date YYYY-MM-DD [HH:MM[:SS]]", path=where, line=line)


def _draft(value: Any, where: str, line: int | None) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):   # a Pelican header's text
        return value.strip().lower() == "true"
    raise InputError(f"draft must be true or false, not {_kind(value)}", path=where, line=line)


def _date_from_file_name(path: Path) -> dt.datetime | None:
    match = _DATED_NAME.match(path.stem)
    if not match:
        return None
    stamp = match.group("date") + " " + (match.group("time") or "00-00-00").replace("-", ":")
    try:
        return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
    except ValueError as exc:
        raise InputError(f"the date in the file name ({stamp}) does not exist: {exc}; rename the file or "
                         "give a date in the front matter", path=str(path)) from exc


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (dt.date, dt.datetime)):
        return f"the date {value}"
    return f"the {type(value).__name__} {str(value)[:40]!r}" if value is not None else "empty"
