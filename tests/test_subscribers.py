"""Reading subscriber files (CSV and YAML) from real files: good rows, bad rows by line, unusable files."""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from distributor.audience.subscriber_files import MAX_FILE_BYTES, BadRow, Subscriber, read_subscribers
from distributor.errors import InputError

from .conftest import ROOT


def outcome(row: Subscriber | BadRow) -> tuple:
    """Describe a row as a comparable tuple: ("ok", line, address, name, tags) or ("bad", line, reason)."""
    if isinstance(row, BadRow):
        return ("bad", row.line, row.reason)
    return ("ok", row.line, row.address, row.name, row.tags)


ROW_CASES = {
    "csv good rows": ("list.csv", b"Email, Name ,tags\nann@example.org,Ann  Lee,linux; riscv\n"
                                  b"bob@example.org,,\n", [
        ("ok", 2, "ann@example.org", "Ann Lee", ("linux", "riscv")),
        ("ok", 3, "bob@example.org", None, ())]),
    "csv with a byte order mark": ("bom.csv", "\ufeffemail\nann@example.org\n".encode("utf-8"), [
        ("ok", 2, "ann@example.org", None, ())]),
    "csv quoted field over two lines": ("quoted.csv",
                                        b'email,name\nann@example.org,"Ann\nLee"\nbob@example.org,Bob\n', [
        ("ok", 3, "ann@example.org", "Ann Lee", ()),
        ("ok", 4, "bob@example.org", "Bob", ())]),
    "csv bad address and duplicate differing in case": ("bad.csv", b"email\nnot-an-address\nAnn@Example.org\n"
                                                                   b"a..b@example.org\nann@example.ORG\n", [
        ("bad", 2, "invalid address 'not-an-address'"),
        ("ok", 3, "Ann@Example.org", None, ()),
        ("bad", 4, "invalid address 'a..b@example.org'"),
        ("bad", 5, "duplicate address ann@example.ORG")]),
    "csv non-ASCII addresses, punycode kept": ("intl.csv", "email\n用户@例子.广告\nann@bücher.example\n"
                                                           "ann@xn--bcher-kva.example\nbob@example.xn--fiqs8s\n"
                                                           "zoë@example.org\n".encode("utf-8"), [
        ("bad", 2, "non-ASCII address '用户@例子.广告': SMTPUTF8 is not supported"),
        ("bad", 3, "non-ASCII address 'ann@bücher.example': SMTPUTF8 is not supported"),
        ("ok", 4, "ann@xn--bcher-kva.example", None, ()),
        ("ok", 5, "bob@example.xn--fiqs8s", None, ()),
        ("bad", 6, "non-ASCII address 'zoë@example.org': SMTPUTF8 is not supported")]),
    "yaml good rows": ("list.yaml", "- email: ann@example.org\n  name: 安 李\n  tags: [linux, riscv]\n"
                                    "- {email: bob@example.org, tags: 'a;b c'}\n"
                                    "- email: cy@example.org\n  name: ~\n  Tags:\n    - x\n".encode("utf-8"), [
        ("ok", 1, "ann@example.org", "安 李", ("linux", "riscv")),
        ("ok", 4, "bob@example.org", None, ("a", "b", "c")),
        ("ok", 5, "cy@example.org", None, ("x",))]),
    "yaml nested values": ("nested.yml", b"- email: ann@example.org\n  name: {x: 1}\n"
                                         b"- email: bob@example.org\n  extra: {deep: [1, {two: 2}]}\n"
                                         b"- email: cy@example.org\n  tags: [a, [b, c]]\n"
                                         b"- email: [dee@example.org]\n"
                                         b"- email: eve@example.org\n  name: &n Eve\n", [
        ("bad", 1, "name must be text, not a mapping"),
        ("ok", 3, "bob@example.org", None, ()),
        ("bad", 5, "tags must be text or a list of text"),
        ("bad", 7, "email must be text, not a list"),
        ("ok", 8, "eve@example.org", "Eve", ())]),
    "yaml bad address, duplicate, non-ASCII": ("bad.yaml", "- email: Ann@example.org\n- email: nobody\n"
                                                           "- email: ANN@EXAMPLE.ORG\n- email: zoë@example.org\n"
                                                           "- name: no address\n".encode("utf-8"), [
        ("ok", 1, "Ann@example.org", None, ()),
        ("bad", 2, "invalid address 'nobody'"),
        ("bad", 3, "duplicate address ANN@EXAMPLE.ORG"),
        ("bad", 4, "non-ASCII address 'zoë@example.org': SMTPUTF8 is not supported"),
        ("bad", 5, "invalid address ''")]),
    "csv addresses that are not one plain address": ("hostile.csv", b'email\n"a@example.org, victim@evil.example"\n'
                                                                    b'"<t@example.org> NOTIFY=SUCCESS ORCPT=rfc822;x"\n'
                                                                    b"Ann <ann@example.org>\n.ann@example.org\n"
                                                                    b'"ann@example.org\r\nBcc: v@evil.example"\n', [
        ("bad", 2, "invalid address 'a@example.org, victim@evil.example'"),
        ("bad", 3, "invalid address '<t@example.org> NOTIFY=SUCCESS ORCPT=rfc822;x'"),
        ("bad", 4, "invalid address 'Ann <ann@example.org>'"),
        ("bad", 5, "invalid address '.ann@example.org'"),
        ("bad", 7, "invalid address 'ann@example.org\\r\\nBcc: v@evil.example'")]),
    "csv name with a control character": ("names.csv", b"email,name\nann@example.org,Ann\x1b[31m\n"
                                                       b"bob@example.org,\"Bob\r\nLee\"\n", [
        ("bad", 2, "name holds a control character (U+001B): it must be one line of printable characters"),
        ("ok", 4, "bob@example.org", "Bob Lee", ())]),
}


