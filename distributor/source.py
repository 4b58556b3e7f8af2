"""Read an issue file and split it into its header fields and its Markdown body.

Three header shapes are real: Jekyll YAML front matter between `---` fences, a Pelican
`Key: value` block (This Week in Rust), and none at all, the title then being the first
`# ` heading (Python 潮流周刊). A UTF-8 BOM, CRLF line ends and trailing blanks or TABs
after YAML values (PyYAML rejects a TAB there) are tolerated.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError

_FENCE = "---"
_PELICAN_LINE = re.compile(r"^([A-Za-z][A-Za-z_-]*):[ \t]*(.*)$")
_ATX_TITLE = re.compile(r"^#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")


@dataclass(frozen=True)
class SourceFile:
    """An issue file's header fields and body, before any field is interpreted."""

    path: Path
    fields: dict[str, Any]
    body: str
    body_first_line: int
    content_hash: str


def read_source(path: Path) -> SourceFile:
    """Read `path` and split off its header; raise `InputError` naming the file and line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read issue: {exc.strerror or exc}", path=str(path)) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError("not valid UTF-8", path=str(path), line=line) from exc
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines[0].rstrip() == _FENCE:
        fields, body_start = _yaml_header(lines, path)
    elif (pelican := _pelican_header(lines)) is not None:
        fields, body_start = pelican
    else:
        fields, body_start = _title_from_heading(lines, path)
    body = "\n".join(lines[body_start:])
    return SourceFile(path, fields, body, body_start + 1, hashlib.sha256(raw).hexdigest())


def _yaml_header(lines: list[str], path: Path) -> tuple[dict[str, Any], int]:
    for end in range(1, len(lines)):
        if lines[end].rstrip() in (_FENCE, "..."):
            break
    else:
        raise InputError("front matter opened with '---' is never closed", path=str(path), line=1)
    yaml_text = "\n".join(line.rstrip() for line in lines[1:end])
    try:
        fields = yaml.safe_load(yaml_text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InputError(f"invalid front matter: {problem}", path=str(path), line=line) from exc
    if fields is None:
        fields = {}
    if not isinstance(fields, dict):
        raise InputError("front matter must be a mapping of keys to values", path=str(path), line=2)
    return {str(key): value for key, value in fields.items()}, end + 1


def _pelican_header(lines: list[str]) -> tuple[dict[str, Any], int] | None:
    fields: dict[str, Any] = {}
    for index, line in enumerate(lines):
        if not line.strip():
            return (fields, index + 1) if "title" in fields else None
        match = _PELICAN_LINE.match(line)
        if not match:
            return None
        key, value = match.group(1).lower(), match.group(2).strip()
        fields[key] = [part.strip() for part in value.split(",") if part.strip()] \
            if key in ("tags", "category", "categories") else value
    return None


def _title_from_heading(lines: list[str], path: Path) -> tuple[dict[str, Any], int]:
    """Take the title from the first `# ` heading and start the body after it."""
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        match = _ATX_TITLE.match(line)
        if match:
            return {"title": match.group(1)}, index + 1
        break
    raise InputError("no front matter and no '# ' title line at the top", path=str(path), line=1)
