"""Import a subscriber file (CSV or YAML) into one list of the subscriber store.

The file is read to its end once (`check_file`) before the ledger is opened, so a fault of the file
met at its last line (not UTF-8, an unterminated quote) touches nothing; then `import_subscribers`
reads it again, streamed, and writes it in one transaction, a page of readers per few statements:
nothing but a page is held in memory, and a fault met there (the file changed in between) rolls the
whole import back.

Every reader of the file becomes `active` on the list, their name and tags (attribute `tags`, space
separated) updated from the file when it gives them. An address whose status on the list says the
reader or their mailbox said no (unsubscribed, bounced, complained), or that is on the suppression
list, is not re-activated: it is skipped and reported, unless the import is told to `resubscribe`
(then active, and the suppression lifted). Importing the same file again changes nothing.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from distributor.audience.subscriber_files import BadRow, Subscriber, read_subscribers
from distributor.ledger.store import Ledger
from distributor.ledger.subscribers import REFUSING, ListChange, Standing, SubscriberStore
from distributor.validate.addresses import MAX_TEXT, text_problem

SHOWN = 20          # bad rows and skipped addresses kept to be shown; the rest are counted
_PAGE = 500         # readers looked up and written per batch of statements


@dataclass(frozen=True)
class FileCheck:
    """A subscriber file read to its end: its bad rows (the first `SHOWN` kept), how many in all."""

    bad_rows: tuple[BadRow, ...]
    bad_total: int


@dataclass(frozen=True)
class ImportResult:
    """What an import did: readers put on the list (new, or not active on it before), readers
    already active whose name, tags or format changed, readers already as the file says, addresses
    skipped because they refused the list (the first `SHOWN` kept), and addresses active again
    because `resubscribe` said so."""

    added: int
    updated: int
    unchanged: int
    skipped: int
    resubscribed: int
    skipped_addresses: tuple[str, ...]


@dataclass
class _Tally:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    resubscribed: int = 0


def check_file(path: str | Path) -> FileCheck:
    """Read the whole subscriber file once, keeping nothing but the first bad rows; a fault of the
    file raises `InputError` naming its line."""
    bad_rows: list[BadRow] = []
    bad_total = 0
    for row in _rows(path):
        if isinstance(row, BadRow):
            bad_total += 1
            if len(bad_rows) < SHOWN:
                bad_rows.append(row)
    return FileCheck(tuple(bad_rows), bad_total)


def import_subscribers(ledger: Ledger, path: str | Path, list_name: str, *, format: str | None = None,
                       resubscribe: bool = False) -> ImportResult:
    """Import the good rows of the subscriber file at `path` into `list_name` (see the module
    docstring) in one transaction; `format` sets the row channel each reader reads the list through
    (else the one they had, `email` for a reader new to it). A fault of the file raises `InputError`
    and leaves the store as it was."""
    store, tally, skipped = SubscriberStore(ledger), _Tally(), list[str]()
    source = "import --resubscribe" if resubscribe else "import"
    with ledger.transaction():
        for page in _pages(_rows(path)):
            standings = store.standings([row.address for row in page], list_name)
            new, changed, statuses = [], [], []
            for row in page:
                standing = standings[row.address.lower()]
                if _refused(standing) and not resubscribe:
                    tally.skipped += 1
                    if len(skipped) < SHOWN:
                        skipped.append(row.address)
                    continue
                reader, status = _reader(row, standing), _status(row.address, standing, format, source)
                reader_changed = standing.known and reader[1:] != (standing.name, standing.attributes)
                if not standing.known:
                    new.append(reader)
                elif reader_changed:
                    changed.append(reader)
                if status is not None:
                    statuses.append(status)
                if _refused(standing):
                    tally.resubscribed += 1
                    if standing.suppressed:
                        ledger.unsuppress(row.address)
                elif standing.subscription is None or standing.subscription[0] != "active":
                    tally.added += 1
                elif status is not None or reader_changed:     # an active reader's format, name or tags
                    tally.updated += 1
                else:
                    tally.unchanged += 1
            store.save_many(new, new=True)
            store.save_many(changed, new=False)
            store.set_statuses(list_name, statuses, detail=str(path))
    return ImportResult(tally.added, tally.updated, tally.unchanged, tally.skipped, tally.resubscribed,
                        tuple(skipped))


def _rows(path: str | Path) -> Iterator[Subscriber | BadRow]:
    """The rows of the file as `read_subscribers` reads them, a row whose tags are not one line of
    printable text made a `BadRow` too: the store keeps them, and `subscribers show` prints them."""
    for row in read_subscribers(path):
        problem = None
        if isinstance(row, Subscriber):
            # isprintable() is false for every character text_problem refuses: the fast test first.
            problem = next((found for tag in row.tags if (not tag.isprintable() or len(tag) > MAX_TEXT)
                            and (found := text_problem(tag))), None)
        yield BadRow(str(path), row.line, f"tags {problem}") if problem else row


def _refused(standing: Standing) -> bool:
    return standing.suppressed or (standing.subscription is not None and standing.subscription[0] in REFUSING)


def _reader(row: Subscriber, standing: Standing) -> tuple[str, str | None, dict[str, str]]:
    """Return (address, name, attributes) the reader has once the row is imported: what the file
    gives replaces what the store had; what it leaves out stays."""
    attributes = dict(standing.attributes)
    if row.tags:
        attributes["tags"] = " ".join(row.tags)
    return row.address, row.name if row.name is not None else standing.name, attributes


def _status(address: str, standing: Standing, format: str | None, source: str) -> ListChange | None:
    """Return the change that makes the reader active on the list in their format, or None when
    they already are."""
    status, had_format = standing.subscription or (None, None)
    new_format = format or had_format or "email"
    if status != "active":
        return ListChange(address, "active", new_format, source)
    return ListChange(address, "active", new_format, None) if new_format != had_format else None


def _pages(rows: Iterator[Subscriber | BadRow]) -> Iterator[list[Subscriber]]:
    page: list[Subscriber] = []
    for row in rows:
        if isinstance(row, Subscriber):
            page.append(row)
            if len(page) >= _PAGE:
                yield page
                page = []
    if page:
        yield page