@pytest.mark.parametrize("name", ROW_CASES)
def test_rows(tmp_path: Path, name: str) -> None:
    filename, content, expected = ROW_CASES[name]
    path = tmp_path / filename
    path.write_bytes(content)
    rows = list(read_subscribers(path))
    assert [outcome(row) for row in rows] == expected
    assert all(row.path == str(path) for row in rows if isinstance(row, BadRow))


def standing(row: Subscriber | BadRow) -> tuple:
    """A row with what it says of the reader's standing: ("ok", line, address, list, status, format,
    language) or ("bad", line, reason)."""
    if isinstance(row, BadRow):
        return ("bad", row.line, row.reason)
    return ("ok", row.line, row.address, row.list, row.status, row.format, row.language)


STORE_ROWS = {
    # The columns `subscribers export` writes; a reader on two lists is one row per list, not a duplicate.
    "csv export of two lists": ("store.csv", b"email,name,tags,language,list,status,format,since\n"
                                             b"ann@example.org,Ann,a b,en,digest,unsubscribed,text,2026-01-01\n"
                                             b"ann@example.org,Ann,a b,en,weekly,active,email,2026-01-01\n"
                                             b"bob@example.org,,,zh,weekly,bounced,email,\n"
                                             b"cy@example.org,,,,weekly,unconfirmed,,\n"
                                             b"dee@example.org,,,,,,,\n"
                                             b"eve@example.org,,,, weekly , complained ,email\n"
                                             b"ANN@example.org,,,,weekly,,,\nfay@example.org,,,,  ,,,\n", None, [
        ("ok", 2, "ann@example.org", "digest", "unsubscribed", "text", "en"),
        ("ok", 3, "ann@example.org", "weekly", "active", "email", "en"),
        ("ok", 4, "bob@example.org", "weekly", "bounced", "email", "zh"),
        ("ok", 5, "cy@example.org", "weekly", "unconfirmed", None, None),
        ("ok", 6, "dee@example.org", None, None, None, None),
        ("ok", 7, "eve@example.org", "weekly", "complained", "email", None),
        ("bad", 8, "duplicate address ANN@example.org on weekly"),
        ("ok", 9, "fay@example.org", None, None, None, None)]),
    # A row that names no list is on the list the reader is given; an empty list cell is no list.
    "csv rows of the given list": ("given.csv", b"email,status,language\nann@example.org,unsubscribed,zh\n"
                                                b"ann@example.org,,\n", "weekly", [
        ("ok", 2, "ann@example.org", "weekly", "unsubscribed", None, "zh"),
        ("bad", 3, "duplicate address ann@example.org")]),
    "csv short row with a list column": ("short.csv", b"email,list\nann@example.org\nbob@example.org,weekly\n",
                                         "weekly", [
        ("ok", 2, "ann@example.org", None, None, None, None),
        ("ok", 3, "bob@example.org", "weekly", None, None, None)]),
    "yaml with lists, statuses, formats": ("store.yaml", b"- {email: ann@example.org, list: weekly, status: bounced,"
                                                         b" format: text, language: en}\n"
                                                         b"- {email: ann@example.org, list: digest}\n"
                                                         b"- {email: ann@example.org}\n"
                                                         b"- {email: bob@example.org, list: ~, status: ~}\n",
                                           "weekly", [
        ("ok", 1, "ann@example.org", "weekly", "bounced", "text", "en"),
        ("ok", 2, "ann@example.org", "digest", None, None, None),
        ("bad", 3, "duplicate address ann@example.org"),
        ("ok", 4, "bob@example.org", None, None, None, None)]),
    "csv bad values": ("bad.csv", "email,list,status,format,language\n"
                                  "a@example.org,weekly,gone,email,en\n"
                                  "b@example.org,weekly,Active,email,en\n"
                                  "c@example.org,weekly,active,E-mail,en\n"
                                  "d@example.org,weekly,active,email,fr\n"
                                  "e@example.org,Weekly News,active,email,en\n"
                                  "f@example.org,weekly,active,9text,en\n"
                                  f"g@example.org,weekly,active,{'x' * 33},en\n"
                                  "h@example.org,,unsubscribed,,\n"
                                  "i@example.org,,,text,\n"
                                  "j@example.org,weekly,active,email,en\n".encode("utf-8"), None, [
        ("bad", 2, "status 'gone' is not one of unconfirmed, active, unsubscribed, bounced, complained"),
        ("bad", 3, "status 'Active' is not one of unconfirmed, active, unsubscribed, bounced, complained"),
        ("bad", 4, "format 'E-mail' is not a channel name (lower-case letters, digits, - and _, such as email)"),
        ("bad", 5, "language 'fr' is not one of zh, en"),
        ("bad", 6, "list 'Weekly News' is not a list name (lower-case letters, digits, - and _, such as weekly)"),
        ("bad", 7, "format '9text' is not a channel name (lower-case letters, digits, - and _, such as email)"),
        ("bad", 8, f"format '{'x' * 33}' is not a channel name (lower-case letters, digits, - and _, such as email)"),
        ("bad", 9, "a status or format needs a list: the list is empty"),
        ("bad", 10, "a status or format needs a list: the list is empty"),
        ("ok", 11, "j@example.org", "weekly", "active", "email", "en")]),
    "yaml values that are not text": ("kinds.yaml", b"- {email: a@example.org, status: [active]}\n"
                                                    b"- {email: b@example.org, list: {x: 1}}\n"
                                                    b"- {email: c@example.org, language: [en, zh]}\n"
                                                    b"- {email: d@example.org, format: 7}\n", "weekly", [
        ("bad", 1, "status must be text, not a list"),
        ("bad", 2, "list must be text, not a mapping"),
        ("bad", 3, "language must be text, not a list"),
        ("bad", 4, "format '7' is not a channel name (lower-case letters, digits, - and _, such as email)")]),
}


