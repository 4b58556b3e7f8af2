"""Read a subscriber file (CSV or YAML) one row at a time, reporting bad rows by line.

A CSV file needs a header with an `email` column (`name` and `tags` are optional; tags are
separated by spaces or semicolons). A YAML file is a list of mappings with the same keys. Both
are streamed: a list of 100,000 subscribers is never held whole, only the set of addresses
seen, to drop duplicates (compared case-insensitively).

The columns `subscribers export` writes are read too, so that a store exported imports back as it
was: `language` (zh or en), `list` (the list the row is about), `status` (one of `STATUSES`) and
`format` (the row channel the reader reads the list through); `since` is the store's own and not
read. An empty cell says nothing, except in the `list` column: a reader on no list. One address may
be on several lists, one row each: a duplicate is the same address twice on one list.

Two kinds of fault. A row that cannot be mailed (an invalid or non-ASCII address, a duplicate, a
name that is not text) or whose language, list, status or format is not one the store knows is a
`BadRow`: reported and skipped. A fault of the file itself means the rest of it cannot be trusted,
so it raises `InputError` naming the file and line where it is met: not a regular file or over
`MAX_FILE_BYTES`, not UTF-8, a NUL byte, an unterminated quote or other invalid CSV, a row over
`MAX_ROW_CHARACTERS` or `MAX_COLUMNS`, YAML that is invalid, holds an alias or is nested deeper
than `bounded.MAX_YAML_DEPTH`. Publish reads the file to its end before it plans anything, so such
a file gets nobody mailed.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

import yaml

from distributor.audience.standing import LANGUAGES, STATUSES
from distributor.errors import InputError
from distributor.settings import list_name_problem
from distributor.validate.addresses import address_problem, text_problem
from distributor.validate.bounded import MAX_YAML_DEPTH, open_regular_file

# Bounds of a subscriber file, far above any real list (100 MB is some two million rows).
MAX_FILE_BYTES = 100 * 1024 * 1024
MAX_ROW_CHARACTERS = 8192
MAX_COLUMNS = 64
_NULLS = {"", "~", "null", "Null", "NULL"}
_NUL_MESSAGE = "holds a NUL byte, so it is not a text file; save it as UTF-8 CSV or YAML"
_FORMAT = re.compile(r"[a-z][a-z0-9_-]{0,31}")     # a row channel's name, as distributor/channel.py has it
_STANDING_KEYS = ("list", "status", "format", "language")
_Standing = tuple[str | None, str | None, str | None, str | None]       # a row's values of _STANDING_KEYS


@dataclass(frozen=True)
class Subscriber:
    """A good row. `list` is the list it puts the reader on: the row's own, else the `list_name` it
    was read with, None when the row's list cell is empty (a reader on no list). `status`, `format` and
    `language` are None when the row does not give them."""

    address: str
    name: str | None
    tags: tuple[str, ...]
    line: int
    list: str | None = None
    status: str | None = None
    format: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class BadRow:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def read_subscribers(path: str | Path, *, list_name: str | None = None) -> Iterator[Subscriber | BadRow]:
    """Yield each row as a `Subscriber`, or a `BadRow` saying why it is skipped; a row that names no
    list (no `list` column or key) is on `list_name`. A file that cannot be read, is not a regular
    file within `MAX_FILE_BYTES` or has no email column raises `InputError` before the first row; a
    fault of the file met further down (see the module docstring) raises it there, naming the line."""
    path = Path(path)
    rows = _yaml_rows(path) if path.suffix.lower() in (".yaml", ".yml") else _csv_rows(path)
    seen: set[str] = set()
    plain: _Standing = (list_name, None, None, None)        # a row that gives no list, status, format, language
    for line, row in rows:
        problem = _shape_problem(row)
        address = str(row.get("email") or "").strip()
        if problem is None:
            problem = address_problem(address)
        # Only a file with the export's columns pays for reading them.
        standing = plain if row.keys().isdisjoint(_STANDING_KEYS) else _standing(row, list_name)
        if isinstance(standing, str):
            problem, standing = problem or standing, plain
        # A reader on several lists is one row per list: the same address on another list is no duplicate.
        on, key = standing[0], address.lower()
        if on is not None and on != list_name:
            key = f"{key} {on}"
        if problem is None and key in seen:
            problem = f"duplicate address {address}" + (f" on {on}" if on and "list" in row else "")
        if problem is not None:
            yield BadRow(str(path), line, problem)
            continue
        seen.add(key)
        name = " ".join(str(row.get("name") or "").split()) or None
        tags = row.get("tags") or ()
        if isinstance(tags, str):
            tags = re.split(r"[;\s]+", tags.strip())
        yield Subscriber(address, name, tuple(tag for tag in tags if tag), line, *standing)


def _standing(row: dict, list_name: str | None) -> _Standing | str:
    """Return the row's (list, status, format, language), or a string saying why one is not what the
    store can hold."""
    values: dict[str, str | None] = {}
    for key in _STANDING_KEYS:
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key} must be text, not {_kind(value)}"
        values[key] = (value.strip() or None) if value else None
    given_list, status, format, language = (values[key] for key in _STANDING_KEYS)
    if given_list and (problem := list_name_problem(given_list)):
        return f"list {problem}"
    if status and status not in STATUSES:
        return f"status {status!r} is not one of {', '.join(STATUSES)}"
    if format and not _FORMAT.fullmatch(format):
        return f"format {format!r} is not a channel name (lower-case letters, digits, - and _, such as email)"
    if language and language not in LANGUAGES:
        return f"language {language!r} is not one of {', '.join(LANGUAGES)}"
    if "list" in row and not given_list and (status or format):
        return "a status or format needs a list: the list is empty"
    return (given_list if "list" in row else list_name), status, format, language


def _shape_problem(row: dict) -> str | None:
    """Say why a row's email, name or tags is not what a subscriber can have, else None."""
    for key in ("email", "name"):
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key} must be text, not {_kind(value)}"
    name = row.get("name")
    if name and (problem := text_problem(" ".join(name.split()))):
        return f"name {problem}"
    tags = row.get("tags")
    if tags is not None and not isinstance(tags, str) and not (
            isinstance(tags, list) and all(isinstance(tag, str) or tag is None for tag in tags)):
        return "tags must be text or a list of text"
    return None


