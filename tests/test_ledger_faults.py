"""Storage faults, for real: a damaged ledger file, one locked by another process, one on a read-only
file system, and a full disk under the ledger and under every file a command writes. Each gets one
line on stderr and exit status 3 from the real CLI, and leaves nothing half-written.

The read-only and full-disk cases mount a small tmpfs, so they need root; they skip otherwise."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from distributor.errors import StorageError
from distributor.ledger.store import SCHEMA_VERSION, Ledger, open_ledger
from distributor.ledger.subscribers import SubscriberStore
from distributor.schedule.jobs import JobStore
from distributor.settings import LedgerSettings

from .conftest import EXAMPLE, ROOT
from .publish_helpers import SECRET, configure, received_by
from .smtp_server import FaultySmtpServer

ADDRESSES = [f"r{i:04d}@example.org" for i in range(3000)]


def one_line_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    """Exit 3 with one `distributor: error:` line on stderr saying each phrase, and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("distributor: error: "), result.stderr
    assert all(phrase in lines[0] for phrase in phrases), lines[0]


def run(settings: Path, *args: str, stdout=None, timeout: float = 60) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": SECRET}
    return subprocess.run([sys.executable, "-m", "distributor", "--settings", str(settings), *args],
                          stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, cwd=ROOT, env=environment)


# --- a damaged ledger ---------------------------------------------------------------------------

def full_ledger(path: Path) -> bytes:
    """Make a real ledger of a few thousand rows, closed (its WAL folded in), and return its bytes."""
    ledger = Ledger(path)
    ledger.plan("example-weekly-11-4th-2026", "email", "hash", ((address, "Reader") for address in ADDRESSES))
    ledger.close()
    return path.read_bytes()


