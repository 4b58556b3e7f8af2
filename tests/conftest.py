"""Shared fixtures: the corpus (tests/corpus.py), the bundled example, and a guard that keeps every
test's network traffic on loopback."""
from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .corpus import require_corpus

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = next((ROOT / "distributor" / "examples").glob("*.md"))
UNSUBSCRIBE_SECRET = "test-unsubscribe-secret"


@pytest.fixture
def corpus() -> Path:
    """The corpus folder; the test is skipped where it is absent."""
    return require_corpus()


@pytest.fixture
def unsubscribe_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """Set the secret that signs unsubscribe tokens, as a real publish needs."""
    monkeypatch.setenv("DISTRIBUTOR_UNSUBSCRIBE_SECRET", UNSUBSCRIBE_SECRET)
    return UNSUBSCRIBE_SECRET


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse any connection to an address that is not loopback, so no test reaches out."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(address: object) -> None:
        if isinstance(address, tuple) and address:
            host = str(address[0])
            try:
                loopback = ipaddress.ip_address(host.split("%")[0]).is_loopback
            except ValueError:
                loopback = host == "localhost"
            if not loopback:
                raise ConnectionRefusedError(f"tests may only connect to loopback, not {host}")

    def connect(self: socket.socket, address: object) -> None:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        check(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture(params=["sqlite", "postgresql"])
def open_test_ledger(request: pytest.FixtureRequest, tmp_path: Path):
    """Open a new, empty ledger on each engine the ledger runs on: a SQLite file in tmp_path, and a
    database of its own on the session's throwaway PostgreSQL server (tests/postgres_server.py;
    skipped with a message where PostgreSQL is missing). Call it with the ledger's clock."""
    from distributor.ledger.store import Ledger, migrate_ledger
    from distributor.settings import LedgerSettings
    opened: list[Ledger] = []

    def make(clock: Callable[[], float] = time.time) -> Ledger:
        if request.param == "sqlite":
            ledger = Ledger(tmp_path / "ledger.sqlite3", clock=clock)
        else:
            from .postgres_server import postgres_server
            url = postgres_server().new_database()
            migrate_ledger(LedgerSettings(url=url))
            ledger = Ledger.on_postgres(url, clock=clock)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.db.close()