_KINDS: dict[type, str] = {dict: "a mapping", list: "a list"}


def _kind(value: object) -> str:
    return _KINDS.get(type(value), "a value of another kind")


class _CsvLines:
    """The physical lines of a CSV file, checked as the csv reader takes them: no NUL byte, and no
    record (one row, maybe over several lines inside quotes) longer than `MAX_ROW_CHARACTERS`."""

    def __init__(self, stream: TextIO, path: Path):
        self.stream = stream
        self.path = path
        self.number = 0               # lines read so far
        self.record_start = 1         # the first line of the record being read
        self._record_characters = 0

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        line = self.stream.readline(MAX_ROW_CHARACTERS + 1)    # a line without an end is never read whole
        if not line:
            raise StopIteration
        self.number += 1
        if "\0" in line:
            raise InputError(_NUL_MESSAGE, path=str(self.path), line=self.number)
        self._record_characters += len(line)
        if self._record_characters > MAX_ROW_CHARACTERS:
            raise InputError(f"a row longer than {MAX_ROW_CHARACTERS:,} characters (is a quote left open?)",
                             path=str(self.path), line=self.record_start)
        return line

    def next_record(self) -> None:
        self.record_start = self.number + 1
        self._record_characters = 0


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (last line of the row, {column: value}) per row; blank lines are skipped."""
    with _open(path) as stream:
        lines = _CsvLines(stream, path)
        reader = csv.reader(lines, strict=True)     # strict: `"a" b` or an unclosed quote is an error
        try:
            fields = [name.strip().lower() for name in next(reader, ())]
            if "email" not in fields:
                raise InputError("subscriber file has no 'email' column", path=str(path), line=1)
            _check_columns(fields, path, lines.number)
            lines.next_record()
            for row in reader:
                _check_columns(row, path, lines.number)
                if row:
                    # a short row's last columns are empty; a long row's extra fields have no name
                    if len(row) < len(fields):
                        row += [""] * (len(fields) - len(row))
                    yield lines.number, dict(zip(fields, row, strict=False))
                lines.next_record()
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, exc) from exc
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise InputError("a quoted field is never closed (unterminated quote)", path=str(path),
                                 line=lines.record_start) from exc
            raise InputError(f"invalid CSV: {exc}", path=str(path), line=lines.number or 1) from exc


def _check_columns(row: list[str], path: Path, line: int) -> None:
    if len(row) > MAX_COLUMNS:
        raise InputError(f"a row of {len(row)} columns; at most {MAX_COLUMNS} are read", path=str(path), line=line)


def _yaml_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Walk the YAML events so that only one row's mapping is built at a time."""
    with _open(path) as stream:
        events = yaml.parse(_NulCheckedText(stream, path), Loader=yaml.SafeLoader)
        try:
            next(events), next(events)                      # stream start, document start (or stream end)
            if not isinstance(next(events, None), yaml.SequenceStartEvent):
                raise InputError("subscriber file must be a list of {email, name, tags}", path=str(path))
            for event in events:
                if isinstance(event, yaml.SequenceEndEvent):
                    return
                start = _start(event)
                if not isinstance(event, yaml.MappingStartEvent):
                    raise InputError("each subscriber must be a mapping", path=str(path), line=start.line + 1)
                line = start.line + 1
                row = _mapping(events, _RowBound(path, line, start.index), 2)
                yield line, {key.lower(): value for key, value in row.items()}
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, exc) from exc
        except yaml.YAMLError as exc:
            marked = exc if isinstance(exc, yaml.MarkedYAMLError) else None
            mark = marked.problem_mark if marked else None
            problem = (marked and marked.problem) or str(exc).splitlines()[0]
            raise InputError(f"invalid YAML: {problem}", path=str(path), line=mark.line + 1 if mark else None) from exc


