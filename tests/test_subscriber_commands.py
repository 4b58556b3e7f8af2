"""The `subscribers` commands over the subscriber store, through the real command line on real SQLite
files: import (CSV and YAML, bad rows, idempotence, refusing readers, a faulty file), export and its
round trip, one reader's commands, the old view of the subscriber file and the suppression export,
and a publish to the list an import filled, on the SMTP test server."""
from __future__ import annotations

import contextlib
import csv
import io
import re
import sqlite3
import stat
from pathlib import Path

import pytest

from distributor import cli
from distributor.errors import InputError
from distributor.ledger.importing import import_subscribers
from distributor.ledger.store import Ledger
from distributor.ledger.subscribers import SubscriberStore
from distributor.web import preferences_page

from .publish_helpers import configure, received_by, run_publish
from .smtp_server import FaultySmtpServer

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"


def settings_for(tmp_path: Path, name: str = "settings.yaml", *, ledger: str = "ledger.sqlite3",
                 subscribers: Path | None = None) -> Path:
    """Settings whose email channel sends to the list `weekly` (or reads `subscribers`), ledger in tmp_path."""
    recipients = f"subscribers: {subscribers}" if subscribers else "lists: [weekly]"
    path = tmp_path / name
    path.write_text(f"channels:\n  email:\n    {recipients}\nledger:\n  path: {tmp_path / ledger}\n", encoding="utf-8")
    return path


def run(settings: Path, *argv: str) -> tuple[int, str, str]:
    """Run `distributor --settings SETTINGS ARGV...` in this process; return (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["--settings", str(settings), *argv])
    return status, out.getvalue(), err.getvalue()


def tables(ledger: Path) -> dict[str, list[tuple]]:
    """Every row of the store's tables and the suppression list, as another connection reads them."""
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        return {table: sorted(db.execute(f"SELECT * FROM {table}"), key=repr) for table in (
            "subscribers", "subscriptions", "subscription_history", "subscriber_ids", "suppressions")}


def statuses(ledger: Path, list_name: str = "weekly") -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        return dict(db.execute("SELECT address, status FROM subscriptions WHERE list = ?", (list_name,)))


def summary(out: str) -> str:
    return out.strip().splitlines()[-1].partition(": ")[2]


# --- import --------------------------------------------------------------------------------------

def test_import_csv_reports_bad_rows_by_line_and_imports_the_rest(tmp_path):
    people = tmp_path / "people.csv"
    people.write_text("email,name,tags\nann@example.org,Ann Lee,rust;linux\nnot-an-address,X,\n"
                      "Bob@Example.org,,\nANN@example.org,Again,\nzoë@example.org,Z,\nesc@example.org,E,ok \x1b[2J\n",
                      encoding="utf-8")
    settings = settings_for(tmp_path)
    status, out, err = run(settings, "subscribers", "import", str(people), "--list", "weekly")
    assert status == 0, err
    assert err.splitlines() == [f"warning: {people}:3: invalid address 'not-an-address'",
                                f"warning: {people}:5: duplicate address ANN@example.org",
                                f"warning: {people}:6: non-ASCII address 'zoë@example.org': SMTPUTF8 is not supported",
                                f"warning: {people}:7: tags holds a control character (U+001B): it must be one line"
                                " of printable characters"]
    assert summary(out) == "2 added, 0 updated, 0 unchanged, 0 skipped, 4 bad rows"
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        store = SubscriberStore(ledger)
        ann, bob = store.subscriber("ann@example.org"), store.subscriber("bob@example.org")
        assert ann is not None and bob is not None
        assert (ann.name, dict(ann.attributes), bob.address, bob.name) == \
            ("Ann Lee", {"tags": "rust linux"}, "Bob@Example.org", None)
        assert [(s.list, s.status, s.format) for s in ann.subscriptions] == [("weekly", "active", "email")]
        assert [(c.list, c.status, c.source, c.detail) for c in store.history("ann@example.org")] == \
            [("weekly", "active", "import", str(people))]
        # A reader in the store gets an unsubscribe id at once, as a reader of a subscriber file does.
        assert ledger.address_for(ann.id) == "ann@example.org"


def test_import_yaml_with_bad_rows_and_a_format(tmp_path):
    people = tmp_path / "people.yaml"
    people.write_text("- email: ann@example.org\n  name: Ann\n  tags: [a, b]\n"
                      "- email: bob@example.org\n  name: [not, text]\n"
                      "- {email: cy@example.org}\n", encoding="utf-8")
    settings = settings_for(tmp_path)
    status, out, err = run(settings, "subscribers", "import", str(people), "--list", "weekly", "--format", "text")
    assert status == 0, err
    assert err.splitlines() == [f"warning: {people}:4: name must be text, not a list"]
    assert summary(out) == "2 added, 0 updated, 0 unchanged, 0 skipped, 1 bad rows"
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        readers = {r.address: r for r in SubscriberStore(ledger).subscribers()}
    assert sorted(readers) == ["ann@example.org", "cy@example.org"]
    assert readers["ann@example.org"].attributes == {"tags": "a b"}
    assert {r.subscriptions[0].format for r in readers.values()} == {"text"}


