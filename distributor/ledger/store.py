"""The ledger: one SQLite file (or one PostgreSQL database) that remembers what was sent, to whom, and
what must not be sent.

It holds the deliveries (one row per issue key, channel and recipient), the suppression list,
the subscriber store (readers, their lists and history: distributor/ledger/subscribers.py), the
bounces and complaints read back from the bounce mailbox (distributor/ledger/feedback.py),
the opaque subscriber ids of unsubscribe links, the WeChat steps' checkpoints, caches (the
access token, uploaded images), the scheduled jobs (distributor/schedule/jobs.py) and the leases that keep
two runs from driving the same steps, and each issue key's identity (its date and title).

Deliveries move pending → uncertain → sent or failed. A row is `uncertain` from just before its
message is handed over until the outcome is recorded; one left so may have been delivered, so it is
not sent again unless asked. The file runs in WAL
mode with synchronous=NORMAL: a commit costs tens of microseconds and survives a killed process
(only a power cut can lose the last commits, and then the row is still
`uncertain`, not lost). Opening runs quick_check; every SQLite fault (locked past
ledger.lock_timeout_seconds, damaged, full, read-only) is a `StorageError`. Commands open it
with `open_ledger`, which honours the settings.

On PostgreSQL (`ledger.url`, distributor/ledger/postgres.py) the same statements run, and the same
tables, versioned as `ledger_layout`; its layout is made and upgraded only by `distributor migrate`.
The drains, batch claims and relay state that workers share are in distributor/ledger/work.py.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar, Union

import psycopg

from distributor.audience.standing import READER_SOURCES
from distributor.errors import StorageError
from distributor.ledger import feedback, subscribers, work
from distributor.validate.addresses import domain_of

if TYPE_CHECKING:
    from distributor.ledger.postgres import PostgresConnection
    from distributor.settings import LedgerSettings

T = TypeVar("T")
# The connection a ledger runs on: SQLite's own, or the PostgreSQL one that speaks like it.
Connection = Union[sqlite3.Connection, "PostgresConnection"]
# What a database call may raise: SQLite's errors and psycopg's.
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    issue_key TEXT NOT NULL, channel TEXT NOT NULL, recipient TEXT NOT NULL,
    name TEXT, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, reply TEXT, message_id TEXT, content_hash TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, lease_owner TEXT, lease_until REAL, domain TEXT,
    relay TEXT,
    PRIMARY KEY (issue_key, channel, recipient)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriber_ids (
    id TEXT PRIMARY KEY, address TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS suppressions (
    address TEXT PRIMARY KEY, reason TEXT, source TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    issue_key TEXT NOT NULL, channel TEXT NOT NULL, step TEXT NOT NULL, value TEXT NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY (issue_key, channel, step));
CREATE TABLE IF NOT EXISTS cache (
    kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, expires_at REAL,
    PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL, taken_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS issue_identities (
    issue_key TEXT PRIMARY KEY, date TEXT NOT NULL, title TEXT NOT NULL, source_path TEXT NOT NULL,
    recorded_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, issue_path TEXT NOT NULL, channels TEXT NOT NULL,
    run_at REAL NOT NULL, zone TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'scheduled',
    lease_owner TEXT, lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0, started_at REAL,
    finished_at REAL, reason TEXT, issue_key TEXT, content_hash TEXT, exit_status INTEGER,
    created_at REAL NOT NULL, early_stops INTEGER NOT NULL DEFAULT 0, retry_at REAL, title TEXT);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, run_at);
""" + subscribers.SCHEMA + feedback.SCHEMA + work.SCHEMA
# Columns that ledgers of earlier layouts lack, added in place by `migrate`: (table, column) -> declaration.
_LATER_COLUMNS = {
    ("jobs", "early_stops"): "INTEGER NOT NULL DEFAULT 0", ("jobs", "retry_at"): "REAL", ("jobs", "title"): "TEXT",
    ("deliveries", "lease_owner"): "TEXT", ("deliveries", "lease_until"): "REAL", ("deliveries", "domain"): "TEXT",
    ("deliveries", "relay"): "TEXT"}
# Indexes on the columns of _LATER_COLUMNS: made once those columns exist.
_LATER_INDEXES = """
CREATE INDEX IF NOT EXISTS deliveries_by_lease ON deliveries (lease_owner, status) WHERE lease_owner IS NOT NULL;
"""
# The recipient's domain (after the last @), as each engine says it: filled in rows of earlier layouts.
_DOMAIN = {"sqlite": "lower(substr(recipient, instr(recipient, '@') + 1))",
           "postgresql": "lower(split_part(recipient, '@', -1))"}
# Every table of the ledger, in the order a copy is made (distributor/ledger/store.py `snapshot_of`).
TABLES = ("deliveries", "subscriber_ids", "suppressions", "checkpoints", "cache", "leases", "issue_identities",
          "jobs") + subscribers.TABLES + feedback.TABLES + work.TABLES
