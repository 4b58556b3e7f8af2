"""`distributor subscribers`: list the subscriber file with each row's state, unsubscribe or
resubscribe an address by hand (mailto requests), and export the suppression list as CSV."""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import sys
from pathlib import Path
from typing import TextIO

from distributor.audience.subscriber_files import BadRow, read_subscribers
from distributor.errors import InputError, StorageError
from distributor.files import write_files
from distributor.ledger.store import open_ledger
from distributor.settings import Settings
from distributor.validate.addresses import named_address_problem

STATES = ("active", "unsubscribed", "bounced")
EXPORT_COLUMNS = ("address", "reason", "source", "time")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `subscribers` and its actions to the `distributor` command line."""
    subscribers = subparsers.add_parser("subscribers", help="the email subscribers and who must not be mailed")
    actions = subscribers.add_subparsers(dest="subscribers_action", required=True)

    listing = actions.add_parser("list", help="the subscriber file's rows: active, unsubscribed or bounced")
    listing.add_argument("--state", choices=STATES, help="only the rows in this state")
    listing.set_defaults(run=run_list)

    remove = actions.add_parser("unsubscribe", help="never mail ADDRESS again (e.g. on a mailto request)")
    remove.add_argument("address", metavar="ADDRESS")
    remove.add_argument("--reason", default="unsubscribed on request", help="why, kept in the suppression list")
    remove.set_defaults(run=run_unsubscribe)

    restore = actions.add_parser("resubscribe", help="mail ADDRESS again")
    restore.add_argument("address", metavar="ADDRESS")
    restore.set_defaults(run=run_resubscribe)

    export = actions.add_parser("export", help="write the suppression list as CSV (- for stdout)")
    export.add_argument("file", metavar="FILE")
    export.set_defaults(run=run_export)


def state_of(suppression: tuple | None) -> str:
    """Return the state a suppression row (or its absence) gives an address."""
    if suppression is None:
        return "active"
    return "bounced" if suppression[2] == "bounce" else "unsubscribed"


def run_list(args: argparse.Namespace, settings: Settings, out: TextIO = sys.stdout) -> int:
    """Print each row of the subscriber file with its state, then the totals; bad rows go to stderr."""
    path = settings.channels.email.subscribers
    if not path:
        raise InputError("channels.email.subscribers is not set: there is no subscriber file to list")
    totals = dict.fromkeys(STATES, 0)
    with open_ledger(settings.ledger, create=False) as ledger, ledger.storage_errors():
        for row in read_subscribers(path):
            if isinstance(row, BadRow):
                print(f"warning: {row}", file=sys.stderr)
                continue
            state = state_of(ledger.suppression(row.address))
            totals[state] += 1
            if args.state in (None, state):
                print(f"{state:<13}{row.address}{'  ' + row.name if row.name else ''}", file=out)
    print(f"{sum(totals.values())} subscribers: " + ", ".join(f"{n} {state}" for state, n in totals.items()),
          file=out)
    return 0


def run_unsubscribe(args: argparse.Namespace, settings: Settings, out: TextIO = sys.stdout) -> int:
    """Suppress the address with source "command"; an address already suppressed stays as it was."""
    address = _address(args.address)
    with open_ledger(settings.ledger, create=True) as ledger, ledger.storage_errors():
        earlier = ledger.suppression(address)
        if earlier is not None:
            print(f"{address} is already {state_of(earlier)} (source {earlier[2]}, since {_iso(earlier[3])})",
                  file=out)
            return 0
        ledger.suppress(address, reason=args.reason, source="command")
    print(f"unsubscribed {address}", file=out)
    return 0


def run_resubscribe(args: argparse.Namespace, settings: Settings, out: TextIO = sys.stdout) -> int:
    """Remove the address from the suppression list, whatever put it there."""
    address = _address(args.address)
    with open_ledger(settings.ledger, create=True) as ledger, ledger.storage_errors():
        earlier = ledger.suppression(address)
        if earlier is None or not ledger.unsuppress(address):
            print(f"{address} is not unsubscribed; nothing to do", file=out)
            return 0
    print(f"resubscribed {address} (was {state_of(earlier)}, source {earlier[2]})", file=out)
    return 0


def run_export(args: argparse.Namespace, settings: Settings, out: TextIO = sys.stdout) -> int:
    """Write the suppression list as CSV (address, reason, source, ISO-8601 time) to FILE or stdout."""
    with open_ledger(settings.ledger, create=False) as ledger, ledger.storage_errors():
        rows = [(address, reason or "", source, _iso(created)) for address, reason, source, created
                in ledger.suppressions()]
    if args.file == "-":
        try:
            _write_csv(out, rows)
            out.flush()
        except OSError as exc:
            raise StorageError(f"cannot write the export to standard output: {exc.strerror or exc}") from exc
        return 0
    # The list is small (one short row per suppressed address): built whole, then written the way
    # every file is (distributor/files.py), so a bad or full target is the same StorageError.
    text = io.StringIO()
    _write_csv(text, rows)
    target = Path(args.file)
    write_files({target.name: text.getvalue().encode("utf-8")}, target.parent)
    print(f"wrote {len(rows)} suppressed addresses to {target}", file=out)
    return 0


def _write_csv(stream: TextIO, rows: list[tuple[str, str, str, str]]) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    writer.writerows(rows)


def _address(given: str) -> str:
    """Return the bare address in `given` ("Name <a@b>" too, as a mailto request's From has it),
    checked against the same allow list as every other address."""
    given = given.strip()
    if problem := named_address_problem(given):
        raise InputError(f"ADDRESS: {problem}")
    return given[:-1].rpartition("<")[2] if given.endswith(">") else given


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds")