def test_importing_the_same_file_twice_changes_nothing(tmp_path):
    people = tmp_path / "people.csv"
    people.write_text("email,name,tags\n" + "".join(f"r{i}@example.org,Reader {i},t{i % 3}\n" for i in range(1200)),
                      encoding="utf-8")
    settings = settings_for(tmp_path)
    assert summary(run(settings, "subscribers", "import", str(people), "--list", "weekly")[1]) == \
        "1200 added, 0 updated, 0 unchanged, 0 skipped, 0 bad rows"
    before = tables(tmp_path / "ledger.sqlite3")
    assert summary(run(settings, "subscribers", "import", str(people), "--list", "weekly")[1]) == \
        "0 added, 0 updated, 1200 unchanged, 0 skipped, 0 bad rows"
    assert tables(tmp_path / "ledger.sqlite3") == before
    assert len(before["subscription_history"]) == 1200

    # A changed name, new tags and a row without a name: updated, the missing name kept.
    people.write_text("email,name,tags\nr1@example.org,Renamed,\nr2@example.org,,new\nr3@example.org,Reader 3,t0\n",
                      encoding="utf-8")
    assert summary(run(settings, "subscribers", "import", str(people), "--list", "weekly")[1]) == \
        "0 added, 2 updated, 1 unchanged, 0 skipped, 0 bad rows"
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        store = SubscriberStore(ledger)
        r1, r2 = store.subscriber("r1@example.org"), store.subscriber("r2@example.org")
        assert r1 is not None and r2 is not None
        assert (r1.name, dict(r1.attributes), r2.name, dict(r2.attributes)) == \
            ("Renamed", {"tags": "t1"}, "Reader 2", {"tags": "new"})
    assert tables(tmp_path / "ledger.sqlite3")["subscription_history"] == before["subscription_history"]


def test_readers_who_refused_are_not_reactivated_without_resubscribe(tmp_path):
    people = tmp_path / "people.csv"
    people.write_text("email\nstays@example.org\nleft@example.org\nbounced@example.org\nangry@example.org\n",
                      encoding="utf-8")
    settings = settings_for(tmp_path)
    run(settings, "subscribers", "import", str(people), "--list", "weekly")
    assert run(settings, "subscribers", "unsubscribe", "left@example.org", "--list", "weekly")[0] == 0
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.suppress("bounced@example.org", reason="550 5.1.1 no such user", source="bounce")
        ledger.suppress("angry@example.org", reason="feedback loop", source="complaint")
        ledger.suppress("blocked@example.org", reason="asked by mail", source="command")   # not in the store
    refused = {"left@example.org": "unsubscribed", "bounced@example.org": "bounced",
               "angry@example.org": "complained"}
    assert statuses(tmp_path / "ledger.sqlite3") == {"stays@example.org": "active", **refused}
    people.write_text(people.read_text(encoding="utf-8") + "blocked@example.org\nnew@example.org\n", encoding="utf-8")
    before = tables(tmp_path / "ledger.sqlite3")

    status, out, err = run(settings, "subscribers", "import", str(people), "--list", "weekly")
    assert status == 0
    assert summary(out) == "1 added, 0 updated, 1 unchanged, 4 skipped, 0 bad rows"
    assert "4 who unsubscribed, bounced, complained or are suppressed (left@example.org, bounced@example.org, " \
           "angry@example.org, blocked@example.org); --resubscribe makes them active" in err
    after = tables(tmp_path / "ledger.sqlite3")
    assert after["suppressions"] == before["suppressions"]
    assert statuses(tmp_path / "ledger.sqlite3") == {"stays@example.org": "active", "new@example.org": "active",
                                                      **refused}

    status, out, err = run(settings, "subscribers", "import", str(people), "--list", "weekly", "--resubscribe")
    assert (status, err) == (0, "")
    assert summary(out) == "0 added, 0 updated, 2 unchanged, 0 skipped, 4 resubscribed, 0 bad rows"
    assert set(statuses(tmp_path / "ledger.sqlite3").values()) == {"active"}
    assert len(statuses(tmp_path / "ledger.sqlite3")) == 6
    assert tables(tmp_path / "ledger.sqlite3")["suppressions"] == []
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        history = SubscriberStore(ledger).history("bounced@example.org")
    assert [(c.status, c.source, c.detail) for c in history] == [
        ("active", "import", str(people)), ("bounced", "bounce", "550 5.1.1 no such user"),
        ("active", "import --resubscribe", str(people))]