STATUSES = ("pending", "uncertain", "sent", "failed")
# The ledger's layout as this code writes it (SQLite: PRAGMA user_version; PostgreSQL: the
# ledger_layout table). 0: before versions, when the uncertain state was called `sending`. 2: the
# subscriber store (distributor/ledger/subscribers.py). 3: bounces and complaints
# (distributor/ledger/feedback.py). 4: rows claimed by workers under a lease, each with its
# recipient's domain for the relay routes (distributor/workers/).
SCHEMA_VERSION = 4
_PLAN_BATCH = 2000      # addresses inserted per statement while a plan streams the subscriber file
_IN_PLAN = " AND EXISTS (SELECT 1 FROM planned p WHERE p.channel = ? AND p.address = lower(d.recipient))"


class Suppression(NamedTuple):
    """An address that must not be mailed: why, on whose word (`source`: one-click, page, bounce,
    complaint, command), since when (epoch seconds). A tuple too, for the export's rows."""

    address: str
    reason: str | None
    source: str
    created_at: float


@dataclass(frozen=True)
class Lease:
    """`holder` has `name` until `expires_at` (epoch seconds)."""

    name: str
    holder: str
    expires_at: float


@dataclass(frozen=True)
class PlanResult:
    """What a plan changed: rows added, pending rows dropped because their address left the subscriber
    file, and whether the issue already had rows on the channel (a resumed or repeated run)."""

    added: int
    removed: int
    resumed: bool


@dataclass(frozen=True)
class DeliveryRow:
    recipient: str
    name: str | None
    status: str
    attempts: int
    last_error: str | None
    reply: str | None
    message_id: str | None
    content_hash: str | None
    subscriber_id: str | None


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _create_private(path: Path) -> None:
    """Create a new ledger file readable by its owner only: it holds every address and the WeChat
    token (SQLite gives its -wal and -shm files the same mode). An existing file is not opened
    here: closing any descriptor of it would drop the locks SQLite holds on it in this process."""
    if path.exists():
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return
    except OSError as exc:
        raise StorageError(f"cannot create the ledger (ledger.path): {exc.strerror or exc}", path=str(path)) from exc


def _check_integrity(db: sqlite3.Connection) -> None:
    """Raise `StorageError` unless SQLite's quick_check finds the file sound: a damaged page must stop
    a command at once, not pass for an empty or short ledger (about 30 ms for 100,000 rows)."""
    found = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
    if found != ["ok"]:
        first = found[0].splitlines()[-1] if found and found[0] else "no answer"
        raise StorageError(f"the ledger is damaged (SQLite quick_check: {first}); move it aside and restore "
                           "a backup: nothing was sent or changed")


def _disk_full(path: str) -> bool:
    """Whether the file system holding the ledger at `path` has no space left."""
    try:
        return path != ":memory:" and shutil.disk_usage(Path(path).parent).free == 0
    except OSError:
        return False


def _problem(exc: sqlite3.Error, lock_timeout_seconds: float, path: str) -> str:
    """Say in one line what an SQLite error means for the person running the command. SQLite calls
    some writes that fail for want of space (its shared-memory index) an I/O error: the free space
    tells them apart."""
    code = getattr(exc, "sqlite_errorname", "") or ""
    if code.startswith("SQLITE_IOERR") and _disk_full(path):
        code = "SQLITE_FULL"
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return (f"the ledger is locked by another process (waited {lock_timeout_seconds:g} s, "
                "ledger.lock_timeout_seconds)")
    if code.startswith("SQLITE_FULL"):
        return "the disk holding the ledger is full; free some space and run again (nothing was half-written)"
    if code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return f"the ledger is damaged ({exc}); move it aside and restore a backup"
    if code.startswith("SQLITE_READONLY"):
        return f"the ledger cannot be written ({exc}): give this user write access to the file and its folder"
    if code.startswith("SQLITE_CANTOPEN"):
        return f"cannot open the ledger ({exc}): check the file and that its folder can be written"
    if code.startswith("SQLITE_IOERR"):
        return f"input/output error on the ledger ({exc})"
    return f"ledger error: {exc}"


def _open_read_only(source: Path, lock_timeout_seconds: float) -> sqlite3.Connection:
    """Open the ledger at `source` read-only. On a read-only file system SQLite cannot make the WAL
    index it needs: then, when no WAL file is left over, nothing can be writing and it is read as
    immutable."""
    uri = source.resolve().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=lock_timeout_seconds)
    try:
        db.execute("PRAGMA schema_version").fetchone()
        return db
    except sqlite3.OperationalError as exc:
        db.close()
        if not (getattr(exc, "sqlite_errorname", "") or "").startswith("SQLITE_CANTOPEN") \
                or Path(f"{source}-wal").exists():
            raise
    return sqlite3.connect(f"{uri}?immutable=1", uri=True)


