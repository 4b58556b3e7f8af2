"""Untrusted files read within bounds: a regular file of at most N bytes, and YAML without aliases
nested at most N deep.

`open("/dev/zero")` reads for ever, a FIFO blocks on open, and PyYAML's safe loader expands an
alias bomb (a few lines naming each other) into gigabytes and recurses once per nesting level. So
a file from outside is opened without blocking and taken only when it is a regular file within its
size bound, and YAML is composed by a loader that refuses aliases and deep nesting where it meets
them and turns a value the constructor cannot make (the date 2024-02-30) into a YAML error with
its line, like any other.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from distributor.errors import InputError

# Deeper than any settings file, front matter or subscriber row needs; far below Python's recursion limit.
MAX_YAML_DEPTH = 20


def open_regular_file(path: Path, max_bytes: int, what: str) -> BinaryIO:
    """Open `path` for reading in binary if it is a regular file of at most `max_bytes` bytes;
    otherwise raise `InputError` naming the path (`what` says what the file is for)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)    # a FIFO must not block the open
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}", path=str(path)) from exc
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise InputError(f"{what} is not a regular file", path=str(path))
        if status.st_size > max_bytes:
            raise InputError(f"{what} is larger than {max_bytes:,} bytes", path=str(path))
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_regular_file(path: Path, max_bytes: int, what: str) -> bytes:
    """Return the bytes of `path`, a regular file of at most `max_bytes` bytes (checked again while
    reading, as the file may grow after it was opened)."""
    with open_regular_file(path, max_bytes, what) as stream:
        try:
            data = stream.read(max_bytes + 1)
        except OSError as exc:
            raise InputError(f"cannot read {what}: {exc.strerror or exc}", path=str(path)) from exc
    if len(data) > max_bytes:
        raise InputError(f"{what} is larger than {max_bytes:,} bytes", path=str(path))
    return data


class BoundedSafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses aliases and nesting deeper than `max_depth`; every
    refusal is a `yaml.YAMLError` with the mark of the offending node."""

    def __init__(self, stream: str, max_depth: int = MAX_YAML_DEPTH) -> None:
        super().__init__(stream)
        self._depth = 0
        self._max_depth = max_depth

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            # This pure-Python loader's events carry yaml.Mark (the stubs allow libyaml's marks too).
            mark = event.start_mark if isinstance(event.start_mark, yaml.Mark) else None
            raise ComposerError(None, None, f"aliases (*{event.anchor}) are not allowed", mark)
        if self._depth >= self._max_depth:
            raise ComposerError(None, None, f"nested deeper than {self._max_depth} levels", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:       # e.g. a date 2024-02-30, an int of 5,000 digits
            what = "date" if node.tag == "tag:yaml.org,2002:timestamp" else "value"
            value = node.value[:40] if isinstance(node.value, str) else ""
            raise ConstructorError(None, None, f"{what} {value!r} is not valid ({exc})", node.start_mark) from exc


def load_yaml(text: str) -> Any:
    """Parse one YAML document with `BoundedSafeLoader`; errors are `yaml.YAMLError`s with a mark."""
    loader = BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