@pytest.mark.parametrize("name", STORE_ROWS)
def test_rows_with_lists_statuses_formats_and_languages(tmp_path: Path, name: str) -> None:
    filename, content, list_name, expected = STORE_ROWS[name]
    path = tmp_path / filename
    path.write_bytes(content)
    assert [standing(row) for row in read_subscribers(path, list_name=list_name)] == expected


LONG_FIELD = "x" * 140_000      # over the csv module's field size limit
ANY = -1                        # the text layer decodes ahead in chunks: any number of rows may come first
FILE_CASES = {
    "csv without an email column": ("list.csv", b"name,tags\nAnn,x\n", None, "no 'email' column", 1),
    "empty csv": ("empty.csv", b"", None, "no 'email' column", 1),
    "csv not UTF-8 in the header": ("latin.csv", "émail\nann@example.org\n".encode("latin-1"), None,
                                    "not UTF-8", 1),
    "csv not UTF-8 in a row": ("latin.csv", "email,name\nann@example.org,Ann\nbob@example.org,Zoë\n"
                                            .encode("latin-1"), ANY, "not UTF-8", 3),
    # Far past the first chunk the text layer decodes, so the line comes from the file, not the chunk.
    "csv not UTF-8 far down": ("big.csv", b"email\n" + b"".join(f"r{i}@example.org\n".encode() for i in range(2000))
                               + b"\xff@example.org\n", ANY, "not UTF-8", 2002),
    "csv row too long": ("huge.csv", f"email,name\nann@example.org,Ann\nbob@example.org,{LONG_FIELD}\n".encode(),
                         1, "a row longer than 8,192 characters", 3),
    "csv row too long across lines": ("long.csv", b"email,name\nann@example.org,\"Ann\n" + b"x\n" * 5000, 0,
                                      "a row longer than 8,192 characters (is a quote left open?)", 2),
    "csv with a NUL byte": ("nul.csv", b"email,name\nann@example.org,Ann\nbob@example.org,B\x00b\n"
                                       b"cy@example.org,Cy\n", 1, "holds a NUL byte", 3),
    "csv with a NUL byte in the header": ("nul.csv", b"email\x00\nann@example.org\n", 0, "holds a NUL byte", 1),
    "csv unterminated quote": ("quote.csv", b'email,name\nann@example.org,Ann\nbob@example.org,"Bob\n'
                                            b"cy@example.org,Cy\n", 1, "unterminated quote", 3),
    "csv text after a closing quote": ("quote.csv", b'email,name\nann@example.org,"Ann" Lee\n', 0,
                                       "invalid CSV: ',' expected after '\"'", 2),
    "csv with too many columns": ("wide.csv", b"email,name\nann@example.org,Ann\nbob@example.org" + b",x" * 64
                                  + b"\n", 1, "a row of 65 columns; at most 64 are read", 3),
    "csv header with too many columns": ("wide.csv", b"email" + b",x" * 64 + b"\n", 0, "65 columns", 1),
    "yaml with a NUL byte": ("nul.yaml", b"- email: ann@example.org\n- email: bob@example.org\n  name: B\x00b\n",
                             ANY, "holds a NUL byte", 3),
    "yaml alias": ("alias.yaml", b"- email: eve@example.org\n  name: &n Eve\n- email: fay@example.org\n  name: *n\n",
                   1, "YAML aliases (*n) are not allowed", 4),
    "yaml alias bomb": ("bomb.yaml", b"- email: ann@example.org\n  tags: &a [x, x, x, x, x, x, x, x, x]\n"
                                     b"- email: bob@example.org\n  tags: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
                                     b"- email: cy@example.org\n  tags: [*b, *b, *b, *b, *b, *b, *b, *b]\n",
                        1, "YAML aliases (*a) are not allowed", 4),
    "yaml nested too deep": ("deep.yaml", b"- email: ann@example.org\n  tags: " + b"[" * 1000 + b"]" * 1000 + b"\n",
                             0, "nested deeper than 20 levels", 2),
    "yaml row too long": ("long.yaml", b"- email: ann@example.org\n  name: " + b"x" * 9000 + b"\n", 0,
                          "a row longer than 8,192 characters", 1),
    "yaml not a list": ("list.yaml", b"email: ann@example.org\n", None, "must be a list", None),
    "empty yaml": ("empty.yaml", b"", None, "must be a list", None),
    "yaml row not a mapping": ("list.yaml", b"- email: ann@example.org\n- bob@example.org\n", 1,
                               "each subscriber must be a mapping", 2),
    "yaml syntax error": ("list.yaml", b"- email: ann@example.org\n- email: [bob\n", 1, "invalid YAML", 3),
    "yaml not UTF-8": ("latin.yaml", "- email: ann@example.org\n- name: Zoë\n".encode("latin-1"), ANY,
                       "not UTF-8", 2),
}


