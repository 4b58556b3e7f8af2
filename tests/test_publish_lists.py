"""Publishing to the lists of the subscriber store: the real SMTP test server, a real ledger file, readers
put in the store with SubscriberStore."""
from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import pytest

from distributor.audience import unsubscribe
from distributor.ledger.store import Ledger
from distributor.ledger.subscribers import SubscriberStore
from distributor.settings import load_settings

from .conftest import EXAMPLE
from .publish_helpers import SECRET, cli, fast_retry_and_ledger, ledger_rows, received_by, run_publish
from .smtp_server import FaultySmtpServer
from .test_preferences import checkboxes, radios
from .test_unsubscribe import request, running

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")


def configure(tmp_path: Path, server: FaultySmtpServer, *, email_lists: str = "[weekly]", text_lists: str = "[weekly]",
              extra_email: str = "", smtp_extra: str = "") -> Path:
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"""
channels:
  email:
    lists: {email_lists}
    from_address: news@example.org
    unsubscribe_url: https://example.org/unsubscribe/{{token}}
{extra_email}
  text:
    lists: {text_lists}
  wechat: {{enabled: false}}
smtp:
  host: 127.0.0.1
  port: {server.port}
  security: plain
  pool_size: 2
  timeout_seconds: 1.0
{smtp_extra}
{fast_retry_and_ledger(tmp_path)}
""", encoding="utf-8")
    return settings


def put(tmp_path: Path, readers: dict[str, dict[str, tuple[str, str]]]) -> None:
    """Put each reader in the store with {list: (status, format)}, in one transaction."""
    with Ledger(tmp_path / "ledger.sqlite3") as ledger, ledger.transaction():
        store = SubscriberStore(ledger)
        for address, lists in readers.items():
            store.save(address, name=address.split("@")[0].title())
            for list_name, (status, format) in lists.items():
                store.set_status(address, list_name, status, source="import", format=format)


def kinds(server: FaultySmtpServer) -> dict[str, list[str]]:
    """Map each recipient to the kinds of message they got: "html" (the email channel) or "text"."""
    found: dict[str, list[str]] = {}
    for received in server.messages:
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        kind = "html" if any(part.get_content_type() == "text/html" for part in message.walk()) else "text"
        for rcpt in received.rcpt_tos:
            found.setdefault(rcpt, []).append(kind)
    return found