@pytest.mark.parametrize("fault, message", [
    ('late@example.org,"never closed\n', "a quoted field is never closed"),
    ("late@example.org,\xff\n", "not UTF-8 text"),
])
def test_a_file_faulty_at_its_last_line_changes_nothing(tmp_path, fault, message):
    people = tmp_path / "people.csv"
    good = "email,name\n" + "".join(f"r{i}@example.org,R\n" for i in range(3000))
    people.write_bytes((good + fault).encode("utf-8").replace("\xff".encode(), b"\xff"))
    settings = settings_for(tmp_path)
    status, out, err = run(settings, "subscribers", "import", str(people), "--list", "weekly")
    assert (status, out) == (2, "") and len(err.splitlines()) == 1
    assert err.startswith(f"distributor: error: {people}:3002: {message}"), err
    assert not (tmp_path / "ledger.sqlite3").exists()

    # The file checked first is the command's guard; the import itself is one transaction, so a file
    # that turns faulty between the two readings still leaves the store as it was.
    ledger_path = tmp_path / "ledger.sqlite3"
    people.write_text("email\nfirst@example.org\n", encoding="utf-8")
    run(settings, "subscribers", "import", str(people), "--list", "weekly")
    before = tables(ledger_path)
    people.write_bytes((good + fault).encode("utf-8").replace("\xff".encode(), b"\xff"))
    with Ledger(ledger_path) as ledger, pytest.raises(InputError, match=":3002: "):
        import_subscribers(ledger, people, "weekly")
    assert tables(ledger_path) == before


def test_import_refuses_a_bad_list_name_and_a_missing_file(tmp_path):
    settings = settings_for(tmp_path)
    people = tmp_path / "people.csv"
    people.write_text("email\na@example.org\n", encoding="utf-8")
    status, _, err = run(settings, "subscribers", "import", str(people), "--list", "Weekly News")
    assert (status, err) == (2, "distributor: error: --list: 'Weekly News' is not a list name (lower-case letters,"
                                " digits, - and _, such as weekly)\n")
    status, _, err = run(settings, "subscribers", "import", str(tmp_path / "absent.csv"), "--list", "weekly")
    assert status == 2 and "cannot read subscriber file" in err
    status, out, err = run(settings, "subscribers", "import", str(people), "--list", "digest")
    assert status == 0 and "warning: no channel sends to digest" in err and "lists: weekly" in err
    assert not (tmp_path / "absent.csv").exists()


# --- export --------------------------------------------------------------------------------------

def test_export_then_import_into_a_fresh_ledger_round_trips(tmp_path):
    people = tmp_path / "people.csv"
    people.write_text('email,name,tags\nann@example.org,"Lee, Ann",a b\nbob@example.org,Bob,\n'
                      "cy@example.org,,\n", encoding="utf-8")
    settings = settings_for(tmp_path)
    run(settings, "subscribers", "import", str(people), "--list", "weekly")
    run(settings, "subscribers", "import", str(people), "--list", "digest", "--format", "text")
    run(settings, "subscribers", "unsubscribe", "cy@example.org", "--list", "digest")

    export = tmp_path / "out" / "weekly.csv"
    status, out, _ = run(settings, "subscribers", "export", str(export), "--list", "weekly")
    assert (status, out) == (0, f"wrote 3 rows to {export}\n")
    assert stat.S_IMODE(export.stat().st_mode) == 0o600 and [p.name for p in export.parent.iterdir()] == ["weekly.csv"]
    rows = list(csv.DictReader(export.open(encoding="utf-8")))
    assert [(r["email"], r["name"], r["tags"], r["list"], r["status"], r["format"]) for r in rows] == [
        ("ann@example.org", "Lee, Ann", "a b", "weekly", "active", "email"),
        ("bob@example.org", "Bob", "", "weekly", "active", "email"),
        ("cy@example.org", "", "", "weekly", "active", "email")]
    assert all(re.fullmatch(ISO, r["since"]) for r in rows)
    assert run(settings, "subscribers", "export", "-", "--list", "weekly")[1] == export.read_text(encoding="utf-8")

    everything = run(settings, "subscribers", "export", "-")[1].splitlines()
    assert everything[0] == "email,name,tags,language,list,status,format,since"
    assert [line.rsplit(",", 1)[0] for line in everything[1:]] == [
        'ann@example.org,"Lee, Ann",a b,,digest,active,text', 'ann@example.org,"Lee, Ann",a b,,weekly,active,email',
        "bob@example.org,Bob,,,digest,active,text", "bob@example.org,Bob,,,weekly,active,email",
        "cy@example.org,,,,digest,unsubscribed,text", "cy@example.org,,,,weekly,active,email"]

    fresh = settings_for(tmp_path, "fresh.yaml", ledger="fresh.sqlite3")
    assert summary(run(fresh, "subscribers", "import", str(export), "--list", "weekly")[1]) == \
        "3 added, 0 updated, 0 unchanged, 0 skipped, 0 bad rows"
    again = tmp_path / "again.csv"
    run(fresh, "subscribers", "export", str(again))
    without_since = [row.rsplit(",", 1)[0] for row in again.read_text(encoding="utf-8").splitlines()]
    assert without_since == [row.rsplit(",", 1)[0] for row in export.read_text(encoding="utf-8").splitlines()]