class Ledger:
    """The SQLite ledger at `path` (":memory:" for one that vanishes, as a dry run wants).

    Opening checks the file (quick_check); every SQLite failure while opening is a `StorageError`,
    and `storage_errors()` makes those of later calls one too. Another process's write lock is
    waited for `lock_timeout_seconds` at most (ledger.lock_timeout_seconds)."""

    def __init__(self, path: str | Path, *, clock=time.time, lock_timeout_seconds: float = 10.0):
        self.clock = clock
        self.lock_timeout_seconds = lock_timeout_seconds
        self.dialect = "sqlite"
        target = str(path)
        if target != ":memory:":
            target_path = Path(target).expanduser()
            try:
                target_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create the ledger folder (ledger.path): {exc.strerror or exc}",
                                   path=str(target_path)) from exc
            target = str(target_path)
            _create_private(target_path)
        self.path = target
        try:
            # Blocking channel calls run in worker threads and reach the ledger from there (the WeChat
            # token store); SQLite's serialized mode makes one shared connection safe for that.
            self.db: Connection = sqlite3.connect(target, isolation_level=None, timeout=lock_timeout_seconds,
                                                  check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageError(_problem(exc, lock_timeout_seconds, target), path=target) from exc
        with self.storage_errors():
            try:
                if target != ":memory:":
                    _check_integrity(self.db)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                migrate(self.db, "sqlite", target)
            except BaseException:
                self.db.close()
                raise

    @classmethod
    def on_postgres(cls, url: str, *, password: str | None = None, clock=time.time,
                    lock_timeout_seconds: float = 10.0) -> Ledger:
        """Open the ledger in the PostgreSQL database at `url` (its password, when the server asks for
        one, from `password`). Its layout must be this code's: `distributor migrate` makes or upgrades
        it, deliberately, as every machine's workers share it."""
        from distributor.ledger.postgres import PostgresConnection, describe_url
        ledger = cls.__new__(cls)
        ledger.clock, ledger.lock_timeout_seconds, ledger.dialect = clock, lock_timeout_seconds, "postgresql"
        ledger.path = describe_url(url)
        with ledger.storage_errors():
            ledger.db = PostgresConnection(url, password=password, connect_timeout=lock_timeout_seconds)
            try:
                ledger.db.execute(f"SET lock_timeout = '{int(lock_timeout_seconds * 1000)}ms'")
                found = layout_version(ledger.db, "postgresql")
                if found != SCHEMA_VERSION:
                    raise StorageError(_layout_problem(found), path=ledger.path)
            except BaseException:
                ledger.db.close()
                raise
        return ledger

    @classmethod
    def snapshot(cls, path: str | Path, *, lock_timeout_seconds: float = 10.0) -> Ledger:
        """Return an in-memory copy of the ledger at `path` (empty if there is none): a dry run
        sees what a real run would see, and whatever it writes is gone when it ends. The file is
        only read, so a read-only ledger (file or folder) serves as well. The copy holds no leases,
        so a dry run goes on from the steps recorded even while a real run holds them."""
        copy = cls(":memory:", lock_timeout_seconds=lock_timeout_seconds)
        source = Path(path).expanduser()
        if not source.exists():
            return copy
        copy.path = str(source)
        with copy.storage_errors():
            original = _open_read_only(source, lock_timeout_seconds)
            try:
                _check_integrity(original)
                assert isinstance(copy.db, sqlite3.Connection)     # made above, in memory
                original.backup(copy.db)
            finally:
                original.close()
            migrate(copy.db, "sqlite", str(source))     # an empty file, or one of an earlier layout
            copy.forget_leases()
        return copy

    @classmethod
    def snapshot_of(cls, ledger: Ledger) -> Ledger:
        """Return an in-memory SQLite copy of `ledger` (on PostgreSQL), for a dry run: table by table, in
        one read-only transaction, so the copy is of one moment."""
        copy = cls(":memory:", lock_timeout_seconds=ledger.lock_timeout_seconds)
        copy.path = ledger.path
        with ledger.storage_errors(), copy.storage_errors():
            ledger.db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                for table in TABLES:
                    cursor = ledger.db.execute(f"SELECT * FROM {table}")
                    columns = [column[0] for column in cursor.description]
                    copy.db.executemany(f"INSERT INTO {table} ({', '.join(columns)})"
                                        f" VALUES ({', '.join('?' * len(columns))})", cursor)
            finally:
                ledger.db.execute("ROLLBACK")
            copy.forget_leases()
        return copy

    def forget_leases(self) -> None:
        """A dry run's copy holds no one's lease and waits for none: it would never see one released."""
        self.db.execute("DELETE FROM leases")
        self.db.execute("UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL")

    @contextlib.contextmanager
    def storage_errors(self) -> Iterator[None]:
        """Turn a database failure inside the block into a `StorageError` that says what it means
        (locked, disk full, damaged, read-only, unreachable) in one line, naming the ledger."""
        try:
            yield
        except StorageError as exc:
            if exc.path is None:
                raise StorageError(str(exc), path=self.path) from exc
            raise
        except sqlite3.Error as exc:
            problem = _problem(exc, self.lock_timeout_seconds, self.path)
            if (getattr(exc, "sqlite_errorname", "") or "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) \
                    and self.path != ":memory:":
                problem += self._lock_holders()
            raise StorageError(problem, path=self.path) from exc
        except DATABASE_ERRORS as exc:
            from distributor.ledger.postgres import problem as postgres_problem
            raise StorageError(postgres_problem(exc, self.lock_timeout_seconds), path=self.path) from exc

    def _lock_holders(self) -> str:
        """Say what may be holding the write lock, when the ledger knows: a scheduled job a runner is
        running, a run that holds a lease (the WeChat steps of an issue). Reading needs no lock in
        WAL mode; a connection of its own serves when this one is already closed."""
        now, found = self.clock(), []
        with contextlib.closing(sqlite3.connect(f"{Path(self.path).resolve().as_uri()}?mode=ro", uri=True,
                                                timeout=0.1)) as db:
            for query, describe in (
                    ("SELECT id, lease_owner FROM jobs WHERE state = 'running' AND lease_until > ?",
                     lambda job, owner: f"scheduled job {job} is running (runner {owner})"),
                    ("SELECT name, holder FROM leases WHERE expires_at > ?",
                     lambda name, holder: f"lease {name} is held by {holder}")):
                try:
                    found += [describe(*row) for row in db.execute(query, (now,))]
                except sqlite3.Error:
                    continue                # no such table yet, or not readable either
        return f"; held now: {', '.join(found)}" if found else "; nothing in the ledger says by what"

    def close(self) -> None:
        """Commit what is pending and close; the connection is closed even when the commit fails."""
        try:
            self.commit()
        finally:
            self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block as one write transaction: under the write lock from its start (`begin`),
        committed when it ends, rolled back when it raises. Entered while a transaction is open (the
        row run's group commit), it joins it and commits it whole. SQLite errors pass as they are;
        `storage_errors()` around the caller says what they mean. A COMMIT that fails (a full disk) is
        rolled back too: the connection is shared by the web pages' requests, and the next one must not
        join, and commit, what this one was told had failed."""
        self.begin()
        try:
            yield
            self.commit()
        except BaseException:
            if self.db.in_transaction:          # SQLite has already rolled back after some errors
                with contextlib.suppress(*DATABASE_ERRORS):
                    self.db.execute("ROLLBACK")
            raise

    def begin(self) -> None:
        """Open a transaction unless one is open: later writes wait for `commit` to become durable.
        IMMEDIATE takes the write lock now (waiting for another process's commit if need be), so a
        read inside the transaction can never make a later write fail with `database is locked`."""
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """Make every write since `begin` durable, in one commit."""
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    # --- subscribers and suppression -------------------------------------------------------

    def subscriber_id(self, address: str) -> str:
        """Return the opaque id that stands for `address` in unsubscribe links, making one if new."""
        folded = address.lower()
        row = self.db.execute("SELECT id FROM subscriber_ids WHERE address = ?", (folded,)).fetchone()
        if row:
            return row[0]
        new_id = secrets.token_urlsafe(12)
        self.db.execute("INSERT OR IGNORE INTO subscriber_ids (id, address) VALUES (?, ?)", (new_id, folded))
        return self.db.execute("SELECT id FROM subscriber_ids WHERE address = ?", (folded,)).fetchone()[0]

    def address_for(self, subscriber_id: str) -> str | None:
        row = self.db.execute("SELECT address FROM subscriber_ids WHERE id = ?", (subscriber_id,)).fetchone()
        return row[0] if row else None

    def suppress(self, address: str, *, reason: str, source: str) -> None:
        """Never send to `address` again (until `unsuppress`); repeating it changes nothing, except that
        a bounce, a complaint or a command replaces the source and reason of a suppression the reader
        made (`READER_SOURCES`): the source says what a reader may lift. The address's
        lists in the subscriber store say so too, in their history."""
        folded, now = address.lower(), self.clock()
        readers = ",".join("?" * len(READER_SOURCES))
        # The suppression and its lists' marks, whole or not at all: inside a transaction already open (the
        # row run's round, a caller's block) they are part of it; else a transaction of their own.
        with contextlib.nullcontext() if self.db.in_transaction else self.transaction():
            self.db.execute("INSERT INTO suppressions VALUES (?, ?, ?, ?) ON CONFLICT (address) DO UPDATE"
                            " SET reason = excluded.reason, source = excluded.source, created_at = excluded.created_at"
                            f" WHERE suppressions.source IN ({readers}) AND excluded.source NOT IN ({readers})",
                            (folded, reason, source, now, *READER_SOURCES, *READER_SOURCES))
            subscribers.mark_suppressed(self.db, folded, source, reason, now)

    def unsuppress(self, address: str) -> bool:
        return self.db.execute("DELETE FROM suppressions WHERE address = ?", (address.lower(),)).rowcount > 0

    def suppressions(self) -> Iterator[Suppression]:
        for row in self.db.execute("SELECT address, reason, source, created_at FROM suppressions ORDER BY address"):
            yield Suppression(*row)

    def is_suppressed(self, address: str) -> bool:
        return self.db.execute("SELECT 1 FROM suppressions WHERE address = ?",
                               (address.lower(),)).fetchone() is not None

    def suppression(self, address: str) -> Suppression | None:
        """Return the suppression of `address`, or None when it may be mailed."""
        row = self.db.execute("SELECT address, reason, source, created_at FROM suppressions WHERE address = ?",
                              (address.lower(),)).fetchone()
        return Suppression(*row) if row else None

    # --- deliveries ------------------------------------------------------------------------

    def plan(self, issue_key: str, channel: str, content_hash: str,
             recipients: Iterable[tuple[str, str | None]]) -> PlanResult:
        """Make the issue's plan for `channel` match `recipients` (every address of the subscriber
        file, as (address, name)), in one transaction: whole, or not at all if reading them fails.
        A pending row is added for each address not yet known and not suppressed, with its opaque
        subscriber id; the pending rows of addresses no longer among them are dropped (never mailed);
        rows already uncertain, sent or failed are history and stay. The addresses are kept for this
        connection, so `rows(..., only_planned=True)` leaves out those that left the file."""
        now, added = self.clock(), 0
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS planned (channel TEXT NOT NULL, address TEXT NOT NULL,"
                        " PRIMARY KEY (channel, address))")
        with self.transaction():
            self.db.execute("DELETE FROM planned WHERE channel = ?", (channel,))
            resumed = self.db.execute("SELECT 1 FROM deliveries WHERE issue_key = ? AND channel = ? LIMIT 1",
                                      (issue_key, channel)).fetchone() is not None
            for batch in _batches(recipients, _PLAN_BATCH):
                added += self._insert(issue_key, channel, content_hash, now, batch)
            removed = self.db.execute(
                "DELETE FROM deliveries WHERE issue_key = ? AND channel = ? AND status = 'pending' AND NOT EXISTS"
                " (SELECT 1 FROM planned p WHERE p.channel = ? AND p.address = lower(recipient))",
                (issue_key, channel, channel)).rowcount
        return PlanResult(added, removed, resumed)

    def _insert(self, issue_key: str, channel: str, content_hash: str, now: float,
                batch: list[tuple[str, str | None]]) -> int:
        """Note a batch of the file's addresses and add the rows that are new; return how many."""
        self.db.executemany("INSERT OR IGNORE INTO planned VALUES (?, lower(?))",
                            [(channel, address) for address, _ in batch])
        added = self.db.executemany(
            "INSERT OR IGNORE INTO deliveries (issue_key, channel, recipient, name, content_hash, created_at,"
            " updated_at, domain) SELECT ?, ?, ?, ?, ?, ?, ?, ?"
            " WHERE lower(?) NOT IN (SELECT address FROM suppressions)",
            [(issue_key, channel, address, name, content_hash, now, now, domain_of(address), address)
             for address, name in batch]).rowcount
        self.db.executemany("INSERT OR IGNORE INTO subscriber_ids (id, address) VALUES (?, lower(?))",
                            [(secrets.token_urlsafe(12), address) for address, _ in batch])
        return added

    def rows(self, issue_key: str, channel: str, statuses: Iterable[str], *,
             skip_suppressed: bool = True, only_planned: bool = False) -> Iterator[DeliveryRow]:
        """Yield the rows of this issue and channel whose status is one of `statuses` (leaving out
        suppressed addresses unless asked, and with `only_planned` those not in the subscriber file
        that this connection's last `plan` read); a page at a time in recipient order, so rows may be
        updated while this runs and none is seen twice."""
        wanted = tuple(statuses)
        marks = ",".join("?" * len(wanted))
        last = ""
        while True:
            page = self.db.execute(
                "SELECT d.recipient, d.name, d.status, d.attempts, d.last_error, d.reply, d.message_id,"
                " d.content_hash, s.id FROM deliveries d LEFT JOIN subscriber_ids s"
                " ON s.address = lower(d.recipient) WHERE d.issue_key = ? AND d.channel = ?"
                f" AND d.status IN ({marks}) AND d.recipient > ?"
                f" AND (? OR lower(d.recipient) NOT IN (SELECT address FROM suppressions))"
                f"{_IN_PLAN if only_planned else ''} ORDER BY d.recipient LIMIT 500",
                (issue_key, channel, *wanted, last, not skip_suppressed,
                 *((channel,) if only_planned else ()))).fetchall()
            if not page:
                return
            for row in page:
                yield DeliveryRow(*row)
            last = page[-1][0]

    def count(self, issue_key: str, channel: str, statuses: Iterable[str], *, only_planned: bool = False) -> int:
        """Count the rows that `rows()` would yield."""
        wanted = tuple(statuses)
        return self.db.execute(
            f"SELECT COUNT(*) FROM deliveries d WHERE issue_key = ? AND channel = ? AND status IN"
            f" ({','.join('?' * len(wanted))}) AND lower(recipient) NOT IN (SELECT address FROM suppressions)"
            f"{_IN_PLAN if only_planned else ''}",
            (issue_key, channel, *wanted, *((channel,) if only_planned else ()))).fetchone()[0]

    def requeue(self, issue_key: str, channel: str, statuses: Iterable[str]) -> int:
        """Put the rows in `statuses` that the last `plan` read back to `pending`, to be sent again
        (`publish --resend-failed` through the workers); return how many."""
        wanted = tuple(statuses)
        if not wanted:
            return 0
        return self.db.execute(
            f"UPDATE deliveries SET status = 'pending', updated_at = ? WHERE issue_key = ? AND channel = ? AND status"
            f" IN ({','.join('?' * len(wanted))}) AND EXISTS (SELECT 1 FROM planned p WHERE p.channel = ?"
            " AND p.address = lower(deliveries.recipient))",
            (self.clock(), issue_key, channel, *wanted, channel)).rowcount

    def sent_since(self, since: float, channels: Iterable[str]) -> int:
        """Count the messages of `channels` handed over (or being handed over) since `since`, for the
        caps of the transport they share."""
        names = tuple(channels)
        return self.db.execute("SELECT COUNT(*) FROM deliveries WHERE status IN ('sent', 'uncertain')"
                               f" AND updated_at >= ? AND channel IN ({','.join('?' * len(names))})",
                               (since, *names)).fetchone()[0]

    def claim(self, issue_key: str, channel: str, recipient: str, message_id: str,
              from_statuses: Iterable[str]) -> bool:
        """Mark the row `uncertain` (its message is about to be handed over) if it is still in one of
        `from_statuses`: from now on a crash leaves it uncertain. Return False when another run has
        moved it on (it is theirs to send)."""
        wanted = tuple(from_statuses)
        return self.db.execute(
            "UPDATE deliveries SET status = 'uncertain', attempts = attempts + 1, message_id = ?,"
            " updated_at = ? WHERE issue_key = ? AND channel = ? AND recipient = ?"
            f" AND status IN ({','.join('?' * len(wanted))})",
            (message_id, self.clock(), issue_key, channel, recipient, *wanted)).rowcount == 1

    def mark(self, issue_key: str, channel: str, recipient: str, status: str, *,
             reply: str | None = None, error: str | None = None, uncount: bool = False) -> None:
        """Set the row's status with what the other side said (`sent`, `failed`, or back to `pending`).
        `uncount` takes back the attempt that `claim` counted, when the refusal was about the
        sender or the session and nothing was tried for this recipient. An outcome ends a worker's
        lease on the row (distributor/ledger/work.py); a row back to `pending` keeps it, for its retry."""
        if status not in STATUSES:
            raise ValueError(status)
        kept = status == "pending"
        self.db.execute(
            "UPDATE deliveries SET status = ?, reply = COALESCE(?, reply), last_error = ?,"
            " attempts = CASE WHEN attempts > ? THEN attempts - ? ELSE 0 END, updated_at = ?,"
            " lease_owner = CASE WHEN ? THEN lease_owner END, lease_until = CASE WHEN ? THEN lease_until END"
            " WHERE issue_key = ? AND channel = ? AND recipient = ?",
            (status, reply, error, int(uncount), int(uncount), self.clock(), kept, kept, issue_key, channel,
             recipient))

    def counts(self, issue_key: str) -> dict[str, dict[str, int]]:
        """Return {channel: {status: count}} for the issue."""
        result: dict[str, dict[str, int]] = {}
        for channel, status, count in self.db.execute(
                "SELECT channel, status, COUNT(*) FROM deliveries WHERE issue_key = ?"
                " GROUP BY channel, status", (issue_key,)):
            result.setdefault(channel, {})[status] = count
        return result

    def content_hashes(self, issue_key: str, channel: str) -> set[str]:
        rows = self.db.execute("SELECT DISTINCT content_hash FROM deliveries WHERE issue_key = ? AND"
                               " channel = ? AND status != 'pending'", (issue_key, channel))
        return {row[0] for row in rows if row[0]}

    # --- step checkpoints and caches ---------------------------------------------------------

    def checkpoint(self, issue_key: str, channel: str, step: str) -> str | None:
        row = self.db.execute("SELECT value FROM checkpoints WHERE issue_key = ? AND channel = ? AND step = ?",
                              (issue_key, channel, step)).fetchone()
        return row[0] if row else None

    def save_checkpoint(self, issue_key: str, channel: str, step: str, value: str) -> None:
        self.db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?) ON CONFLICT (issue_key, channel, step)"
                        " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                        (issue_key, channel, step, value, self.clock()))

    def checkpoints(self, issue_key: str, channel: str) -> dict[str, str]:
        """Return every step recorded for the issue and channel, by step name."""
        return dict(self.db.execute("SELECT step, value FROM checkpoints WHERE issue_key = ? AND channel = ?",
                                    (issue_key, channel)))

    def drop_checkpoint(self, issue_key: str, channel: str, step: str) -> None:
        self.db.execute("DELETE FROM checkpoints WHERE issue_key = ? AND channel = ? AND step = ?",
                        (issue_key, channel, step))

    def cached(self, kind: str, key: str) -> str | None:
        """Return the cached value unless it has expired."""
        row = self.db.execute("SELECT value, expires_at FROM cache WHERE kind = ? AND key = ?",
                              (kind, key)).fetchone()
        if row is None or (row[1] is not None and row[1] <= self.clock()):
            return None
        return row[0]

    def cache(self, kind: str, key: str, value: str, expires_at: float | None = None) -> None:
        self.db.execute("INSERT INTO cache VALUES (?, ?, ?, ?) ON CONFLICT (kind, key)"
                        " DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                        (kind, key, value, expires_at))

    def uncache(self, kind: str, key: str) -> None:
        self.db.execute("DELETE FROM cache WHERE kind = ? AND key = ?", (kind, key))

    # --- leases ------------------------------------------------------------------------------
    # A lease gives one process a name (such as "wechat:<issue key>") until it expires: the holder
    # renews it while it works, and once it lapses (the holder died) anyone may take it.

    def take_lease(self, name: str, holder: str, seconds: float) -> Lease:
        """Take the lease on `name` for `holder` until now + `seconds`, unless another holder's lease
        on it still runs; return the lease as it stands (taken when its holder is `holder`). The
        look and the take happen under one write lock (BEGIN IMMEDIATE), so two processes asking at
        the same moment never both get it."""
        with self.transaction():
            now = self.clock()
            self.db.execute(
                "INSERT INTO leases (name, holder, expires_at, taken_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,"
                " taken_at = excluded.taken_at WHERE leases.expires_at <= ? OR leases.holder = excluded.holder",
                (name, holder, now + seconds, now, now))
            row = self.db.execute("SELECT name, holder, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
        return Lease(*row)

    def renew_lease(self, name: str, holder: str, seconds: float) -> bool:
        """Extend `holder`'s lease on `name` to now + `seconds`; False when another holder has it."""
        return self.db.execute("UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?",
                               (self.clock() + seconds, name, holder)).rowcount == 1

    def release_lease(self, name: str, holder: str) -> None:
        """Give up `holder`'s lease on `name` (nothing happens when another holder has it)."""
        self.db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def lease(self, name: str) -> Lease | None:
        """Return the lease that holds `name` now, or None when none does."""
        row = self.db.execute("SELECT name, holder, expires_at FROM leases WHERE name = ? AND expires_at > ?",
                              (name, self.clock())).fetchone()
        return Lease(*row) if row else None

    # --- issue identity ----------------------------------------------------------------------
    # Which issue a key stands for: its date and title (and file) when a run first committed to it
    # (confirmed, about to send), so another file that comes to the same key is refused
    # (distributor/ledger/identity.py).

    def issue_identity(self, issue_key: str) -> tuple[str, str, str, float] | None:
        """Return (date, title, source path, time recorded) of the issue known by `issue_key`."""
        return self.db.execute("SELECT date, title, source_path, recorded_at FROM issue_identities"
                               " WHERE issue_key = ?", (issue_key,)).fetchone()

    def remember_issue_identity(self, issue_key: str, date: str, title: str,
                                source_path: str) -> tuple[str, str, str, float]:
        """Record the issue's identity unless the key has one; return the one the ledger holds (of
        the first run to record it, when two start at once)."""
        self.db.execute("INSERT OR IGNORE INTO issue_identities VALUES (?, ?, ?, ?, ?)",
                        (issue_key, date, title, source_path, self.clock()))
        identity = self.issue_identity(issue_key)
        assert identity is not None             # inserted now, or there before
        return identity

    def issue_recorded(self, issue_key: str) -> bool:
        """Whether any delivery row, step checkpoint or identity is recorded under `issue_key`."""
        return self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM deliveries WHERE issue_key = ?)"
            " OR EXISTS (SELECT 1 FROM checkpoints WHERE issue_key = ?)"
            " OR EXISTS (SELECT 1 FROM issue_identities WHERE issue_key = ?)",
            (issue_key, issue_key, issue_key)).fetchone()[0] == 1

    def recorded_versions(self, issue_key: str) -> tuple[int, set[str], set[str]]:
        """Return what the rows under `issue_key` say about the file they came from: how many rows
        and checkpoints there are, the sha256 of the file each delivery and WeChat draft was made
        from, and the paths of the files scheduled jobs published under that key."""
        rows = self.db.execute("SELECT (SELECT COUNT(*) FROM deliveries WHERE issue_key = ?)"
                               " + (SELECT COUNT(*) FROM checkpoints WHERE issue_key = ?)",
                               (issue_key, issue_key)).fetchone()[0]
        hashes = {row[0] for row in self.db.execute(
            "SELECT DISTINCT content_hash FROM deliveries WHERE issue_key = ? AND content_hash IS NOT NULL"
            " UNION SELECT value FROM checkpoints WHERE issue_key = ? AND step = 'draft_hash'",
            (issue_key, issue_key))}
        paths = {row[0] for row in self.db.execute("SELECT DISTINCT issue_path FROM jobs WHERE issue_key = ?",
                                                   (issue_key,))}
        return rows, hashes, paths

    def adopt_issue_rows(self, old_key: str, new_key: str) -> int:
        """Move every delivery row and checkpoint (and scheduled job) of `old_key` to `new_key`, in
        one transaction; return how many rows and checkpoints moved. The identity is recorded later,
        once a run commits to the issue (distributor/ledger/identity.py)."""
        with self.transaction():
            moved = sum(self.db.execute(f"UPDATE {table} SET issue_key = ? WHERE issue_key = ?",
                                        (new_key, old_key)).rowcount for table in ("deliveries", "checkpoints"))
            self.db.execute("UPDATE jobs SET issue_key = ? WHERE issue_key = ?", (new_key, old_key))
        return moved


def open_ledger(settings: LedgerSettings, *, create: bool = True) -> Ledger:
    """Open the ledger that `settings` (the `ledger` section) name: the PostgreSQL database of
    `ledger.url` when set (its password from the environment variable `ledger.password_env`), else
    the SQLite file `ledger.path`, waiting for another process's write lock `lock_timeout_seconds` at
    most. A command that only reads (`create=False`) gets an empty in-memory one when no file exists
    yet, rather than making one."""
    if settings.url:
        return Ledger.on_postgres(settings.url, password=os.environ.get(settings.password_env),
                                  lock_timeout_seconds=settings.lock_timeout_seconds)
    if not create and not Path(settings.path).expanduser().exists():
        return Ledger(":memory:", lock_timeout_seconds=settings.lock_timeout_seconds)
    return Ledger(settings.path, lock_timeout_seconds=settings.lock_timeout_seconds)


def migrate_ledger(settings: LedgerSettings) -> tuple[str, int, int]:
    """Make or upgrade the ledger that `settings` name (`distributor migrate`); return where it is, the
    layout found (0: none) and the layout it is in now."""
    if not settings.url:
        path = str(Path(settings.path).expanduser())
        existed = Path(path).exists() and Path(path).stat().st_size > 0
        found = _file_layout(path) if existed else 0
        with Ledger(path, lock_timeout_seconds=settings.lock_timeout_seconds):
            return path, found, SCHEMA_VERSION
    from distributor.ledger.postgres import PostgresConnection, describe_url
    where = describe_url(settings.url)
    try:
        db = PostgresConnection(settings.url, password=os.environ.get(settings.password_env),
                                connect_timeout=settings.lock_timeout_seconds)
    except DATABASE_ERRORS as exc:
        from distributor.ledger.postgres import problem
        raise StorageError(problem(exc, settings.lock_timeout_seconds), path=where) from exc
    try:
        found, now = migrate(db, "postgresql", where)
    except DATABASE_ERRORS as exc:
        from distributor.ledger.postgres import problem
        raise StorageError(problem(exc, settings.lock_timeout_seconds), path=where) from exc
    finally:
        db.close()
    return where, found, now


def _file_layout(path: str) -> int:
    """Return the layout of the SQLite ledger at `path`, read without changing it."""
    try:
        with contextlib.closing(sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)) as db:
            return layout_version(db, "sqlite")
    except sqlite3.Error as exc:
        raise StorageError(_problem(exc, 0, path), path=path) from exc


def snapshot_ledger(settings: LedgerSettings) -> Ledger:
    """Return an in-memory copy of the ledger that `settings` name, for a dry run."""
    if settings.url:
        with open_ledger(settings) as ledger:
            return Ledger.snapshot_of(ledger)
    return Ledger.snapshot(settings.path, lock_timeout_seconds=settings.lock_timeout_seconds)


@contextlib.contextmanager
def write_transaction(db: Connection) -> Iterator[None]:
    """Run the block as one write transaction on `db`, a connection in autocommit mode with none open
    (the jobs' own connection, or one being opened): under the write lock from its start (BEGIN
    IMMEDIATE), committed when it ends, rolled back when the block or the commit raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:          # SQLite has already rolled back after some errors
            db.execute("ROLLBACK")
        raise


def layout_version(db: Connection, dialect: str) -> int:
    """Return the layout the ledger on `db` was written in (0: none yet, or from before versions)."""
    if dialect == "sqlite":
        return db.execute("PRAGMA user_version").fetchone()[0]
    if db.execute("SELECT to_regclass('ledger_layout')").fetchone()[0] is None:
        return 0
    row = db.execute("SELECT version FROM ledger_layout").fetchone()
    return row[0] if row else 0


def _layout_problem(found: int) -> str:
    """Say why a ledger of layout `found` cannot be used by this code, and what to run."""
    if found > SCHEMA_VERSION:
        return (f"the ledger was written by a newer distributor (layout {found}; this one knows up to "
                f"{SCHEMA_VERSION}): upgrade the distributor")
    if found == 0:
        return "the database holds no ledger yet: run `distributor migrate` to make one"
    return (f"the ledger is of an earlier layout ({found}; this distributor needs {SCHEMA_VERSION}): "
            "stop the workers and run `distributor migrate`")


def migrate(db: Connection, dialect: str, where: str) -> tuple[int, int]:
    """Bring the ledger on `db` to SCHEMA_VERSION in one transaction, making its tables where there
    are none; refuse one written by a newer version, whose rows this code could misread. Return the
    layout found and the one it is in now. SQLite ledgers are migrated whenever they are opened; a
    PostgreSQL one only by `distributor migrate`, since workers of several machines share it."""
    found = layout_version(db, dialect)
    if found > SCHEMA_VERSION:
        raise StorageError(_layout_problem(found), path=where)
    if found == SCHEMA_VERSION:
        if dialect == "sqlite":
            _run_script(db, _SCHEMA)        # a table that was dropped by hand comes back, empty
        if not _missing_columns(db, dialect):
            return found, found
    with write_transaction(db):
        if dialect == "sqlite":
            _run_script(db, _SCHEMA)
        else:
            from distributor.ledger.postgres import schema
            _run_script(db, schema(_SCHEMA))
            db.execute("CREATE TABLE IF NOT EXISTS ledger_layout (version INTEGER NOT NULL)")
        for table, column in _missing_columns(db, dialect):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {_LATER_COLUMNS[table, column]}")
        _run_script(db, _LATER_INDEXES)
        db.execute("UPDATE deliveries SET status = 'uncertain' WHERE status = 'sending'")
        db.execute(f"UPDATE deliveries SET domain = {_DOMAIN[dialect]} WHERE domain IS NULL")
        if dialect == "sqlite":
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        else:
            db.execute("DELETE FROM ledger_layout")
            db.execute("INSERT INTO ledger_layout VALUES (?)", (SCHEMA_VERSION,))
    return found, SCHEMA_VERSION


def _run_script(db: Connection, script: str) -> None:
    """Run each statement of `script` inside the transaction open on `db` (sqlite3's executescript
    would commit it first)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _missing_columns(db: Connection, dialect: str) -> list[tuple[str, str]]:
    """Return the (table, column) of _LATER_COLUMNS that the ledger's tables lack."""
    return [(table, column) for table, column in _LATER_COLUMNS if column not in _columns(db, dialect, table)]


def _columns(db: Connection, dialect: str, table: str) -> set[str]:
    if dialect == "sqlite":
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    return {row[0] for row in db.execute("SELECT column_name FROM information_schema.columns"
                                         " WHERE table_name = ? AND table_schema = current_schema()", (table,))}
