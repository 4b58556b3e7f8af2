"""The ledger on PostgreSQL: a connection that speaks the SQL the ledger is written in.

The ledger's statements are written once, in the SQL that SQLite and PostgreSQL share, with SQLite's
`?` placeholders; `PostgresConnection` gives them the shape of `sqlite3.Connection`, so every module
of the ledger runs on either. What differs is translated here, once per statement text:
placeholders (`?` → `%s`), `INSERT OR IGNORE` (→ `ON CONFLICT DO NOTHING`), an empty blob, SQLite's
no-index hint, and the column types of the schema (REAL is 4 bytes in PostgreSQL: epoch seconds
need DOUBLE PRECISION; a table without a key gets a `rowid` column, as SQLite gives every such table
one).

A write transaction (`BEGIN IMMEDIATE`, as the ledger opens one) also takes one advisory lock, so
writers follow one another as they do on SQLite and every guarantee the SQLite suite proves holds
here too; the workers' batch claims (`plain_begin`) do not take it: `FOR UPDATE SKIP LOCKED` keeps
them apart. Statements are bound on the client (psycopg's ClientCursor): values reach the server as
literals, typed by their columns, as SQLite types them.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import pq

# The advisory lock key of the ledger's write transactions (any constant: one lock per database).
WRITE_LOCK_KEY = 0x64697374     # "dist"
_INSERT_OR_IGNORE = re.compile(r"^\s*INSERT OR IGNORE INTO", re.IGNORECASE)
_RETURNING = re.compile(r"\sRETURNING\s", re.IGNORECASE)
# SQLite's unary + before a column keeps its planner off that column's index; PostgreSQL has no + on text.
_NO_INDEX_HINT = re.compile(r"= \+(?=[A-Za-z_])")


@functools.lru_cache(maxsize=512)
def translate(statement: str) -> str:
    """Return `statement` (SQLite's dialect of the ledger) as PostgreSQL reads it."""
    sql = statement.replace("%", "%%")
    if _INSERT_OR_IGNORE.match(sql):
        sql = _INSERT_OR_IGNORE.sub("INSERT INTO", sql, count=1)
        returning = _RETURNING.search(sql)
        sql = (f"{sql[:returning.start()]} ON CONFLICT DO NOTHING{sql[returning.start():]}" if returning
               else f"{sql} ON CONFLICT DO NOTHING")
    sql = _NO_INDEX_HINT.sub("= ", sql).replace("X''", "''::bytea")
    return sql.replace("?", "%s")


def schema(script: str) -> str:
    """Return the ledger's schema (SQLite's CREATE statements) with PostgreSQL's column types."""
    statements = []
    for statement in script.split(";"):
        if not statement.strip():
            continue
        sql = re.sub(r"\)\s*WITHOUT ROWID\s*$", ")", statement.strip())
        sql = re.sub(r"\bINTEGER PRIMARY KEY( AUTOINCREMENT)?\b", "BIGSERIAL PRIMARY KEY", sql)
        sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)
        sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
        sql = re.sub(r"\bBLOB\b", "BYTEA", sql)
        if re.match(r"CREATE (TEMP )?TABLE", sql) and "PRIMARY KEY" not in sql:
            sql = sql[:sql.rindex(")")] + ", rowid BIGSERIAL)"
        statements.append(sql)
    return ";\n".join(statements)


def describe_url(url: str) -> str:
    """Name the database of `url` without its password, for messages: host, port and database."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql://{host}{port}{parts.path or '/'}"


class PostgresConnection:
    """A psycopg connection in autocommit mode with the interface of `sqlite3.Connection` that the ledger
    uses (execute, executemany, in_transaction). Safe to share between threads: psycopg serialises the
    calls on one connection."""

    def __init__(self, url: str, *, password: str | None, connect_timeout: float):
        self.url = url
        self.raw = psycopg.connect(url, autocommit=True, cursor_factory=psycopg.ClientCursor,
                                   password=password, connect_timeout=max(1, int(connect_timeout)),
                                   application_name="distributor")

    def execute(self, statement: str, parameters: Sequence[Any] = ()) -> Any:
        if statement.strip().upper() == "BEGIN IMMEDIATE":
            return self.begin_serialised()
        cursor = self.raw.cursor()
        cursor.execute(translate(statement), tuple(parameters))
        return cursor

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> Any:
        """Run `statement` once per row, pipelined; the cursor's rowcount is the sum, as sqlite3 gives it."""
        cursor = self.raw.cursor()
        cursor.executemany(translate(statement), [tuple(row) for row in rows])
        return cursor

    def begin_serialised(self) -> Any:
        """Open a write transaction that waits for every other writer's (SQLite's BEGIN IMMEDIATE)."""
        cursor = self.raw.cursor()
        cursor.execute("BEGIN")
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        return cursor

    def plain_begin(self) -> None:
        """Open a transaction that takes no lock until its statements do (a batch claim's)."""
        self.raw.execute("BEGIN")

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


def problem(exc: Exception, lock_timeout_seconds: float) -> str:
    """Say in one line what a PostgreSQL error means for the person running the command (never the
    password: psycopg's messages name the host and port, not the URL)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return (f"the ledger is locked by another process (waited {lock_timeout_seconds:g} s, "
                "ledger.lock_timeout_seconds)")
    if isinstance(exc, psycopg.errors.DiskFull):
        return "the disk holding the ledger database is full; free some space and run again"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return f"the ledger database refuses this user ({first}): grant it the ledger's tables"
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return f"the ledger database lacks a table ({first}): run `distributor migrate`"
    if isinstance(exc, psycopg.OperationalError):
        return f"cannot reach the ledger database ({first}); check ledger.url and that the server runs"
    return f"ledger error: {first}"