def test_an_export_of_every_status_on_two_lists_imports_back_as_it_was(tmp_path):
    settings = settings_for(tmp_path)
    for argv in (("add", "ann@example.org", "--list", "weekly", "--name", "Ann Lee", "--language", "en"),
                 ("add", "ann@example.org", "--list", "digest", "--format", "text"),
                 ("add", "cy@example.org", "--list", "digest", "--language", "zh"),
                 ("add", "cy@example.org", "--list", "weekly"), ("unsubscribe", "cy@example.org", "--list", "weekly"),
                 ("add", "dee@example.org", "--list", "weekly"), ("add", "dee@example.org", "--list", "digest"),
                 ("add", "eve@example.org", "--list", "weekly", "--format", "text")):
        assert run(settings, "subscribers", *argv)[0] == 0
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        store = SubscriberStore(ledger)
        store.save("bob@example.org", name="Bo", language="zh", attributes={"tags": "x y"})   # as a signup leaves it
        store.set_status("bob@example.org", "weekly", "unconfirmed", source="signup")
        ledger.suppress("dee@example.org", reason="550 5.1.1 no such user", source="bounce")
        ledger.suppress("eve@example.org", reason="feedback loop", source="complaint")
    export = tmp_path / "store.csv"
    assert run(settings, "subscribers", "export", str(export))[0] == 0
    rows = [line.rsplit(",", 1)[0] for line in export.read_text(encoding="utf-8").splitlines()]
    assert rows[1:] == [
        "ann@example.org,Ann Lee,,en,digest,active,text", "ann@example.org,Ann Lee,,en,weekly,active,email",
        "bob@example.org,Bo,x y,zh,weekly,unconfirmed,email", "cy@example.org,,,zh,digest,active,email",
        "cy@example.org,,,zh,weekly,unsubscribed,email", "dee@example.org,,,,digest,bounced,email",
        "dee@example.org,,,,weekly,bounced,email", "eve@example.org,,,,weekly,complained,text"]

    fresh = settings_for(tmp_path, "fresh.yaml", ledger="fresh.sqlite3")
    status, out, err = run(fresh, "subscribers", "import", str(export), "--list", "weekly")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "left out 3 rows not of weekly: 3 of digest; import them with --list digest",
        f"imported {export} into weekly: 1 added, 0 updated, 0 unchanged, 0 skipped, 1 unconfirmed, "
        "3 unsubscribed, bounced or complained, 0 bad rows"]
    # A refusal is never made active, not even for a moment: its one history line is the refusal.
    assert statuses(tmp_path / "fresh.sqlite3") == {"ann@example.org": "active", "bob@example.org": "unconfirmed",
                                                    "cy@example.org": "unsubscribed", "dee@example.org": "bounced",
                                                    "eve@example.org": "complained"}
    with Ledger(tmp_path / "fresh.sqlite3") as ledger:
        assert [(c.list, c.status, c.source, c.detail) for c in SubscriberStore(ledger).history("eve@example.org")] \
            == [("weekly", "complained", "import", str(export))]
    assert summary(run(fresh, "subscribers", "import", str(export), "--list", "digest")[1]) == \
        "2 added, 0 updated, 0 unchanged, 0 skipped, 1 unsubscribed, bounced or complained, 0 bad rows"

    again = tmp_path / "again.csv"
    assert run(fresh, "subscribers", "export", str(again))[0] == 0
    assert [line.rsplit(",", 1)[0] for line in again.read_text(encoding="utf-8").splitlines()] == rows
    before = tables(tmp_path / "fresh.sqlite3")
    for list_name, readers in (("weekly", 5), ("digest", 3)):
        assert summary(run(fresh, "subscribers", "import", str(export), "--list", list_name)[1]) == \
            f"0 added, 0 updated, {readers} unchanged, 0 skipped, 0 bad rows"
    assert tables(tmp_path / "fresh.sqlite3") == before


