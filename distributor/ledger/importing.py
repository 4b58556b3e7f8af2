"""Import a subscriber file (CSV or YAML) into one list of the subscriber store.

The file is read to its end once (`check_file`) before the ledger is opened, so a fault of the file
met at its last line (not UTF-8, an unterminated quote) touches nothing; then `import_subscribers`
reads it again, streamed, and writes it in one transaction, a page of readers per few statements:
nothing but a page is held in memory, and a fault met there (the file changed in between) rolls the
whole import back.

Every reader of the file gets the status its row gives on the list (`active` when it gives none),
their name, language and tags (attribute `tags`, space separated) updated from the file when it
gives them, and the format (the row channel they read the list through) the row gives, else the
import's `format`, else the one they had, else `email`. What the file says is applied, with these
exceptions:

- An address whose status on the list says the reader or their mailbox said no (unsubscribed,
  bounced, complained), or that is on the suppression list, is not made active or unconfirmed: it
  is skipped and reported, unless the import is told to `resubscribe` (then the row's status, and
  the suppression lifted).
- A row that says `unconfirmed` does not undo a reader's confirmation: one active on the list stays
  active.
- A row that says unsubscribed, bounced or complained is always applied (a new reader is never
  active for it): the file says the reader refused, and a refusal is always safe to apply.

A file of several lists (an export of the whole store) is imported one list at a time: rows of
other lists, and of readers on no list, are left out and counted. Importing the same file again
changes nothing.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from distributor.audience.standing import REFUSING
from distributor.audience.subscriber_files import BadRow, Subscriber, read_subscribers
from distributor.ledger.store import Ledger
from distributor.ledger.subscribers import ListChange, Standing, SubscriberStore
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
    """What an import did: readers made active on the list (new, or not active on it before), readers
    already there whose name, language, tags or format changed, readers already as the file says,
    addresses skipped because they refused the list (the first `SHOWN` kept), addresses given the
    row's status again because `resubscribe` said so, readers the file made unconfirmed, and readers
    the file marked unsubscribed, bounced or complained; then the rows left out because they are of
    another list or of none (by list, "" for none: the first `SHOWN` lists), how many in all."""

    added: int
    updated: int
    unchanged: int
    skipped: int
    resubscribed: int
    skipped_addresses: tuple[str, ...]
    unconfirmed: int = 0
    refused: int = 0
    left_out: tuple[tuple[str, int], ...] = ()
    left_out_total: int = 0


@dataclass
class _Tally:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    resubscribed: int = 0
    unconfirmed: int = 0
    refused: int = 0
    left_out_total: int = 0
    left_out: dict[str, int] = field(default_factory=dict)

    def leave_out(self, list_name: str | None) -> None:
        self.left_out_total += 1
        key = list_name or ""
        if key in self.left_out or len(self.left_out) < SHOWN:
            self.left_out[key] = self.left_out.get(key, 0) + 1


def check_file(path: str | Path, list_name: str) -> FileCheck:
    """Read the whole subscriber file once as the import into `list_name` will, keeping nothing but
    the first bad rows; a fault of the file raises `InputError` naming its line."""
    bad_rows: list[BadRow] = []
    bad_total = 0
    for row in _rows(path, list_name):
        if isinstance(row, BadRow):
            bad_total += 1
            if len(bad_rows) < SHOWN:
                bad_rows.append(row)
    return FileCheck(tuple(bad_rows), bad_total)


def import_subscribers(ledger: Ledger, path: str | Path, list_name: str, *, format: str | None = None,
                       resubscribe: bool = False) -> ImportResult:
    """Import the good rows of the subscriber file at `path` that are about `list_name` (see the
    module docstring) in one transaction; `format` sets the row channel each reader reads the list
    through when the row does not. A fault of the file raises `InputError` and leaves the store as it
    was."""
    store, tally, skipped = SubscriberStore(ledger), _Tally(), list[str]()
    source = "import --resubscribe" if resubscribe else "import"
    with ledger.transaction():
        for page in _pages(_rows(path, list_name), list_name, tally):
            standings = store.standings([row.address for row in page], list_name)
            new, changed, statuses = [], [], []
            for row in page:
                standing = standings[row.address.lower()]
                wanted = row.status or "active"
                refused = _refused(standing)
                if refused and wanted not in REFUSING and not resubscribe:
                    tally.skipped += 1
                    if len(skipped) < SHOWN:
                        skipped.append(row.address)
                    continue
                reader = _reader(row, standing)
                if row.language is not None:        # the batch statements keep no language: this reader alone
                    reader_changed = store.save(row.address, name=reader[1], language=row.language,
                                                attributes=reader[2]) and standing.known
                else:
                    reader_changed = standing.known and reader[1:] != (standing.name, standing.attributes)
                    if not standing.known:
                        new.append(reader)
                    elif reader_changed:
                        changed.append(reader)
                status = _status(row.address, standing, wanted, row.format or format, source)
                if status is not None:
                    statuses.append(status)
                again = refused and wanted not in REFUSING       # only with resubscribe, as skipped above
                if again and standing.suppressed:
                    ledger.unsuppress(row.address)
                _count(tally, status, again, reader_changed)
            store.save_many(new, new=True)
            store.save_many(changed, new=False)
            store.set_statuses(list_name, statuses, detail=str(path))
    return ImportResult(tally.added, tally.updated, tally.unchanged, tally.skipped, tally.resubscribed,
                        tuple(skipped), tally.unconfirmed, tally.refused, tuple(tally.left_out.items()),
                        tally.left_out_total)


def _rows(path: str | Path, list_name: str) -> Iterator[Subscriber | BadRow]:
    """The rows of the file as `read_subscribers` reads them, a row whose tags are not one line of
    printable text made a `BadRow` too: the store keeps them, and `subscribers show` prints them."""
    for row in read_subscribers(path, list_name=list_name):
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


def _status(address: str, standing: Standing, wanted: str, format: str | None, source: str) -> ListChange | None:
    """Return the change that gives the reader the `wanted` status on the list in `format` (else the
    one they had, else email), or None when they already have it; `unconfirmed` leaves an active
    reader active."""
    status, had_format = standing.subscription or (None, None)
    new_format = format or had_format or "email"
    target = "active" if wanted == "unconfirmed" and status == "active" else wanted
    if status != target:
        return ListChange(address, target, new_format, source)
    return ListChange(address, target, new_format, None) if new_format != had_format else None


def _count(tally: _Tally, status: ListChange | None, again: bool, reader_changed: bool) -> None:
    """Count what the row did: `again` a refusing reader given the row's status by `resubscribe`."""
    becomes = status.status if status is not None and status.source is not None else None     # a new status
    if again:
        tally.resubscribed += 1
    elif becomes in REFUSING:
        tally.refused += 1
    elif becomes == "unconfirmed":
        tally.unconfirmed += 1
    elif becomes is not None:
        tally.added += 1
    elif status is not None or reader_changed:      # a reader's format, name, language or tags
        tally.updated += 1
    else:
        tally.unchanged += 1


def _pages(rows: Iterator[Subscriber | BadRow], list_name: str, tally: _Tally) -> Iterator[list[Subscriber]]:
    """The good rows about `list_name`, a page at a time; those of another list or of none are counted."""
    page: list[Subscriber] = []
    for row in rows:
        if not isinstance(row, Subscriber):
            continue
        if row.list != list_name:
            tally.leave_out(row.list)
            continue
        page.append(row)
        if len(page) >= _PAGE:
            yield page
            page = []
    if page:
        yield page