def damage(data: bytes, how: str) -> bytes:
    if how == "garbage":
        return bytes((i * 37 + 11) % 256 for i in range(len(data)))
    if how == "truncated":
        return data[:len(data) // 2]
    if how == "header only":
        return data[:100]
    # A leaf page of an index (the subscriber ids' index of addresses) whose b-tree page type is no type:
    # SQLite still opens the file and counts the deliveries, which never read that page; only a check of
    # the pages finds it. The page is looked up (dbstat), as random ids place the b-tree's pages anew in
    # every ledger made.
    offset = 4096 * (index_leaf(data) - 1)
    return data[:offset] + b"\xff" + data[offset + 1:]


def index_leaf(data: bytes) -> int:
    """Return the number of a leaf page of the subscriber ids' address index in the ledger `data`."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "copy.sqlite3"
        path.write_bytes(data)
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA page_size").fetchone()[0] == 4096
            return db.execute("SELECT pageno FROM dbstat WHERE name = 'sqlite_autoindex_subscriber_ids_1'"
                              " AND pagetype = 'leaf' ORDER BY pageno LIMIT 1").fetchone()[0]


COMMANDS = {
    "publish": ("publish", str(EXAMPLE), "--yes"),
    "dry run": ("publish", str(EXAMPLE), "--dry-run"),
    "status": ("status", str(EXAMPLE)),
    "subscribers list": ("subscribers", "list"),
    "schedule list": ("schedule", "list"),
}


@pytest.fixture(scope="module")
def ledger_bytes(tmp_path_factory) -> bytes:
    return full_ledger(tmp_path_factory.mktemp("ledger") / "ledger.sqlite3")


@pytest.mark.parametrize("how", ["garbage", "truncated", "header only", "a damaged page"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_damaged_ledger_is_one_line_and_exit_3(tmp_path, ledger_bytes, how, command):
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES[:5])
        ledger = tmp_path / "ledger.sqlite3"
        ledger.write_bytes(damage(ledger_bytes, how))
        if how == "a damaged page":                  # what the test relies on: a plain read does not notice
            db = sqlite3.connect(ledger)
            assert db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == len(ADDRESSES)
            assert db.execute("PRAGMA quick_check").fetchone()[0] != "ok"
            db.close()
        result = run(settings, *COMMANDS[command])
        assert server.messages == []
    one_line_error(result, "ledger", "damaged")


def test_a_dry_run_on_an_empty_ledger_file_sees_a_new_ledger(tmp_path):
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES[:5])
        (tmp_path / "ledger.sqlite3").write_bytes(b"")     # SQLite's own reading: a database with no tables
        result = run(settings, *COMMANDS["dry run"])
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert "email: 5 handed to the dry-run sink" in result.stdout


# --- transactions -------------------------------------------------------------------------------

def recorded(path: Path) -> tuple[list[tuple], list[tuple]]:
    """What another connection sees in the ledger file: its checkpoints and suppressions."""
    with contextlib.closing(sqlite3.connect(path)) as other:
        return (other.execute("SELECT issue_key, step, value FROM checkpoints").fetchall(),
                other.execute("SELECT address FROM suppressions").fetchall())


def test_a_failure_inside_a_transaction_leaves_nothing_written(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        with pytest.raises(RuntimeError, match="stopped half-way"), ledger.transaction():
            ledger.save_checkpoint("weekly", "wechat", "draft", "media-1")
            ledger.suppress("gone@example.org", reason="550 5.1.1", source="bounce")
            raise RuntimeError("stopped half-way")
        assert not ledger.db.in_transaction and recorded(path) == ([], [])
        with pytest.raises(sqlite3.OperationalError), ledger.transaction():
            ledger.save_checkpoint("weekly", "wechat", "draft", "media-1")
            ledger.db.execute("UPDATE no_such_table SET x = 1")
        assert not ledger.db.in_transaction and recorded(path) == ([], [])
        with ledger.transaction():
            ledger.save_checkpoint("weekly", "wechat", "draft", "media-2")
        assert recorded(path) == ([("weekly", "draft", "media-2")], [])


def test_a_transaction_holds_the_write_lock_from_its_start(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger, contextlib.closing(sqlite3.connect(path, timeout=0,
                                                                    isolation_level=None)) as other:
        with ledger.transaction(), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")


def test_an_opened_ledger_commits_and_closes_at_the_end_of_its_block(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with open_ledger(LedgerSettings(path=str(path))) as ledger:
        ledger.begin()
        ledger.suppress("gone@example.org", reason="550 5.1.1", source="bounce")
    assert recorded(path) == ([], [("gone@example.org",)])
    with pytest.raises(sqlite3.ProgrammingError):
        ledger.db.execute("SELECT 1")


# --- a ledger locked by another process ---------------------------------------------------------

def test_a_locked_ledger_is_waited_for_a_bounded_time_then_named_with_its_holder(tmp_path):
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES[:5])
        settings.write_text(settings.read_text().replace("ledger:\n", "ledger:\n  lock_timeout_seconds: 0.5\n"))
        ledger = Ledger(tmp_path / "ledger.sqlite3")
        jobs = JobStore.of(ledger)
        jobs.add(str(EXAMPLE), ("email",), time.time() - 1, "UTC")
        assert jobs.claim("runner-on-another-host", time.time(), 600) is not None
        ledger.close()
        holder = sqlite3.connect(tmp_path / "ledger.sqlite3", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            started = time.monotonic()
            result = run(settings, "publish", str(EXAMPLE), "--yes", timeout=30)
            waited = time.monotonic() - started
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert server.messages == []
    one_line_error(result, "locked by another process", "ledger.lock_timeout_seconds",
                   "scheduled job 1 is running (runner runner-on-another-host)")
    assert waited < 20                          # bounded by the setting, not the former 30 s


def test_every_command_honours_the_lock_timeout_setting(tmp_path):
    """`schedule cancel` (and status, the worker, the web app, check) open the ledger as publish does:
    a ledger locked past ledger.lock_timeout_seconds is one line and exit 3, not 10 s and a traceback."""
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES[:2])
    settings.write_text(settings.read_text().replace("ledger:\n", "ledger:\n  lock_timeout_seconds: 0.5\n"))
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    JobStore.of(ledger).add(str(EXAMPLE), ("email",), time.time() + 3600, "UTC")
    ledger.close()
    holder = sqlite3.connect(tmp_path / "ledger.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        result = run(settings, "schedule", "cancel", "1", timeout=30)
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    one_line_error(result, "locked by another process", "ledger.lock_timeout_seconds")
    assert waited < 8                           # the setting's 0.5 s, not the default 10 s


# --- read-only and full file systems (root: a tmpfs of our own) --------------------------------

@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "64k"):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the file system of `folder` to the last byte (unbuffered writes, each as large as fits)."""
    descriptor = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (4096, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(descriptor, b"\0" * size):
                    pass
    finally:
        os.close(descriptor)


def with_ledger_in(settings: Path, folder: Path) -> None:
    text = settings.read_text()
    start = text.index("  path: ") + len("  path: ")
    settings.write_text(text[:start] + str(folder / "ledger.sqlite3") + text[text.index("\n", start):])


def test_a_dry_run_on_a_read_only_ledger_works_and_a_publish_says_so_in_one_line(tmp_path):
    with tmpfs(tmp_path / "ro", size="4m") as folder, FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES[:3])
        with_ledger_in(settings, folder)
        assert run(settings, "publish", str(EXAMPLE), "--yes").returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        (tmp_path / "subscribers.csv").write_text("email\nnew@example.org\n" + "".join(f"{a}\n" for a in ADDRESSES[:3]))
        dry = run(settings, "publish", str(EXAMPLE), "--dry-run")
        real = run(settings, "publish", str(EXAMPLE), "--yes")
        assert len(server.messages) == 3
    assert dry.returncode == 0 and "Traceback" not in dry.stderr, dry.stdout + dry.stderr
    assert "email: 1 recipients" in dry.stdout and "would send" in dry.stdout
    one_line_error(real, "ledger")


@pytest.mark.parametrize("room_kb", [0, 96])     # full when the ledger is opened; full half way through the plan
def test_a_full_disk_under_the_ledger_stops_publish_with_nothing_planned_or_sent(tmp_path, room_kb):
    with tmpfs(tmp_path / "full", size="1m") as folder, FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES[:2000])
        with_ledger_in(settings, folder)
        Ledger(folder / "ledger.sqlite3").close()       # the ledger exists, the disk is full under it
        fill(folder)
        os.truncate(folder / "filler", max(os.path.getsize(folder / "filler") - room_kb * 1024, 0))
        result = run(settings, "publish", str(EXAMPLE), "--yes")
        assert server.connections_opened == 0
        os.remove(folder / "filler")                    # room again, to read what the ledger holds
        db = sqlite3.connect(folder / "ledger.sqlite3")
        assert db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 0
        db.close()
    one_line_error(result, "disk holding the ledger is full")