@dataclass(frozen=True)
class _RowBound:
    """Where a YAML row starts, to refuse it once it spans more than `MAX_ROW_CHARACTERS`."""

    path: Path
    line: int
    start_index: int

    def check(self, event: yaml.Event) -> None:
        if _end(event).index - self.start_index > MAX_ROW_CHARACTERS:
            raise InputError(f"a row longer than {MAX_ROW_CHARACTERS:,} characters", path=str(self.path),
                             line=self.line)


def _node(start: yaml.Event, events: Iterator[yaml.Event], bound: _RowBound, depth: int) -> object:
    """Build the value that begins with `start` from the events that follow it, nested values whole;
    `depth` counts the levels from the top of the document (the list of rows is level 1)."""
    bound.check(start)
    if isinstance(start, yaml.AliasEvent):
        raise InputError(f"YAML aliases (*{start.anchor}) are not allowed", path=str(bound.path),
                         line=_start(start).line + 1)
    if depth > MAX_YAML_DEPTH:
        raise InputError(f"nested deeper than {MAX_YAML_DEPTH} levels", path=str(bound.path),
                         line=_start(start).line + 1)
    if isinstance(start, yaml.ScalarEvent):
        return None if start.implicit[0] and start.value in _NULLS else start.value
    if isinstance(start, yaml.SequenceStartEvent):
        items = []
        while not isinstance(event := next(events), yaml.SequenceEndEvent):
            items.append(_node(event, events, bound, depth + 1))
        return items
    return _mapping(events, bound, depth)


def _mapping(events: Iterator[yaml.Event], bound: _RowBound, depth: int) -> dict[str, object]:
    """Build the mapping whose start event (at level `depth`) was just taken from `events`."""
    mapping: dict[str, object] = {}
    while not isinstance(event := next(events), yaml.MappingEndEvent):
        key = _node(event, events, bound, depth + 1)
        mapping[key if isinstance(key, str) else repr(key)] = _node(next(events), events, bound, depth + 1)
    bound.check(event)
    return mapping


class _Mark(Protocol):
    """A place in the YAML text; PyYAML's marks and libyaml's have these."""

    line: int       # from 0
    index: int      # characters from the start


def _start(event: yaml.Event) -> _Mark:
    assert event.start_mark is not None, "the parser marks every event it makes"
    return event.start_mark


def _end(event: yaml.Event) -> _Mark:
    assert event.end_mark is not None, "the parser marks every event it makes"
    return event.end_mark


class _NulCheckedText:
    """A text stream for PyYAML that refuses a NUL byte with its line (PyYAML's own refusal names no line)."""

    def __init__(self, stream: TextIO, path: Path):
        self.stream = stream
        self.name = str(path)
        self._lines_before = 0

    def read(self, size: int = -1) -> str:
        chunk = self.stream.read(size)
        if "\0" in chunk:
            line = self._lines_before + chunk.count("\n", 0, chunk.index("\0")) + 1
            raise InputError(_NUL_MESSAGE, path=self.name, line=line)
        self._lines_before += chunk.count("\n")
        return chunk


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> InputError:
    return InputError(f"not UTF-8 text ({exc.reason}); save the file as UTF-8", path=str(path),
                      line=_first_undecodable_line(path))


def _first_undecodable_line(path: Path) -> int | None:
    """Return the number of the first line that is not UTF-8. The text layer decodes ahead in
    chunks, so the reader's own line count does not say where the bad bytes are."""
    with path.open("rb") as stream:
        for number, line in enumerate(stream, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def _open(path: Path) -> TextIO:
    return io.TextIOWrapper(open_regular_file(path, MAX_FILE_BYTES, "subscriber file"),
                            encoding="utf-8-sig", newline="")
