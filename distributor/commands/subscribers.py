"""`distributor subscribers`: the readers of the subscriber store (import a file into a list, list,
add, remove, unsubscribe, resubscribe, show one reader's record, export), the old view of the
subscriber file (`list --file`), the addresses bounces and complaints suppressed (`list --bounced`),
and the suppression list (`export --suppressions`).

`list`, `show` and `export` only read: they make no ledger file where there is none."""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from distributor import registry
from distributor.audience.lists import known_lists, lists_by_channel
from distributor.audience.standing import LANGUAGES, READER_SOURCES, REFUSING, STATUSES
from distributor.audience.subscriber_files import BadRow, read_subscribers
from distributor.errors import InputError, StorageError
from distributor.files import write_files
from distributor.ledger.feedback import FeedbackLedger
from distributor.ledger.importing import ImportResult, check_file, import_subscribers
from distributor.ledger.store import Ledger, Suppression, open_ledger
from distributor.ledger.subscribers import SubscriberStore, Subscription
from distributor.settings import Settings, list_name_problem
from distributor.validate.addresses import named_address_problem, text_problem
from distributor.validate.addresses import shown as shown_text

FILE_STATES = ("active", "unsubscribed", "bounced")
EXPORT_COLUMNS = ("address", "reason", "source", "time")
STORE_COLUMNS = ("email", "name", "tags", "language", "list", "status", "format", "since")
_SHOWN = 20


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `subscribers` and its actions to the `distributor` command line."""
    subscribers = subparsers.add_parser("subscribers", help="the readers, their lists, and who must not be mailed")
    actions = subscribers.add_subparsers(dest="subscribers_action", required=True)
    formats = tuple(channel.name for channel in registry.row_channels(registry.names()))

    importing = actions.add_parser("import", help="put the readers of a CSV or YAML file on a list")
    importing.add_argument("file", metavar="FILE")
    importing.add_argument("--list", required=True, metavar="NAME", help="the list they go on")
    importing.add_argument("--format", choices=formats,
                           help="the channel they read the list through (default: the one they had, else email)")
    importing.add_argument("--resubscribe", action="store_true",
                           help="make active again those who unsubscribed, bounced or complained")
    importing.set_defaults(run=run_import)

    listing = actions.add_parser("list", help="the readers and their status on each list")
    listing.add_argument("--list", metavar="NAME", help="only the readers of this list")
    listing.add_argument("--status", "--state", choices=STATUSES, help="only the readers with this status")
    shown = listing.add_mutually_exclusive_group()
    shown.add_argument("--file", action="store_true",
                       help="the subscriber file's rows instead (channels.email.subscribers), each with its state")
    shown.add_argument("--bounced", action="store_true",
                       help="the addresses a bounce or a complaint suppressed, with what the last report said")
    listing.set_defaults(run=run_list)

    add = actions.add_parser("add", help="put ADDRESS on a list, active")
    add.add_argument("address", metavar="ADDRESS")
    add.add_argument("--list", required=True, metavar="NAME")
    add.add_argument("--name", help="the reader's name")
    add.add_argument("--language", choices=LANGUAGES)
    add.add_argument("--format", choices=formats, help="the channel they read the list through (default email)")
    add.set_defaults(run=run_add)

    remove = actions.add_parser("remove", help="erase the reader: lists, history and consents (a suppression stays)")
    remove.add_argument("address", metavar="ADDRESS")
    remove.set_defaults(run=run_remove)

    unsubscribe = actions.add_parser("unsubscribe", help="never mail ADDRESS again, or not on one list")
    unsubscribe.add_argument("address", metavar="ADDRESS")
    unsubscribe.add_argument("--list", metavar="NAME", help="that list only (else: the suppression list)")
    unsubscribe.add_argument("--reason", default="unsubscribed on request", help="why, kept with the change")
    unsubscribe.set_defaults(run=run_unsubscribe)

    resubscribe = actions.add_parser("resubscribe", help="mail ADDRESS again")
    resubscribe.add_argument("address", metavar="ADDRESS")
    resubscribe.add_argument("--list", metavar="NAME", help="that list only (else: every list they left)")
    resubscribe.set_defaults(run=run_resubscribe)

    show = actions.add_parser("show", help="one reader's record: lists, history with time and source, consents")
    show.add_argument("address", metavar="ADDRESS")
    show.set_defaults(run=run_show)

    export = actions.add_parser("export", help="write the readers as CSV that import reads back (- for stdout)")
    export.add_argument("file", metavar="FILE")
    export.add_argument("--list", metavar="NAME", help="only this list's readers")
    export.add_argument("--suppressions", action="store_true", help="the suppression list instead")
    export.set_defaults(run=run_export)


# --- import ----------------------------------------------------------------------------------------

def run_import(args: argparse.Namespace, settings: Settings, out: TextIO | None = None,
               err: TextIO | None = None) -> int:
    """Import FILE into the list; bad rows and refusing addresses are reported on stderr."""
    out, err = out or sys.stdout, err or sys.stderr
    list_name = _list_name(args.list)
    _note_unknown_list(list_name, settings, err)
    checked = check_file(args.file, list_name)   # to its end before the ledger is opened: a faulty file touches nothing
    for row in checked.bad_rows:
        print(f"warning: {row}", file=err)
    if checked.bad_total > len(checked.bad_rows):
        print(f"warning: {checked.bad_total - len(checked.bad_rows)} more bad rows", file=err)
    with open_ledger(settings.ledger, create=True) as ledger, ledger.storage_errors():
        result = import_subscribers(ledger, args.file, list_name, format=args.format, resubscribe=args.resubscribe)
    if result.skipped:
        more = result.skipped - len(result.skipped_addresses)
        print(f"warning: not re-activated on {list_name}: {result.skipped} who unsubscribed, bounced, complained or "
              f"are suppressed ({', '.join(result.skipped_addresses)}{f' and {more} more' if more else ''}); "
              "--resubscribe makes them active", file=err)
    if result.left_out_total:
        print(_left_out(result, list_name), file=out)
    resubscribed = f", {result.resubscribed} resubscribed" if args.resubscribe else ""
    # Statuses other than active only come from a file that gives them: a plain list's summary stays short.
    unconfirmed = f", {result.unconfirmed} unconfirmed" if result.unconfirmed else ""
    refused = f", {result.refused} unsubscribed, bounced or complained" if result.refused else ""
    print(f"imported {args.file} into {list_name}: {result.added} added, {result.updated} updated, "
          f"{result.unchanged} unchanged, {result.skipped} skipped{resubscribed}{unconfirmed}{refused}, "
          f"{checked.bad_total} bad rows", file=out)
    return 0


def _left_out(result: ImportResult, list_name: str) -> str:
    """Say which rows of a file of several lists this import left out, and how to import them."""
    counts = [f"{rows} {f'of {name}' if name else 'on no list'}" for name, rows in result.left_out]
    more = result.left_out_total - sum(rows for _, rows in result.left_out)
    others = [name for name, _ in result.left_out if name]
    how = f"; import them with --list {others[0]}" if len(others) == 1 and not more else \
        "; import each list with its own --list" if others else ""
    return (f"left out {result.left_out_total} rows not of {list_name}: {', '.join(counts)}"
            f"{f' and {more} of other lists' if more else ''}{how}")


# --- list ------------------------------------------------------------------------------------------

def run_list(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """Print each reader of the store (of `--list`, with `--status`) with their status per list, then
    the totals per list and status; with `--file`, the subscriber file's rows instead."""
    out = out or sys.stdout
    if args.file:
        return _list_file(args, settings, out)
    if args.bounced:
        return _list_bounced(args, settings, out)
    list_name = _list_name(args.list) if args.list else None
    shown = 0
    with open_ledger(settings.ledger, create=False) as ledger, ledger.storage_errors():
        store = SubscriberStore(ledger)
        for reader in store.subscribers(list_name=list_name, status=args.status):
            lists = " ".join(f"{s.list}:{s.status}" for s in reader.subscriptions if list_name in (None, s.list))
            print(f"{lists}  {reader.address}{'  ' + reader.name if reader.name else ''}", file=out)
            shown += 1
        counts = store.counts()
    print(f"{shown} readers", file=out)
    for name, statuses in counts.items():
        if list_name in (None, name):
            print(f"{name}: {sum(statuses.values())} readers: "
                  + ", ".join(f"{statuses[s]} {s}" for s in STATUSES if s in statuses), file=out)
    return 0