def test_preview_to_a_full_disk_writes_nothing(tmp_path):
    with tmpfs(tmp_path / "full") as folder:
        fill(folder)
        os.remove(folder / "filler")
        with open(folder / "filler", "wb") as stream:    # room for a few KB, not for the preview
            stream.write(b"\0" * (40 * 1024))
        out = folder / "preview"
        result = subprocess.run([sys.executable, "-m", "distributor", "preview", str(EXAMPLE), "--out", str(out)],
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        left = sorted(path.name for path in out.iterdir()) if out.exists() else []
    one_line_error(result, "No space left on device", "nothing was written")
    assert left == []


def test_the_text_archive_to_a_full_disk_stops_before_anything_is_sent(tmp_path):
    with tmpfs(tmp_path / "full") as folder, FaultySmtpServer() as server:
        settings = configure(tmp_path, server, ADDRESSES[:3])
        settings.write_text(settings.read_text().replace("text: {enabled: false}",
                                                         f"text: {{output_dir: {folder / 'archive'}}}"))
        (folder / "archive").mkdir()
        fill(folder)
        result = run(settings, "publish", str(EXAMPLE), "--yes")
        left = sorted(path.name for path in (folder / "archive").iterdir())
        assert received_by(server) == {}
    one_line_error(result, "No space left on device")
    assert left == []


def test_subscribers_export_to_a_full_disk_leaves_no_file(tmp_path):
    with tmpfs(tmp_path / "full") as folder, FaultySmtpServer() as server:
        settings = configure(tmp_path, server, [])
        ledger = Ledger(tmp_path / "ledger.sqlite3")
        for number in range(2000):
            ledger.suppress(f"gone{number:04d}@example.org", reason="unsubscribed on request", source="command")
        ledger.close()
        fill(folder)
        result = run(settings, "subscribers", "export", "--suppressions", str(folder / "suppressed.csv"))
        left = sorted(path.name for path in folder.iterdir())
    one_line_error(result, "No space left on device", "nothing was written")
    assert left == ["filler"]


def test_a_target_that_is_not_a_folder_is_the_same_storage_fault_for_export_and_preview(tmp_path):
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, [])
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.suppress("gone@example.org", reason="unsubscribed on request", source="command")
    ledger.close()
    plain = tmp_path / "plain.txt"
    plain.write_text("a file, not a folder\n", encoding="utf-8")
    exported = run(settings, "subscribers", "export", "--suppressions", str(plain / "suppressed.csv"))
    previewed = run(settings, "preview", str(EXAMPLE), "--out", str(plain / "preview"))
    one_line_error(exported, str(plain), "nothing was written")
    one_line_error(previewed, str(plain), "nothing was written")
    assert plain.read_text(encoding="utf-8") == "a file, not a folder\n"


