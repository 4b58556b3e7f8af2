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

_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\u0080-\uffff-]+@"
    r"(?:[A-Za-z0-9\u0080-\uffff](?:[A-Za-z0-9\u0080-\uffff-]*[A-Za-z0-9\u0080-\uffff])?\.)+"
    r"[A-Za-z\u0080-\uffff]{2,}$")


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
    cannot be read or has no email column raises `InputError` before the first row."""
    path = Path(path)
    rows = _yaml_rows(path) if path.suffix.lower() in (".yaml", ".yml") else _csv_rows(path)
    seen: set[str] = set()
    for line, row in rows:
        address = str(row.get("email") or "").strip()
        if not _ADDRESS.match(address) or len(address) > 254 or ".." in address:
            yield BadRow(str(path), line, f"invalid address {address!r}")
            continue
        folded = address.lower()
        if folded in seen:
            yield BadRow(str(path), line, f"duplicate address {address}")
            continue
        seen.add(folded)
        name = " ".join(str(row.get("name") or "").split()) or None
        tags = row.get("tags") or ()
        if isinstance(tags, str):
            tags = re.split(r"[;\s]+", tags.strip())
        yield Subscriber(address, name, tuple(str(tag) for tag in tags if str(tag)), line)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    stream = _open(path)
    with stream:
        reader = csv.DictReader(stream)
        fields = [name.strip().lower() for name in reader.fieldnames or ()]
        if "email" not in fields:
            raise InputError("subscriber file has no 'email' column", path=str(path), line=1)
        reader.fieldnames = fields
        for row in reader:
            yield reader.line_num, row


def _yaml_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Walk the YAML events so that only one row's mapping is built at a time."""
    stream = _open(path)
    with stream:
        events = yaml.parse(stream, Loader=yaml.SafeLoader)
        try:
            next(events), next(events)                      # stream start, document start
            if not isinstance(next(events), yaml.SequenceStartEvent):
                raise InputError("subscriber file must be a list of {email, name, tags}", path=str(path))
            for event in events:
                if isinstance(event, yaml.SequenceEndEvent):
                    return
                if not isinstance(event, yaml.MappingStartEvent):
                    raise InputError("each subscriber must be a mapping", path=str(path),
                                     line=event.start_mark.line + 1)
                yield event.start_mark.line + 1, _mapping(events)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise InputError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path=str(path),
                             line=mark.line + 1 if mark else None) from exc


def _mapping(events: Iterator[yaml.Event]) -> dict:
    row: dict = {}
    key = None
    for event in events:
        if isinstance(event, yaml.MappingEndEvent):
            return row
        if isinstance(event, yaml.SequenceStartEvent):
            items = []
            for item in events:
                if isinstance(item, yaml.SequenceEndEvent):
                    break
                items.append(getattr(item, "value", ""))
            row[key], key = items, None
        elif isinstance(event, yaml.ScalarEvent):
            if key is None:
                key = event.value.lower()
            else:
                row[key], key = event.value, None
    return row


def _open(path: Path):
    try:
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"cannot read subscriber file: {exc.strerror or exc}", path=str(path)) from exc