def _list_file(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Print each row of the subscriber file with its state by the suppression list, then the totals."""
    path = settings.channels.email.subscribers
    if not path:
        raise InputError("channels.email.subscribers is not set: there is no subscriber file to list")
    if args.list:
        raise InputError("--list: the subscriber file has no lists; leave out --file to list the store")
    if args.status not in (None, *FILE_STATES):
        raise InputError(f"--status: a subscriber file's rows are {', '.join(FILE_STATES)}")
    totals = dict.fromkeys(FILE_STATES, 0)
    with open_ledger(settings.ledger, create=False) as ledger, ledger.storage_errors():
        for row in read_subscribers(path):
            if isinstance(row, BadRow):
                print(f"warning: {row}", file=sys.stderr)
                continue
            state = state_of(ledger.suppression(row.address))
            totals[state] += 1
            if args.status in (None, state):
                print(f"{state:<13}{row.address}{'  ' + row.name if row.name else ''}", file=out)
    print(f"{sum(totals.values())} subscribers: " + ", ".join(f"{n} {state}" for state, n in totals.items()),
          file=out)
    return 0


def _list_bounced(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Print each address suppressed by a bounce or a complaint: since when, why, and the issue of the
    last report read back for it (`distributor bounces`), whichever audience it came from."""
    if args.list or args.status:
        raise InputError("--bounced lists every suppressed address: leave out --list and --status")
    shown = 0
    with open_ledger(settings.ledger, create=False) as ledger, ledger.storage_errors():
        feedback = FeedbackLedger(ledger)
        for address, source, reason, since in feedback.bounced():
            last = feedback.latest(address)
            issue = f"  issue {last.issue_key}" if last and last.issue_key else ""
            day = dt.datetime.fromtimestamp(since, dt.timezone.utc).strftime("%Y-%m-%d")
            print(f"{'complained' if source == 'complaint' else 'bounced':<11}{address}  since {day}"
                  f"{issue}  {shown_text(reason or '', 160)}", file=out)
            shown += 1
    print(f"{shown} addresses suppressed by bounces and complaints", file=out)
    return 0


def state_of(suppression: Suppression | None) -> str:
    """Return the state a suppression row (or its absence) gives an address of the subscriber file."""
    if suppression is None:
        return "active"
    return "bounced" if suppression.source == "bounce" else "unsubscribed"


# --- one reader --------------------------------------------------------------------------------------

def run_add(args: argparse.Namespace, settings: Settings, out: TextIO | None = None,
            err: TextIO | None = None) -> int:
    """Put the reader on the list, active, source "command"; one who refused it is left to `resubscribe`."""
    out, err = out or sys.stdout, err or sys.stderr
    address, list_name = _address(args.address), _list_name(args.list)
    name = " ".join(args.name.split()) if args.name else None
    if name and (problem := text_problem(name)):
        raise InputError(f"--name: {problem}")
    _note_unknown_list(list_name, settings, err)
    with open_ledger(settings.ledger, create=True) as ledger, ledger.storage_errors(), ledger.transaction():
        store = SubscriberStore(ledger)
        earlier = store.subscriber(address)
        standing = earlier.on(list_name) if earlier else None
        suppression = ledger.suppression(address)
        why = f"on the suppression list (source {suppression.source})" if suppression is not None else \
            f"{standing.status} on {list_name}" if standing is not None and standing.status in REFUSING else None
        if why:
            raise InputError(f"{address} is {why}: `distributor subscribers resubscribe {address} --list {list_name}`"
                             " mails them again")
        changed = store.save(address, name=name, language=args.language)
        changed = store.set_status(address, list_name, "active", source="command", format=args.format) or changed
    if earlier is None:
        print(f"added {address} to {list_name}", file=out)
    else:
        print(f"{address} is active on {list_name}{'' if changed else '; nothing changed'}", file=out)
    return 0


def run_remove(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """Erase the reader from the store; a suppression of the address stays."""
    out = out or sys.stdout
    address = _address(args.address)
    with open_ledger(settings.ledger, create=True) as ledger, ledger.storage_errors(), ledger.transaction():
        removed = SubscriberStore(ledger).remove(address)
        suppressed = ledger.is_suppressed(address)
    if not removed:
        print(f"{address} is not in the subscriber store; nothing to do", file=out)
    else:
        print(f"removed {address}: lists, history and consents"
              + ("; the address stays on the suppression list" if suppressed else ""), file=out)
    return 0


def run_unsubscribe(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """With --list: that list only (status unsubscribed, source "command"). Without: suppress the address
    with source "command", which marks every list. An address the reader suppressed themself (one-click,
    the page's button) gets the source "command" too: theirs is one a confirmed signup or a ticked
    preference lifts, the publisher's is not. One suppressed by anything else stays as it was."""
    out = out or sys.stdout
    address = _address(args.address)
    if args.list:
        list_name = _list_name(args.list)
        with open_ledger(settings.ledger, create=True) as ledger, ledger.storage_errors(), ledger.transaction():
            store = SubscriberStore(ledger)
            reader = store.subscriber(address)
            standing = reader.on(list_name) if reader else None
            if standing is None:
                print(f"{address} is not on {list_name}; nothing to do", file=out)
                return 0
            if standing.status in REFUSING:
                print(f"{address} is already {standing.status} on {list_name} (since {_iso(standing.updated_at)})",
                      file=out)
                return 0
            store.set_status(address, list_name, "unsubscribed", source="command", detail=args.reason)
        print(f"unsubscribed {address} from {list_name}", file=out)
        return 0
    with open_ledger(settings.ledger, create=True) as ledger, ledger.storage_errors():
        earlier = ledger.suppression(address)
        if earlier is not None and earlier.source not in READER_SOURCES:
            print(f"{address} is already {state_of(earlier)} (source {earlier.source}, "
                  f"since {_iso(earlier.created_at)})", file=out)
            return 0
        with ledger.transaction():
            ledger.suppress(address, reason=args.reason, source="command")     # replaces a reader-made source
    if earlier is not None:
        print(f"unsubscribed {address} by command (the reader had unsubscribed by {earlier.source}, since "
              f"{_iso(earlier.created_at)}); only `distributor subscribers resubscribe` lifts it", file=out)
    else:
        print(f"unsubscribed {address}", file=out)
    return 0


def run_resubscribe(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """Lift the suppression of the address, whatever put it there, and make the lists it had left
    (or only --list) active again, source "command"."""
    out = out or sys.stdout
    address = _address(args.address)
    list_name = _list_name(args.list) if args.list else None
    with open_ledger(settings.ledger, create=True) as ledger, ledger.storage_errors(), ledger.transaction():
        store = SubscriberStore(ledger)
        earlier = ledger.suppression(address)
        if earlier is not None:
            ledger.unsuppress(address)
        reader = store.subscriber(address)
        lists = [s.list for s in (reader.subscriptions if reader else ())
                 if s.status in REFUSING and list_name in (None, s.list)]
        for name in lists:
            store.set_status(address, name, "active", source="command")
    if earlier is None and not lists:
        print(f"{address} is not unsubscribed{f' from {list_name}' if list_name else ''}; nothing to do", file=out)
        return 0
    said = [f"resubscribed {address}" + (f" (was {state_of(earlier)}, source {earlier.source})" if earlier else "")]
    if lists:
        said.append(f"active again on {', '.join(lists)}")
    print("; ".join(said), file=out)
    return 0


def run_show(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """Print everything the store holds of one reader: what a publisher shows a regulator."""
    out = out or sys.stdout
    address = _address(args.address)
    with open_ledger(settings.ledger, create=False) as ledger, ledger.storage_errors():
        store = SubscriberStore(ledger)
        reader = store.subscriber(address)
        suppression = ledger.suppression(address)
        history = store.history(address)
        consents = store.consents(address)
    if reader is None and suppression is None:
        raise InputError(f"ADDRESS: {address} is not in the subscriber store")
    if reader is not None:
        print(f"reader     {reader.address}", file=out)
        for label, value in (("name", reader.name), ("language", reader.language),
                             *((f"{key}", value) for key, value in reader.attributes.items())):
            if value:
                print(f"{label:<11}{value}", file=out)
        print(f"since      {_iso(reader.created_at)}", file=out)
        for s in reader.subscriptions:
            print(f"list       {s.list}: {s.status} ({s.format}) since {_iso(s.updated_at)}", file=out)
    if suppression is not None:
        print(f"suppressed since {_iso(suppression.created_at)}, source {suppression.source}: "
              f"{suppression.reason or ''}", file=out)
    print("history:", file=out)
    for change in history:
        detail = f"  ({change.detail})" if change.detail else ""
        print(f"  {_iso(change.at)}  {change.list}: {change.status}  by {change.source}{detail}", file=out)
    print("consents:", file=out)
    for consent in consents:
        confirmed = f"confirmed {_iso(consent.confirmed_at)}" if consent.confirmed_at else "not confirmed"
        print(f"  {consent.list}: requested {_iso(consent.requested_at)} from {consent.client or 'unknown client'}"
              f" on {consent.form_url or 'unknown form'}; {confirmed}", file=out)
    return 0


# --- export ----------------------------------------------------------------------------------------

def run_export(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """Write the store as CSV (one row per reader and list, columns STORE_COLUMNS) to FILE or stdout,
    streamed; with --suppressions, the suppression list."""
    out = out or sys.stdout
    if args.suppressions:
        if args.list:
            raise InputError("--list: the suppression list has no lists")
        return _export_suppressions(args, settings, out)
    list_name = _list_name(args.list) if args.list else None
    with open_ledger(settings.ledger, create=False) as ledger:
        def write(stream: TextIO) -> int:
            return _write_store(stream, ledger, list_name)
        if args.file == "-":
            _to_stdout(out, write)
            return 0
        written = _to_file(Path(args.file), write)
    print(f"wrote {written} rows to {args.file}", file=out)
    return 0


def _write_store(stream: TextIO, ledger: Ledger, list_name: str | None) -> int:
    """Write the CSV; a fault of the ledger is its `StorageError`, one of the stream an `OSError`."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(STORE_COLUMNS)
    written = 0
    with ledger.storage_errors():
        for row in _store_rows(SubscriberStore(ledger), list_name):
            writer.writerow(row)
            written += 1
    return written


def _store_rows(store: SubscriberStore, list_name: str | None) -> Iterator[tuple[str, ...]]:
    """One row per reader and list (a reader on no list: one row with no list), a page at a time."""
    for reader in store.subscribers(list_name=list_name):
        subscriptions: list[Subscription | None] = [s for s in reader.subscriptions if list_name in (None, s.list)]
        for s in subscriptions or [None]:
            yield (reader.address, reader.name or "", reader.attributes.get("tags", ""), reader.language or "",
                   *((s.list, s.status, s.format, _iso(s.updated_at)) if s else ("", "", "", "")))


def _export_suppressions(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Write the suppression list as CSV (address, reason, source, ISO-8601 time) to FILE or stdout."""
    with open_ledger(settings.ledger, create=False) as ledger, ledger.storage_errors():
        rows = [(address, reason or "", source, _iso(created)) for address, reason, source, created
                in ledger.suppressions()]
    if args.file == "-":
        _to_stdout(out, lambda stream: _write_suppressions(stream, rows))
        return 0
    # The list is small (one short row per suppressed address): built whole, then written the way
    # every file is (distributor/files.py), so a bad or full target is the same StorageError.
    text = io.StringIO()
    _write_suppressions(text, rows)
    target = Path(args.file)
    write_files({target.name: text.getvalue().encode("utf-8")}, target.parent)
    print(f"wrote {len(rows)} suppressed addresses to {target}", file=out)
    return 0


def _write_suppressions(stream: TextIO, rows: list[tuple[str, str, str, str]]) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    writer.writerows(rows)
    return len(rows)


def _to_stdout(out: TextIO, write: Callable[[TextIO], int]) -> None:
    try:
        write(out)
        out.flush()
    except OSError as exc:
        raise StorageError(f"cannot write the export to standard output: {exc.strerror or exc}") from exc


def _to_file(target: Path, write: Callable[[TextIO], int]) -> int:
    """Stream `write` into a temporary file next to `target` (readable by its owner only: it holds
    addresses), flushed to disk, then renamed into place: the file is whole or not there. A folder that
    cannot be written, or a full disk, is a `StorageError` and leaves nothing."""
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.")
    except OSError as exc:
        raise _unwritten(target, exc) from exc
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            written = write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
        return written
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise _unwritten(target, exc) from exc
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _unwritten(target: Path, exc: OSError) -> StorageError:
    return StorageError(f"cannot write {target.name}: {exc.strerror or exc}; nothing was written",
                        path=str(target.parent))


# --- arguments --------------------------------------------------------------------------------------

def _address(given: str) -> str:
    """Return the bare address in `given` ("Name <a@b>" too, as a mailto request's From has it),
    checked against the same allow list as every other address."""
    given = given.strip()
    if problem := named_address_problem(given):
        raise InputError(f"ADDRESS: {problem}")
    return given[:-1].rpartition("<")[2] if given.endswith(">") else given


def _list_name(given: str) -> str:
    if problem := list_name_problem(given):
        raise InputError(f"--list: {problem}")
    return given


def _note_unknown_list(list_name: str, settings: Settings, err: TextIO) -> None:
    """Warn when no channel sends to the list: its readers are kept, and mailed by none yet."""
    served = known_lists(lists_by_channel(registry.row_channels(registry.names()), settings))
    if list_name not in served:
        print(f"warning: no channel sends to {list_name}: its readers are kept and mailed by none (the lists of "
              f"channels.<channel>.lists: {', '.join(served) or 'none'})", file=err)


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds")
