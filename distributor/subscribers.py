"""Read a subscriber file (CSV or YAML) one row at a time, reporting bad rows by line.

A CSV file needs a header with an `email` column (`name` and `tags` are optional; tags are
separated by spaces or semicolons). A YAML file is a list of mappings with the same keys. Both
are streamed: a list of 100,000 subscribers is never held whole, only the set of addresses
seen, to drop duplicates (compared case-insensitively).
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml

from .errors import InputError

# ASCII only: the sender has no SMTPUTF8, so an international domain must be written as punycode.
_ADDRESS = re.compile(
    r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+"
    r"(?:[a-z]{2,}|xn--[a-z0-9-]+)", re.ASCII | re.IGNORECASE)
_NULLS = {"", "~", "null", "Null", "NULL"}


class _Alias:
    """Stands for a YAML alias (`*name`): rows are read one at a time, so anchors are not kept."""


@dataclass(frozen=True)
class Subscriber:
    address: str
    name: str | None
    tags: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class BadRow:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def read_subscribers(path: str | Path) -> Iterator[Subscriber | BadRow]:
    """Yield each row as a `Subscriber`, or a `BadRow` saying why it is skipped. A file that
    cannot be read or has no email column raises `InputError` before the first row; a file
    that is not UTF-8 text or not valid CSV or YAML raises it naming the line."""
    path = Path(path)
    rows = _yaml_rows(path) if path.suffix.lower() in (".yaml", ".yml") else _csv_rows(path)
    seen: set[str] = set()
    for line, row in rows:
        problem = _shape_problem(row)
        address = str(row.get("email") or "").strip()
        if problem is None:
            problem = _address_problem(address)
        if problem is None and address.lower() in seen:
            problem = f"duplicate address {address}"
        if problem is not None:
            yield BadRow(str(path), line, problem)
            continue
        seen.add(address.lower())
        name = " ".join(str(row.get("name") or "").split()) or None
        tags = row.get("tags") or ()
        if isinstance(tags, str):
            tags = re.split(r"[;\s]+", tags.strip())
        yield Subscriber(address, name, tuple(tag for tag in tags if tag), line)


def _shape_problem(row: dict) -> str | None:
    """Say why a YAML row's email, name or tags is not what a subscriber can have, else None."""
    for key in ("email", "name"):
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key} must be text, not {_kind(value)}"
    tags = row.get("tags")
    if tags is not None and not isinstance(tags, str) and not (
            isinstance(tags, list) and all(isinstance(tag, str) or tag is None for tag in tags)):
        return "tags must be text or a list of text"
    return None


def _address_problem(address: str) -> str | None:
    if not address.isascii():
        return f"non-ASCII address {address!r}: SMTPUTF8 is not supported"
    if not _ADDRESS.fullmatch(address) or len(address) > 254 or ".." in address:
        return f"invalid address {address!r}"
    return None


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list"}.get(type(value), "an alias")


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    stream = _open(path)
    with stream:
        reader = csv.DictReader(stream)
        try:
            fields = [name.strip().lower() for name in reader.fieldnames or ()]
            if "email" not in fields:
                raise InputError("subscriber file has no 'email' column", path=str(path), line=1)
            reader.fieldnames = fields
            for row in reader:
                yield reader.line_num, row
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, exc) from exc
        except csv.Error as exc:
            raise InputError(f"invalid CSV: {exc}", path=str(path), line=reader.reader.line_num or 1) from exc


def _yaml_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Walk the YAML events so that only one row's mapping is built at a time."""
    stream = _open(path)
    with stream:
        events = yaml.parse(stream, Loader=yaml.SafeLoader)
        try:
            next(events), next(events)                      # stream start, document start (or stream end)
            if not isinstance(next(events, None), yaml.SequenceStartEvent):
                raise InputError("subscriber file must be a list of {email, name, tags}", path=str(path))
            for event in events:
                if isinstance(event, yaml.SequenceEndEvent):
                    return
                if not isinstance(event, yaml.MappingStartEvent):
                    raise InputError("each subscriber must be a mapping", path=str(path),
                                     line=event.start_mark.line + 1)
                row = _node(event, events)
                yield event.start_mark.line + 1, {key.lower(): value for key, value in row.items()}
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, exc) from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise InputError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path=str(path),
                             line=mark.line + 1 if mark else None) from exc


def _node(start: yaml.Event, events: Iterator[yaml.Event]) -> object:
    """Build the value that begins with `start` from the events that follow it, nested values whole."""
    if isinstance(start, yaml.ScalarEvent):
        return None if start.implicit[0] and start.value in _NULLS else start.value
    if isinstance(start, yaml.SequenceStartEvent):
        items = []
        while not isinstance(event := next(events), yaml.SequenceEndEvent):
            items.append(_node(event, events))
        return items
    if isinstance(start, yaml.MappingStartEvent):
        mapping: dict = {}
        while not isinstance(event := next(events), yaml.MappingEndEvent):
            key = _node(event, events)
            mapping[key if isinstance(key, str) else repr(key)] = _node(next(events), events)
        return mapping
    return _Alias()


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


def _open(path: Path):
    try:
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"cannot read subscriber file: {exc.strerror or exc}", path=str(path)) from exc