def test_the_status_of_a_row_is_applied_but_never_makes_a_refusing_reader_active(tmp_path):
    settings = settings_for(tmp_path)
    people = tmp_path / "people.csv"
    people.write_text("email\nleaves@example.org\nconfirmed@example.org\nleft@example.org\nleft2@example.org\n"
                      "bounced@example.org\n", encoding="utf-8")
    run(settings, "subscribers", "import", str(people), "--list", "weekly")
    run(settings, "subscribers", "unsubscribe", "left@example.org", "--list", "weekly")
    run(settings, "subscribers", "unsubscribe", "left2@example.org", "--list", "weekly")
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.suppress("bounced@example.org", reason="550", source="bounce")
    people.write_text("email,status,format,language\nleaves@example.org,unsubscribed,text,zh\n"
                      "confirmed@example.org,unconfirmed,,\nleft@example.org,active,,\nleft2@example.org,unconfirmed,,\n"
                      "bounced@example.org,unsubscribed,,\nnew@example.org,bounced,,en\n", encoding="utf-8")
    status, out, err = run(settings, "subscribers", "import", str(people), "--list", "weekly", "--format", "email")
    assert status == 0
    assert summary(out) == "0 added, 0 updated, 1 unchanged, 2 skipped, 3 unsubscribed, bounced or complained, " \
                           "0 bad rows"
    assert "2 who unsubscribed, bounced, complained or are suppressed (left@example.org, left2@example.org)" in err
    ledger_path = tmp_path / "ledger.sqlite3"
    assert statuses(ledger_path) == {"leaves@example.org": "unsubscribed", "confirmed@example.org": "active",
                                     "left@example.org": "unsubscribed", "left2@example.org": "unsubscribed",
                                     "bounced@example.org": "unsubscribed", "new@example.org": "bounced"}
    with Ledger(ledger_path) as ledger:
        store = SubscriberStore(ledger)
        leaves, new = store.subscriber("leaves@example.org"), store.subscriber("new@example.org")
        assert leaves is not None and new is not None
        # The row's format wins over --format; the language is the row's.
        assert (leaves.language, leaves.subscriptions[0].format, new.language) == ("zh", "text", "en")
        assert [(c.status, c.source, c.detail) for c in store.history("leaves@example.org")] == [
            ("active", "import", str(people)), ("unsubscribed", "import", str(people))]
        assert [c.status for c in store.history("new@example.org")] == ["bounced"]
        assert ledger.is_suppressed("bounced@example.org")      # a refusal applied lifts no suppression

    # --resubscribe: the row's status, whatever it is, and the suppression lifted.
    status, out, _ = run(settings, "subscribers", "import", str(people), "--list", "weekly", "--resubscribe")
    assert summary(out) == "0 added, 0 updated, 4 unchanged, 0 skipped, 2 resubscribed, 0 bad rows"
    assert (statuses(ledger_path)["left@example.org"], statuses(ledger_path)["left2@example.org"]) == \
        ("active", "unconfirmed")


def test_a_bad_list_status_format_or_language_is_a_bad_row_with_its_line(tmp_path):
    settings = settings_for(tmp_path)
    people = tmp_path / "people.csv"
    people.write_text("email,list,status,format,language\nok@example.org,weekly,active,email,en\n"
                      "a@example.org,weekly,subscribed,email,en\nb@example.org,weekly,active,E Mail,en\n"
                      "c@example.org,weekly,active,email,de\nd@example.org,../weekly,active,email,en\n"
                      "e@example.org,,bounced,,\n", encoding="utf-8")
    status, out, err = run(settings, "subscribers", "import", str(people), "--list", "weekly")
    assert status == 0
    assert err.splitlines() == [
        f"warning: {people}:3: status 'subscribed' is not one of unconfirmed, active, unsubscribed, bounced,"
        " complained",
        f"warning: {people}:4: format 'E Mail' is not a channel name (lower-case letters, digits, - and _, such as"
        " email)",
        f"warning: {people}:5: language 'de' is not one of zh, en",
        f"warning: {people}:6: list '../weekly' is not a list name (lower-case letters, digits, - and _, such as"
        " weekly)",
        f"warning: {people}:7: a status or format needs a list: the list is empty"]
    assert summary(out) == "1 added, 0 updated, 0 unchanged, 0 skipped, 5 bad rows"
    assert statuses(tmp_path / "ledger.sqlite3") == {"ok@example.org": "active"}

    # Rows of other lists, and of a reader on no list, are left out of this list's import and said so.
    people.write_text("email,list\na@example.org,digest\nb@example.org,monthly\nc@example.org,\nd@example.org,digest\n"
                      "ok@example.org,weekly\n", encoding="utf-8")
    status, out, err = run(settings, "subscribers", "import", str(people), "--list", "weekly")
    assert (status, err) == (0, "")
    assert out.splitlines()[0] == "left out 4 rows not of weekly: 2 of digest, 1 of monthly, 1 on no list; import " \
                                  "each list with its own --list"
    assert summary(out) == "0 added, 0 updated, 1 unchanged, 0 skipped, 0 bad rows"
    assert [row[0] for row in tables(tmp_path / "ledger.sqlite3")["subscribers"]] == ["ok@example.org"]