def test_each_active_reader_gets_one_copy_in_their_format_and_a_rerun_sends_nobody_twice(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = configure(tmp_path, smtp, email_lists="[weekly, news]")
        put(tmp_path, {
            "html@example.org": {"weekly": ("active", "email")},
            "plain@example.org": {"weekly": ("active", "text")},
            # news goes by email alone: its readers get it whatever their format.
            "news-only@example.org": {"news": ("active", "text")},
            "both@example.org": {"weekly": ("active", "email"), "news": ("active", "email")},
            "unconfirmed@example.org": {"weekly": ("unconfirmed", "email")},
            "unsubscribed@example.org": {"weekly": ("unsubscribed", "email")},
            "bounced@example.org": {"weekly": ("bounced", "text")},
            "suppressed@example.org": {},
        })
        with Ledger(tmp_path / "ledger.sqlite3") as ledger, ledger.transaction():
            ledger.suppress("suppressed@example.org", reason="550 5.1.1 no such user", source="bounce")
            # Active again on a list after the suppression: the suppression still wins.
            SubscriberStore(ledger).set_status("suppressed@example.org", "weekly", "active", source="command")
        status, out, err = run_publish(settings)
        assert status == 0, (out, err)
        assert kinds(smtp) == {"html@example.org": ["html"], "plain@example.org": ["text"],
                               "news-only@example.org": ["html"], "both@example.org": ["html"]}
        assert run_publish(settings)[0] == 0
        assert len(smtp.messages) == 4


def test_a_reader_unsubscribed_between_two_runs_of_one_issue_is_not_mailed(tmp_path):
    readers = [f"r{i}@example.org" for i in range(3)]
    with FaultySmtpServer() as smtp:
        settings = configure(tmp_path, smtp, smtp_extra="  hourly_cap: 1")
        put(tmp_path, {address: {"weekly": ("active", "email")} for address in readers})
        status, out, _ = run_publish(settings)
        assert status == 3 and "hourly cap" in out
        first = list(received_by(smtp))
        assert len(first) == 1
        left = sorted(set(readers) - set(first))
        assert sorted(address for address, row in ledger_rows(tmp_path).items() if row[0] == "pending") == left
        with Ledger(tmp_path / "ledger.sqlite3") as ledger, ledger.transaction():
            SubscriberStore(ledger).set_status(left[0], "weekly", "unsubscribed", source="preferences")
        settings.write_text(settings.read_text().replace("hourly_cap: 1", "hourly_cap: 10"))
        status, _, err = run_publish(settings)
        assert status == 0
        assert "not mailing 1 recipient no longer active on weekly" in err
        assert received_by(smtp) == {first[0]: 1, left[1]: 1}
        assert left[0] not in ledger_rows(tmp_path)


def test_a_dry_run_counts_the_list_and_sends_nothing(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = configure(tmp_path, smtp)
        put(tmp_path, {"a@example.org": {"weekly": ("active", "email")},
                       "b@example.org": {"weekly": ("active", "email")},
                       "c@example.org": {"weekly": ("active", "text")},
                       "d@example.org": {"weekly": ("unsubscribed", "text")}})
        status, out, _ = run_publish(settings, dry_run=True)
        assert status == 0
        assert re.search(r"^  email: 2 recipients,", out, re.M) and re.search(r"^  text: 1 recipients,", out, re.M)
        assert smtp.messages == [] and ledger_rows(tmp_path) == {}


def test_a_channel_with_both_a_subscriber_file_and_lists_is_refused_in_one_line(tmp_path):
    subscribers = tmp_path / "subscribers.csv"
    subscribers.write_text("email\na@example.org\n", encoding="utf-8")
    with FaultySmtpServer() as smtp:
        settings = configure(tmp_path, smtp, extra_email=f"    subscribers: {subscribers}")
        put(tmp_path, {"b@example.org": {"weekly": ("active", "email")}})
        done = cli(settings, "publish", str(EXAMPLE), "--yes")
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0
        assert "channels.email.subscribers and channels.email.lists are both set" in done.stderr
        assert smtp.messages == []


def test_the_unsubscribe_link_of_a_list_readers_mail_leads_to_their_preferences(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = configure(tmp_path, smtp, email_lists="[weekly, news]")
        put(tmp_path, {"reader@example.org": {"weekly": ("active", "text"), "news": ("unsubscribed", "email")}})
        assert run_publish(settings)[0] == 0
        message = email.message_from_bytes(smtp.messages[0].data, policy=email.policy.default)
        token = re.search(r"<https://example\.org/unsubscribe/([^>]+)>", str(message["List-Unsubscribe"]))[1]
        with running(load_settings(settings)) as port:
            status, _, page = request(port, "GET", f"/unsubscribe/{token}")
            assert status == 200
            assert checkboxes(page) == {"weekly": True, "news": False}
            assert radios(page) == {"weekly": (["email", "text"], "text")}


def test_a_reader_who_switches_format_between_two_runs_of_one_issue_gets_it_once(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = configure(tmp_path, smtp)
        put(tmp_path, {"switcher@example.org": {"weekly": ("active", "email")},
                       "stays@example.org": {"weekly": ("active", "text")}})
        assert run_publish(settings)[0] == 0
        assert kinds(smtp) == {"switcher@example.org": ["html"], "stays@example.org": ["text"]}
        put(tmp_path, {"switcher@example.org": {"weekly": ("active", "text")},     # on the preferences page
                       "late@example.org": {"weekly": ("active", "text")}})
        assert run_publish(settings)[0] == 0
    assert kinds(smtp) == {"switcher@example.org": ["html"], "stays@example.org": ["text"],
                           "late@example.org": ["text"]}


def test_a_subscriber_file_with_a_status_column_mails_its_active_rows_only(tmp_path):
    people = tmp_path / "exported.csv"
    people.write_text("email,name,list,status\nyes@example.org,Yes,weekly,active\n"
                      "no@example.org,No,weekly,unsubscribed\nwaiting@example.org,,weekly,unconfirmed\nbounced@example.org,,weekly,bounced\n"
                      "plain@example.org,Plain,,\n", encoding="utf-8")
    with FaultySmtpServer() as smtp:
        settings = configure(tmp_path, smtp, email_lists="[]", extra_email=f"    subscribers: {people}")
        status, _, err = run_publish(settings)
        assert status == 0, err
    assert sorted(received_by(smtp)) == ["plain@example.org", "yes@example.org"]


def test_a_disabled_channel_is_no_format_its_readers_get_the_list_through_the_others(tmp_path):
    with FaultySmtpServer() as smtp:
        settings = configure(tmp_path, smtp)
        text = settings.read_text(encoding="utf-8").replace("    lists: [weekly]\n  wechat:",
                                                            "    lists: [weekly]\n    enabled: false\n  wechat:")
        settings.write_text(text, encoding="utf-8")
        put(tmp_path, {"html@example.org": {"weekly": ("active", "email")},
                       "plain@example.org": {"weekly": ("active", "text")}})
        assert run_publish(settings)[0] == 0
        with running(load_settings(settings)) as port:
            with Ledger(tmp_path / "ledger.sqlite3") as ledger:
                token = unsubscribe.sign(ledger.subscriber_id("plain@example.org"), SECRET)
            page = request(port, "GET", f"/unsubscribe/{token}")[2]
    assert kinds(smtp) == {"html@example.org": ["html"], "plain@example.org": ["html"]}
    assert radios(page) == {}                       # nothing to choose between
