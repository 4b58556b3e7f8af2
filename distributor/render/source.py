"""Read an issue file and split it into its header fields and its Markdown body.

Three header shapes are real: Jekyll YAML front matter between `---` fences, a Pelican
`Key: value` block (This Week in Rust), and none at all, the title then being the first
`# ` heading (Python 潮流周刊), or `--title`. A UTF-8 BOM, CRLF line ends and trailing blanks
or TABs after YAML values (PyYAML rejects a TAB there) are tolerated.

The file is untrusted input, read with bounds (`bounded`): a regular file of at most
`MAX_ISSUE_BYTES` (it is never read whole past that), and front matter without YAML aliases (an
alias bomb expands a few lines into gigabytes), at most `MAX_FRONT_MATTER_BYTES` long and nested
at most `MAX_FRONT_MATTER_DEPTH` levels.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distributor.errors import InputError
from distributor.validate.bounded import BoundedSafeLoader, read_regular_file

MAX_ISSUE_BYTES = 2 * 1024 * 1024
MAX_FRONT_MATTER_DEPTH = 10
MAX_FRONT_MATTER_BYTES = 64 * 1024      # real ones have a few hundred; PyYAML needs seconds per megabyte
_FENCE = "---"
_PELICAN_LINE = re.compile(r"^([A-Za-z][A-Za-z_-]*):[ \t]*(.*)$")
_ATX_TITLE = re.compile(r"^#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")


@dataclass(frozen=True)
class SourceFile:
    """An issue file's header fields and body, before any field is interpreted. `field_lines`
    gives the line of each header field, for messages; `fields` is empty when the file has no
    header at all (no front matter and no `# ` title line)."""

    path: Path
    fields: dict[str, Any]
    body: str
    body_first_line: int
    content_hash: str
    field_lines: dict[str, int] = field(default_factory=dict)


def read_source(path: Path) -> SourceFile:
    """Read `path` and split off its header; raise `InputError` naming the file and line."""
    raw = read_regular_file(path, MAX_ISSUE_BYTES, "issue")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError("not valid UTF-8", path=str(path), line=line) from exc
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines[0].rstrip() == _FENCE:
        fields, field_lines, body_start = _yaml_header(lines, path)
    elif (pelican := _pelican_header(lines)) is not None:
        fields, field_lines, body_start = pelican
    else:
        fields, field_lines, body_start = _title_from_heading(lines)
    body = "\n".join(lines[body_start:])
    return SourceFile(path, fields, body, body_start + 1, hashlib.sha256(raw).hexdigest(), field_lines)


def _yaml_header(lines: list[str], path: Path) -> tuple[dict[str, Any], dict[str, int], int]:
    for end in range(1, len(lines)):
        if lines[end].rstrip() in (_FENCE, "..."):
            break
    else:
        raise InputError("front matter opened with '---' is never closed", path=str(path), line=1)
    yaml_text = "\n".join(line.rstrip() for line in lines[1:end])
    if len(yaml_text.encode("utf-8")) > MAX_FRONT_MATTER_BYTES:
        raise InputError(f"the front matter is over {MAX_FRONT_MATTER_BYTES // 1024} KB (lines 2-{end}): "
                         "it holds the issue's fields, not its text", path=str(path), line=1)
    loader = BoundedSafeLoader(yaml_text, max_depth=MAX_FRONT_MATTER_DEPTH)
    try:
        node = loader.get_single_node()
        if node is not None and not isinstance(node, yaml.MappingNode):
            raise InputError("front matter must be a mapping of keys to values", path=str(path),
                             line=node.start_mark.line + 2)
        fields = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InputError(f"invalid front matter: {problem}", path=str(path), line=line) from exc
    finally:
        loader.dispose()
    field_lines = {str(key.value): key.start_mark.line + 2 for key, _ in (node.value if node is not None else ())}
    return {str(key): value for key, value in fields.items()}, field_lines, end + 1


def _pelican_header(lines: list[str]) -> tuple[dict[str, Any], dict[str, int], int] | None:
    fields: dict[str, Any] = {}
    field_lines: dict[str, int] = {}
    for index, line in enumerate(lines):
        if not line.strip():
            return (fields, field_lines, index + 1) if "title" in fields else None
        match = _PELICAN_LINE.match(line)
        if not match:
            return None
        key, value = match.group(1).lower(), match.group(2).strip()
        fields[key] = [part.strip() for part in value.split(",") if part.strip()] \
            if key in ("tags", "category", "categories") else value
        field_lines[key] = index + 1
    return None


def _title_from_heading(lines: list[str]) -> tuple[dict[str, Any], dict[str, int], int]:
    """Take the title from the first `# ` heading and start the body after it; without one the
    header is empty and the whole file is the body (the title must then come from --title)."""
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        match = _ATX_TITLE.match(line)
        if match:
            return {"title": match.group(1)}, {"title": index + 1}, index + 1
        break
    return {}, {}, 0