def test_subscribers_export_streams_a_large_store(tmp_path):
    people = tmp_path / "people.csv"
    people.write_text("email\n" + "".join(f"r{i:05d}@example.org\n" for i in range(5000)), encoding="utf-8")
    settings = settings_for(tmp_path)
    run(settings, "subscribers", "import", str(people), "--list", "weekly")
    status, out, _ = run(settings, "subscribers", "export", "-")
    lines = out.splitlines()
    assert status == 0 and len(lines) == 5001
    assert [line.split(",")[0] for line in lines[1:]] == [f"r{i:05d}@example.org" for i in range(5000)]


# --- one reader ------------------------------------------------------------------------------------

def test_add_unsubscribe_resubscribe_show_and_remove_one_reader(tmp_path):
    settings = settings_for(tmp_path)
    ledger_path = tmp_path / "ledger.sqlite3"
    assert run(settings, "subscribers", "add", "Ann <Ann@example.org>", "--list", "weekly", "--name", "Ann Lee",
               "--language", "en") == (0, "added Ann@example.org to weekly\n", "")
    assert run(settings, "subscribers", "add", "ann@example.org", "--list", "weekly")[1] == \
        "ann@example.org is active on weekly; nothing changed\n"
    assert run(settings, "subscribers", "add", "ann@example.org", "--list", "digest", "--format", "text")[0] == 0
    with Ledger(ledger_path) as ledger:       # a signup's consent record, as the form keeps it
        store = SubscriberStore(ledger)
        store.record_request("ann@example.org", "weekly", nonce="n1", client="hash:1f2e",
                             form_url="https://example.org/join")
        store.confirm_request("ann@example.org", "weekly", "n1", client="hash:1f2e")

    assert run(settings, "subscribers", "unsubscribe", "ann@example.org", "--list", "digest") == \
        (0, "unsubscribed ann@example.org from digest\n", "")
    assert "already unsubscribed on digest" in run(settings, "subscribers", "unsubscribe", "ann@example.org",
                                                   "--list", "digest")[1]
    assert statuses(ledger_path, "digest") == {"ann@example.org": "unsubscribed"}
    assert statuses(ledger_path, "weekly") == {"ann@example.org": "active"}
    status, _, err = run(settings, "subscribers", "add", "ann@example.org", "--list", "digest")
    assert status == 2 and "ann@example.org is unsubscribed on digest: `distributor subscribers resubscribe" in err
    run(settings, "subscribers", "unsubscribe", "cy@example.org")
    status, _, err = run(settings, "subscribers", "add", "cy@example.org", "--list", "weekly")
    assert status == 2 and "cy@example.org is on the suppression list (source command): `distributor" in err

    # Without --list: the suppression list, which marks every list.
    assert run(settings, "subscribers", "unsubscribe", "ann@example.org", "--reason", "mailto request")[1] == \
        "unsubscribed ann@example.org\n"
    assert statuses(ledger_path, "weekly") == {"ann@example.org": "unsubscribed"}
    status, shown, _ = run(settings, "subscribers", "show", "ANN@example.org")
    lines = shown.splitlines()
    assert status == 0 and lines[:3] == ["reader     Ann@example.org", "name       Ann Lee", "language   en"]
    assert re.fullmatch(rf"list       digest: unsubscribed \(text\) since {ISO}", lines[4])
    assert re.fullmatch(rf"suppressed since {ISO}, source command: mailto request", lines[6])
    history = lines[lines.index("history:") + 1:lines.index("consents:")]
    assert [re.sub(ISO, "T", line) for line in history] == [
        "  T  weekly: active  by command", "  T  digest: active  by command",
        "  T  digest: unsubscribed  by command  (unsubscribed on request)",
        "  T  weekly: unsubscribed  by command  (mailto request)"]
    assert [re.sub(ISO, "T", line) for line in lines[lines.index("consents:") + 1:]] == [
        "  weekly: requested T from hash:1f2e on https://example.org/join; confirmed T"]

    assert run(settings, "subscribers", "resubscribe", "ann@example.org", "--list", "weekly")[1] == \
        "resubscribed ann@example.org (was unsubscribed, source command); active again on weekly\n"
    assert statuses(ledger_path, "digest") == {"ann@example.org": "unsubscribed"}
    assert run(settings, "subscribers", "resubscribe", "ann@example.org")[1] == \
        "resubscribed ann@example.org; active again on digest\n"
    assert run(settings, "subscribers", "resubscribe", "ann@example.org")[1] == \
        "ann@example.org is not unsubscribed; nothing to do\n"
    assert set(statuses(ledger_path, "weekly").values()) | set(statuses(ledger_path, "digest").values()) == {"active"}

    run(settings, "subscribers", "unsubscribe", "ann@example.org")
    assert run(settings, "subscribers", "remove", "ann@example.org")[1] == \
        "removed ann@example.org: lists, history and consents; the address stays on the suppression list\n"
    assert run(settings, "subscribers", "remove", "ann@example.org")[1] == \
        "ann@example.org is not in the subscriber store; nothing to do\n"
    left = tables(ledger_path)
    assert (left["subscribers"], left["subscriptions"], left["subscription_history"]) == ([], [], [])
    assert [row[0] for row in left["suppressions"]] == ["ann@example.org", "cy@example.org"]
    status, shown, _ = run(settings, "subscribers", "show", "ann@example.org")
    assert status == 0 and shown.splitlines()[0].startswith("suppressed since ")
    status, _, err = run(settings, "subscribers", "show", "nobody@example.org")
    assert (status, err) == (2, "distributor: error: ADDRESS: nobody@example.org is not in the subscriber store\n")