@pytest.mark.parametrize("name", FILE_CASES)
def test_unusable_files_raise_input_error_naming_file_and_line(tmp_path: Path, name: str) -> None:
    filename, content, rows_before, message, line = FILE_CASES[name]
    path = tmp_path / filename
    path.write_bytes(content)
    rows = read_subscribers(path)
    seen = []
    with pytest.raises(InputError, match=re.escape(message)) as caught:
        for row in rows:
            seen.append(row)
    if rows_before != ANY:
        assert len(seen) == (rows_before or 0), "the error came after the wrong number of rows"
    assert (caught.value.path, caught.value.line) == (str(path), line)
    assert str(caught.value).startswith(f"{path}:{line}: " if line else f"{path}: ")


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read subscriber file"):
        list(read_subscribers(tmp_path / "absent.csv"))


@pytest.mark.parametrize("name", ["/dev/zero", "fifo.csv"])
def test_only_a_regular_file_is_read(tmp_path: Path, name: str) -> None:
    """/dev/zero would be read for ever, a FIFO would block the open: both are refused at once. Run as
    a process with a time and memory bound, as the unbounded reader would not return."""
    path = Path(name) if name.startswith("/") else tmp_path / name
    if name == "fifo.csv":
        os.mkfifo(path)
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"channels:\n  email:\n    subscribers: {path}\nledger:\n  path: {tmp_path / 'l.sqlite3'}\n",
                        encoding="utf-8")
    result = run_bounded(["--settings", str(settings), "subscribers", "list", "--file"])
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"distributor: error: {path}: subscriber file is not a regular file"]


def run_bounded(args: list[str], seconds: float = 30) -> subprocess.CompletedProcess:
    """Run the CLI with at most 1 GB of memory and `seconds` of time; a hang or a runaway read fails the test."""
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 ** 30, 2 ** 30))
    return subprocess.run([sys.executable, "-m", "distributor", *args], capture_output=True, text=True,
                          timeout=seconds, cwd=ROOT, preexec_fn=limit_memory)


def test_a_file_over_the_size_bound_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    path.write_bytes(b"email\nann@example.org\n")
    os.truncate(path, MAX_FILE_BYTES + 1)        # sparse: nothing is written, the size is what is checked
    with pytest.raises(InputError, match=f"subscriber file is larger than {MAX_FILE_BYTES:,} bytes"):
        next(read_subscribers(path))
