"""`distributor migrate`: make the ledger, or bring it to the layout this distributor writes. A SQLite
ledger is migrated whenever it is opened; a PostgreSQL one only by this command, run once with every
worker stopped, since workers of several machines share it."""
from __future__ import annotations

import argparse

from distributor.errors import EXIT_OK
from distributor.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `migrate` to the `distributor` command line."""
    migrate = subparsers.add_parser("migrate", help="make the ledger, or upgrade it to this version's layout")
    migrate.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from distributor.ledger.store import migrate_ledger
    where, found, now = migrate_ledger(settings.ledger)
    if found == now:
        print(f"migrate: {where}: the ledger is at layout {now} already; nothing to do")
    elif found == 0:
        print(f"migrate: {where}: made the ledger (layout {now})")
    else:
        print(f"migrate: {where}: upgraded the ledger from layout {found} to {now}")
    return EXIT_OK