def test_unsubscribe_makes_a_readers_own_unsubscribe_the_publishers(tmp_path):
    settings = settings_for(tmp_path)
    ledger_path = tmp_path / "ledger.sqlite3"
    assert run(settings, "subscribers", "add", "ann@example.org", "--list", "weekly")[0] == 0
    with Ledger(ledger_path) as ledger, ledger.transaction():       # as the one-click link does
        ledger.suppress("ann@example.org", reason="one-click unsubscribe", source="one-click")
    status, out, _ = run(settings, "subscribers", "unsubscribe", "ann@example.org", "--reason", "asked by phone")
    assert status == 0 and re.fullmatch(
        rf"unsubscribed ann@example\.org by command \(the reader had unsubscribed by one-click, since {ISO}\); "
        r"only `distributor subscribers resubscribe` lifts it\n", out)
    with Ledger(ledger_path) as ledger:
        found = ledger.suppression("ann@example.org")
        assert found is not None and (found.source, found.reason) == ("command", "asked by phone")
        # What a reader may lift is theirs only: a ticked preference no longer resumes mail.
        assert preferences_page.save(ledger, "ann@example.org", preferences_page.Choice(frozenset({"weekly"}), {}),
                                     (preferences_page.ListOffer("weekly", ("email",)),)) is not None
        assert ledger.suppression("ann@example.org") == found
    assert statuses(ledger_path) == {"ann@example.org": "unsubscribed"}
    # Once the publisher's, it is "already" so.
    assert re.fullmatch(rf"ann@example\.org is already unsubscribed \(source command, since {ISO}\)\n",
                        run(settings, "subscribers", "unsubscribe", "ann@example.org")[1])