def test_subscribers_export_to_a_full_standard_output_is_one_line_and_exit_3(tmp_path):
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, [])
        ledger = Ledger(tmp_path / "ledger.sqlite3")
        for number in range(2000):
            ledger.suppress(f"gone{number:04d}@example.org", reason="unsubscribed on request", source="command")
        ledger.close()
        with open("/dev/full", "w") as full:
            result = run(settings, "subscribers", "export", "--suppressions", "-", stdout=full)
    one_line_error(result, "standard output", "No space left on device")


def test_a_ledger_of_the_first_layout_is_brought_up_to_date_and_a_newer_one_refused(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        ledger.plan("weekly", "email", "hash", [("a@example.org", None), ("b@example.org", None)])
        ledger.claim("weekly", "email", "a@example.org", "<id@example.org>", ("pending",))
    old = sqlite3.connect(path)          # as the first layout wrote it: no version, the state `sending`
    old.execute("UPDATE deliveries SET status = 'sending' WHERE status = 'uncertain'")
    old.execute("PRAGMA user_version = 0")
    old.commit()
    old.close()
    with Ledger(path) as ledger:
        assert ledger.counts("weekly") == {"email": {"uncertain": 1, "pending": 1}}
    with Ledger.snapshot(path) as copy:
        assert copy.counts("weekly") == {"email": {"uncertain": 1, "pending": 1}}
    newer = sqlite3.connect(path)
    newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer.commit()
    newer.close()
    with pytest.raises(StorageError, match="written by a newer distributor"):
        Ledger(path)


def test_a_suppression_is_recorded_whole_or_not_at_all(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        store = SubscriberStore(ledger)
        store.save("ann@example.org")
        store.set_status("ann@example.org", "weekly", "active", source="import")
        # The history line of the list's mark fails, as a full disk would fail it half-way.
        ledger.db.execute("CREATE TEMP TRIGGER refuse BEFORE INSERT ON subscription_history"
                          " BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        with pytest.raises(sqlite3.IntegrityError, match="disk full"):
            ledger.suppress("ann@example.org", reason="550 5.1.1", source="bounce")
        assert not ledger.db.in_transaction
        assert ledger.suppression("ann@example.org") is None
        assert store.subscriber("ann@example.org").on("weekly").status == "active"


def test_a_commit_that_fails_is_rolled_back_and_joins_no_later_transaction(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        # A deferred foreign key is checked at COMMIT: the commit itself fails, as on a full disk.
        ledger.db.execute("PRAGMA foreign_keys = ON")
        ledger.db.execute("CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)")
        ledger.db.execute("CREATE TEMP TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY"
                          " DEFERRED)")
        with pytest.raises(sqlite3.IntegrityError), ledger.transaction():
            ledger.save_checkpoint("weekly", "wechat", "draft", "told-it-failed")
            ledger.db.execute("INSERT INTO child VALUES (1)")
        assert not ledger.db.in_transaction
        with ledger.transaction():
            ledger.save_checkpoint("weekly", "wechat", "publish", "later")
        assert ledger.checkpoints("weekly", "wechat") == {"publish": "later"}