@pytest.mark.parametrize("argv, expected", [
    (("add", "nobody", "--list", "weekly"), "ADDRESS: invalid address 'nobody'"),
    (("add", "a@example.org, b@example.org", "--list", "weekly"), "ADDRESS: "),
    (("add", "a@example.org", "--list", "weekly", "--name", "Ann\x1b[31m"), "--name: holds a control character"),
    (("unsubscribe", "a@example.org", "--list", "../weekly"), "--list: '../weekly' is not a list name"),
    (("show", "Name <a@example.org>\r\nBcc: x@example.org"), "ADDRESS: "),
    (("list", "--list", "WEEKLY"), "--list: 'WEEKLY' is not a list name"),
    (("export", "-", "--suppressions", "--list", "weekly"), "--list: the suppression list has no lists"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, argv, expected):
    status, out, err = run(settings_for(tmp_path), "subscribers", *argv)
    assert (status, out) == (2, "") and len(err.splitlines()) == 1
    assert err.startswith(f"distributor: error: {expected}"), err
    assert not (tmp_path / "ledger.sqlite3").exists()


def test_list_shows_each_reader_with_their_lists_then_the_totals(tmp_path):
    settings = settings_for(tmp_path)
    for argv in (("add", "b@example.org", "--list", "weekly", "--name", "Bea"), ("add", "a@example.org", "--list",
                 "weekly"), ("add", "a@example.org", "--list", "digest"), ("unsubscribe", "a@example.org", "--list",
                 "weekly")):
        run(settings, "subscribers", *argv)
    assert run(settings, "subscribers", "list")[1].splitlines() == [
        "digest:active weekly:unsubscribed  a@example.org", "weekly:active  b@example.org  Bea", "2 readers",
        "digest: 1 readers: 1 active", "weekly: 2 readers: 1 active, 1 unsubscribed"]
    assert run(settings, "subscribers", "list", "--list", "weekly", "--status", "unsubscribed")[1].splitlines() == [
        "weekly:unsubscribed  a@example.org", "1 readers", "weekly: 2 readers: 1 active, 1 unsubscribed"]


# --- the subscriber file and the suppression list, as before the store ------------------------------

def test_the_subscriber_file_view_and_the_suppression_export(tmp_path):
    subscribers = tmp_path / "subscribers.csv"
    subscribers.write_text("email,name\nactive@example.org,Active\nGone@example.org,\nnot-an-address,X\n"
                           "asked@example.org,Asked\n", encoding="utf-8")
    settings = settings_for(tmp_path, subscribers=subscribers)
    status, listing, _ = run(settings, "subscribers", "list", "--file")
    assert status == 0 and "3 subscribers: 3 active, 0 unsubscribed, 0 bounced" in listing

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.suppress("gone@example.org", reason="550 5.1.1 no such user", source="bounce")
    ledger.close()
    assert run(settings, "subscribers", "unsubscribe", "Asked <asked@example.org>", "--reason", "mailto request")[:2] \
        == (0, "unsubscribed asked@example.org\n")
    assert "already unsubscribed" in run(settings, "subscribers", "unsubscribe", "ASKED@example.org")[1]
    status, listing, _ = run(settings, "subscribers", "list", "--file")
    assert listing.splitlines() == ["active       active@example.org  Active", "bounced      Gone@example.org",
                                    "unsubscribed asked@example.org  Asked",
                                    "3 subscribers: 1 active, 1 unsubscribed, 1 bounced"]
    assert run(settings, "subscribers", "list", "--file", "--state", "bounced")[1].splitlines()[0] == \
        "bounced      Gone@example.org"
    assert run(settings, "subscribers", "list", "--file", "--status", "complained")[0] == 2

    export = tmp_path / "out" / "suppressed.csv"
    export.parent.mkdir()
    assert run(settings, "subscribers", "export", "--suppressions", str(export))[0] == 0
    rows = list(csv.DictReader(export.open(encoding="utf-8")))
    assert [(r["address"], r["reason"], r["source"]) for r in rows] == [
        ("asked@example.org", "mailto request", "command"), ("gone@example.org", "550 5.1.1 no such user", "bounce")]
    assert all(re.fullmatch(ISO, r["time"]) for r in rows)
    assert [p.name for p in export.parent.iterdir()] == ["suppressed.csv"]

    assert "resubscribed gone@example.org (was bounced" in run(
        settings, "subscribers", "resubscribe", "gone@example.org")[1]
    assert "nothing to do" in run(settings, "subscribers", "resubscribe", "gone@example.org")[1]
    exported = run(settings, "subscribers", "export", "--suppressions", "-")[1].splitlines()
    assert exported[0] == "address,reason,source,time" and len(exported) == 2
    assert exported[1].startswith("asked@example.org,mailto request,command,")
    # The same allow list as everywhere: parseaddr would have taken the second address of a list.
    for hostile in ("nobody", "a@example.org, b@example.org", "Name <a@example.org>\r\nBcc: x@example.org",
                    "zoë@example.org"):
        status, _, err = run(settings, "subscribers", "unsubscribe", hostile)
        assert status == 2 and err.startswith("distributor: error: ADDRESS: ")


def test_read_only_commands_create_no_ledger(tmp_path):
    settings = settings_for(tmp_path)
    assert run(settings, "subscribers", "export", "--suppressions", "-") == (0, "address,reason,source,time\n", "")
    assert run(settings, "subscribers", "export", "-") == (0, "email,name,tags,language,list,status,format,since\n", "")
    assert run(settings, "subscribers", "list") == (0, "0 readers\n", "")
    assert run(settings, "subscribers", "show", "a@example.org")[0] == 2
    status, _, err = run(settings, "subscribers", "list", "--file")
    assert status == 2 and "channels.email.subscribers is not set" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["settings.yaml"]


# --- publish -----------------------------------------------------------------------------------------

def test_a_publish_after_an_import_delivers_to_the_active_readers_only(tmp_path, unsubscribe_secret):
    readers = [f"reader{i}@example.org" for i in range(6)]
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, [])
        settings.write_text(settings.read_text(encoding="utf-8").replace(
            f"subscribers: {tmp_path / 'subscribers.csv'}", "lists: [weekly]"), encoding="utf-8")
        people = tmp_path / "people.csv"
        people.write_text("email,name\n" + "".join(f"{a},Reader\n" for a in readers) + "broken,X\n", encoding="utf-8")
        assert run(settings, "subscribers", "import", str(people), "--list", "weekly")[0] == 0
        run(settings, "subscribers", "import", str(people), "--list", "digest")
        run(settings, "subscribers", "unsubscribe", readers[1], "--list", "weekly")
        run(settings, "subscribers", "unsubscribe", readers[2])
        with Ledger(tmp_path / "ledger.sqlite3") as ledger:
            ledger.suppress(readers[3], reason="550 5.1.1", source="bounce")
        run(settings, "subscribers", "remove", readers[4])
        status, out, err = run_publish(settings)
        assert status == 0, out + err
        assert received_by(server) == {readers[0]: 1, readers[5]: 1}
