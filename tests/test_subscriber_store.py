"""The subscriber store on a real SQLite ledger file: one reader per address whatever its case, every
status change in the history, suppressions marking the lists, and the readers each channel's routes
select, streamed in pages."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from distributor.audience.lists import Route, formats_offered, known_lists, routes
from distributor.ledger.store import SCHEMA_VERSION, Ledger
from distributor.ledger.subscribers import MailClaim, MailToSend, SubscriberStore


class Clock:
    """A clock the test moves, so each change has a time of its own."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def ledger(open_test_ledger):
    with open_test_ledger(Clock()) as opened:
        yield opened


def join(store: SubscriberStore, address: str, list_name: str = "weekly", *, status: str = "active",
         format: str = "email", name: str | None = None) -> None:
    store.save(address, name=name)
    store.set_status(address, list_name, status, source="test", format=format)


def test_an_address_is_one_reader_whatever_its_case(ledger: Ledger) -> None:
    store = SubscriberStore(ledger)
    assert store.save("Ann.Lee@Example.org", name="Ann", attributes={"tags": "linux"})
    assert not store.save("ann.lee@example.ORG", name="Ann", attributes={"tags": "linux"})
    assert store.save("ANN.LEE@example.org", language="zh", attributes={"city": "Wuhan"})
    reader = store.subscriber("ann.lee@example.org")
    assert reader is not None
    assert (reader.address, reader.name, reader.language) == ("Ann.Lee@Example.org", "Ann", "zh")
    assert reader.attributes == {"city": "Wuhan", "tags": "linux"}
    # The id is the one the unsubscribe links of this address carry.
    assert reader.id == ledger.subscriber_id("ANN.LEE@EXAMPLE.ORG")
    assert store.subscriber_by_id(reader.id) == reader
    assert store.subscriber_by_id("no-such-id") is None
    assert ledger.db.execute("SELECT COUNT(*) FROM subscribers").fetchone()[0] == 1


def test_every_status_change_is_in_the_history_with_its_source(ledger: Ledger) -> None:
    store = SubscriberStore(ledger)
    store.save("ann@example.org")
    assert store.set_status("ann@example.org", "weekly", "unconfirmed", source="signup", detail="form")
    assert store.set_status("ann@example.org", "weekly", "active", source="confirm")
    assert not store.set_status("ann@example.org", "weekly", "active", source="import")
    assert not store.set_status("ann@example.org", "weekly", "active", source="preferences", format="text")
    assert store.set_status("ann@example.org", "weekly", "unsubscribed", source="preferences")
    history = [(c.list, c.status, c.source, c.detail) for c in store.history("ANN@example.org")]
    assert history == [("weekly", "unconfirmed", "signup", "form"), ("weekly", "active", "confirm", None),
                       ("weekly", "unsubscribed", "preferences", None)]
    times = [change.at for change in store.history("ann@example.org")]
    assert times == sorted(times) and len(set(times)) == 3
    (subscription,) = store.subscriber("ann@example.org").subscriptions
    assert (subscription.status, subscription.format) == ("unsubscribed", "text")   # the format change stayed
    with pytest.raises(ValueError):
        store.set_status("ann@example.org", "weekly", "paused", source="test")


@pytest.mark.parametrize("source, status", [("bounce", "bounced"), ("complaint", "complained"),
                                            ("one-click", "unsubscribed"), ("command", "unsubscribed")])
def test_a_suppression_marks_the_lists_that_still_mail_the_address(ledger: Ledger, source: str, status: str) -> None:
    store = SubscriberStore(ledger)
    join(store, "ann@example.org", "weekly")
    join(store, "ann@example.org", "monthly", status="unconfirmed")
    join(store, "ann@example.org", "news", status="unsubscribed")
    ledger.suppress("Ann@Example.org", reason="550 5.1.1 no such user", source=source)
    statuses = {s.list: s.status for s in store.subscriber("ann@example.org").subscriptions}
    assert statuses == {"weekly": status, "monthly": status, "news": "unsubscribed"}
    marked = [(c.list, c.status, c.source, c.detail) for c in store.history("ann@example.org") if c.source == source]
    reason = "550 5.1.1 no such user"
    assert sorted(marked) == [("monthly", status, source, reason), ("weekly", status, source, reason)]
    ledger.suppress("ann@example.org", reason="again", source=source)       # repeated: no new lines
    assert len(store.history("ann@example.org")) == 5


def test_the_routes_split_a_shared_list_by_format_and_give_a_single_channel_list_whole(ledger: Ledger) -> None:
    store = SubscriberStore(ledger)
    join(store, "html@example.org", "weekly", format="email", name="Html")
    join(store, "plain@example.org", "weekly", format="text")
    join(store, "pager@example.org", "weekly", format="pager")     # a format no channel of this list is
    join(store, "both@example.org", "weekly", format="email")
    join(store, "both@example.org", "digest", format="text")       # digest: only email sends it
    join(store, "waiting@example.org", "weekly", status="unconfirmed")
    join(store, "left@example.org", "weekly", status="unsubscribed")
    join(store, "bounced@example.org", "digest")
    ledger.suppress("bounced@example.org", reason="550", source="bounce")
    join(store, "suppressed@example.org", "weekly")
    ledger.db.execute("INSERT INTO suppressions VALUES ('suppressed@example.org', 'r', 'command', 0)")
    served = {"email": ("weekly", "digest"), "text": ("weekly",)}
    assert known_lists(served) == ("weekly", "digest")
    assert formats_offered("weekly", served) == ("email", "text") and formats_offered("digest", served) == ("email",)
    email = list(store.recipients(routes("email", served)))
    text = list(store.recipients(routes("text", served)))
    assert email == [("both@example.org", None), ("html@example.org", "Html"), ("pager@example.org", None)]
    assert text == [("plain@example.org", None)]
    assert list(store.recipients(())) == []


def test_routes_of_a_list_that_three_channels_send(ledger: Ledger) -> None:
    served = {"email": ("weekly",), "text": ("weekly",), "pager": ("weekly", "alerts")}
    assert routes("email", served) == (Route("weekly", ("email",), other_formats=True,
                                             excluded=("email", "text", "pager")),)
    assert routes("pager", served) == (Route("weekly", ("pager",)),
                                       Route("alerts", ("pager",), other_formats=True, excluded=("pager",)))
    assert routes("fax", served) == ()


def test_recipients_and_readers_stream_in_pages_each_once_in_address_order(ledger: Ledger) -> None:
    store = SubscriberStore(ledger)
    with ledger.transaction():
        for number in range(1203):          # more than two pages of 500
            join(store, f"reader{number:05d}@example.org", "weekly" if number % 3 else "monthly")
    weekly = list(store.recipients(routes("email", {"email": ("weekly",)})))
    assert len(weekly) == len({address for address, _ in weekly}) == 802
    assert weekly == sorted(weekly)
    both = list(store.recipients(routes("email", {"email": ("weekly", "monthly")})))
    assert len(both) == 1203
    listed = list(store.subscribers(list_name="monthly", status="active"))
    assert len(listed) == 401 and all(reader.on("monthly").status == "active" for reader in listed)
    assert len(list(store.subscribers())) == 1203
    assert store.counts() == {"monthly": {"active": 401}, "weekly": {"active": 802}}


def test_removing_a_reader_erases_them_but_keeps_the_suppression(ledger: Ledger) -> None:
    store = SubscriberStore(ledger)
    join(store, "ann@example.org")
    ann = store.subscriber("ann@example.org").id
    store.record_request("ann@example.org", "weekly", nonce="n1", client="hash", form_url="https://example.org/subscribe")
    store.queue_mail("ann@example.org", "client", "bounces@example.org", b"a confirmation link")
    ledger.suppress("ann@example.org", reason="asked", source="command")
    assert store.remove("ANN@example.org")
    assert store.subscriber("ann@example.org") is None
    assert store.history("ann@example.org") == [] and store.consents("ann@example.org") == []
    assert ledger.db.execute("SELECT COUNT(*) FROM signup_mails").fetchone()[0] == 0
    assert ledger.address_for(ann) is None
    assert ledger.is_suppressed("ann@example.org")
    assert not store.remove("ann@example.org")
    # An issue mailed to the address keeps its id: the unsubscribe link in that mail still works.
    ledger.plan("weekly", "email", "hash", [("Bob@example.org", None)])
    join(store, "bob@example.org")
    bob = store.subscriber("bob@example.org").id
    assert store.remove("bob@example.org") and ledger.address_for(bob) == "bob@example.org"


def test_a_consent_request_is_confirmed_once_by_its_nonce_alone(ledger: Ledger) -> None:
    store = SubscriberStore(ledger)
    join(store, "ann@example.org", status="unconfirmed")
    store.record_request("ann@example.org", "weekly", nonce="first", client="192.0.2.7",
                         form_url="https://example.org/subscribe", format="text")
    store.record_request("ann@example.org", "weekly", nonce="second", client="192.0.2.9", form_url=None)
    assert store.confirm_request("ann@example.org", "weekly", "other", client="x") is None
    assert store.confirm_request("ann@example.org", "digest", "first", client="x") is None
    confirmed = store.confirm_request("ann@example.org", "weekly", "first", client="192.0.2.8")
    assert confirmed is not None and confirmed.format == "text"
    assert store.confirm_request("ann@example.org", "weekly", "first", client="192.0.2.8") is None
    (list_name, at, client, form_url, confirmed_at), second = store.consents("ann@example.org")
    assert (list_name, client, form_url) == ("weekly", "192.0.2.7", "https://example.org/subscribe")
    assert confirmed_at is not None and confirmed_at > at and second[4] is None


def test_a_sent_or_failed_confirmation_mail_loses_its_message(ledger: Ledger) -> None:
    store = SubscriberStore(ledger)
    for address in ("a@example.org", "b@example.org", "c@example.org"):
        join(store, address, status="unconfirmed")
        store.queue_mail(address, "client", "bounces@example.org", b"link " + address.encode())
    first, second, third = store.mails_to_send(10)
    for mail in (first, second, third):
        store.claim_mail(mail.id)
    store.mail_done(first.id, "sent")
    store.mail_done(second.id, "failed", error="550 5.1.1")
    store.mail_done(third.id, "pending", error="451 later")
    assert [bytes(row[0]) for row in ledger.db.execute("SELECT message FROM signup_mails ORDER BY id")] == \
        [b"", b"", b"link c@example.org"]


def test_the_purge_erases_stale_unconfirmed_signups_only(ledger: Ledger) -> None:
    store = SubscriberStore(ledger)
    def signed_up(address: str, *lists: tuple[str, str]) -> None:
        store.save(address)
        for list_name, status in lists:
            store.set_status(address, list_name, status, source="signup")
        store.record_request(address, lists[0][0] if lists else "weekly", nonce=address, client=None, form_url=None)
        store.queue_mail(address, "client", "bounces@example.org", b"mail")
    signed_up("stale@example.org", ("weekly", "unconfirmed"), ("digest", "unconfirmed"))
    signed_up("refused@example.org")                        # a signup that put them on no list
    signed_up("partly@example.org", ("weekly", "unconfirmed"), ("digest", "active"))
    signed_up("left@example.org", ("weekly", "unsubscribed"))
    join(store, "imported@example.org", status="unconfirmed")  # no signup request: not the form's
    store.charge_request("client")
    cutoff = ledger.clock()
    signed_up("fresh@example.org", ("weekly", "unconfirmed"))
    store.charge_request("client")
    stale_id = store.subscriber("stale@example.org").id
    assert store.purge_unconfirmed(cutoff) == 2
    kept = {reader.address for reader in store.subscribers()}
    assert kept == {"partly@example.org", "left@example.org", "imported@example.org", "fresh@example.org"}
    for table in ("subscriptions", "subscription_history", "consents", "signup_mails", "subscriber_ids"):
        assert ledger.db.execute(f"SELECT COUNT(*) FROM {table} WHERE address IN"
                                 " ('stale@example.org', 'refused@example.org')").fetchone()[0] == 0, table
    assert store.subscriber_by_id(stale_id) is None
    assert store.requests_since(0, "client") == 2 and store.forget_requests(cutoff) == 1
    assert store.requests_since(0, "client") == 1
    assert store.purge_unconfirmed(cutoff) == 0


@pytest.mark.parametrize("later", ["bounce", "complaint", "command"])
def test_a_bounce_complaint_or_command_replaces_a_suppression_the_reader_made(ledger: Ledger, later: str) -> None:
    store = SubscriberStore(ledger)
    join(store, "ann@example.org")
    ledger.suppress("ann@example.org", reason="List-Unsubscribe one-click", source="one-click")
    assert store.subscriber("ann@example.org").on("weekly").status == "unsubscribed"
    ledger.suppress("ann@example.org", reason="550 5.1.1 no such user", source=later)
    assert ledger.suppression("ann@example.org")[1:3] == ("550 5.1.1 no such user", later)
    # Neither the reader's own source nor another refusal replaces it again.
    ledger.suppress("ann@example.org", reason="unsubscribe page", source="page")
    ledger.suppress("ann@example.org", reason="other", source="bounce" if later != "bounce" else "complaint")
    assert ledger.suppression("ann@example.org")[1:3] == ("550 5.1.1 no such user", later)


def test_a_ledger_of_the_previous_layout_gains_the_store(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        ledger.plan("weekly", "email", "hash", [("a@example.org", None)])
    old = sqlite3.connect(path)                 # layout 1 had no subscriber store
    for table in ("subscribers", "subscriptions", "subscription_history", "consents", "signup_mails"):
        old.execute(f"DROP TABLE {table}")
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    with Ledger.snapshot(path) as copy:
        assert list(SubscriberStore(copy).subscribers()) == []
    with Ledger(path) as ledger:
        assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert ledger.counts("weekly") == {"email": {"pending": 1}}
        join(SubscriberStore(ledger), "b@example.org")
        assert SubscriberStore(ledger).subscriber("b@example.org") is not None


def test_confirming_a_request_closes_the_older_and_other_open_requests_of_that_list(ledger: Ledger) -> None:
    store = SubscriberStore(ledger)
    join(store, "ann@example.org", status="unconfirmed")
    for nonce, list_name in (("first", "weekly"), ("second", "weekly"), ("digest", "digest")):
        store.record_request("ann@example.org", list_name, nonce=nonce, client=None, form_url=None)
    assert store.confirm_request("ann@example.org", "weekly", "second", client=None) is not None
    # An older link of the same list can no longer confirm (after a later unsubscribe, say) ...
    assert store.confirm_request("ann@example.org", "weekly", "first", client=None) is None
    # ... the open request of another list still can, and so can a request made after the confirmation.
    assert store.confirm_request("ann@example.org", "digest", "digest", client=None) is not None
    store.record_request("ann@example.org", "weekly", nonce="third", client=None, form_url=None)
    assert store.confirm_request("ann@example.org", "weekly", "third", client=None) is not None
    # The closed request stays in the record, never confirmed.
    assert [consent.confirmed_at is None for consent in store.consents("ann@example.org")] == \
        [True, False, False, False]


def test_a_mail_is_claimed_before_its_hand_over_and_only_while_it_may_still_go(ledger: Ledger) -> None:
    store = SubscriberStore(ledger)
    addresses = ("ok@example.org", "bounced@example.org", "told@example.org", "left@example.org",
                 "gone@example.org")
    for address in addresses:
        join(store, address, status="unconfirmed")
        store.queue_mail(address, "client", "bounces@example.org", b"link " + address.encode())
    mails = {mail.address: mail for mail in store.mails_to_send(10)}
    ledger.suppress("bounced@example.org", reason="550 5.1.1 no such user", source="bounce")
    ledger.suppress("told@example.org", reason="on request", source="command")
    ledger.suppress("left@example.org", reason="List-Unsubscribe one-click", source="one-click")
    store.remove("gone@example.org")
    claims = {address: store.claim_mail(mails[address].id) for address in addresses}
    assert claims["ok@example.org"].mail == MailToSend(mails["ok@example.org"].id, "ok@example.org",
                                                       "bounces@example.org", b"link ok@example.org", 1)
    # A suppression the reader made does not stop the mail: they may be asking back.
    assert claims["left@example.org"].mail is not None
    for address, source in (("bounced@example.org", "bounce"), ("told@example.org", "command")):
        assert claims[address].mail is None and source in claims[address].withheld
    assert claims["gone@example.org"] == MailClaim(None, None)
    status = dict(ledger.db.execute("SELECT address, status || ' ' || attempts || ' ' || length(message)"
                                    " FROM signup_mails").fetchall())
    assert status == {"ok@example.org": "sending 1 19", "left@example.org": "sending 1 21",
                      "bounced@example.org": "failed 0 0", "told@example.org": "failed 0 0"}
    # A claimed mail is claimed once: another outbox, or a later wake, finds it taken.
    assert store.claim_mail(mails["ok@example.org"].id) == MailClaim(None, None)


def test_a_mail_left_sending_is_failed_and_an_outcome_moves_only_a_sending_mail(ledger: Ledger) -> None:
    store = SubscriberStore(ledger)
    for address in ("a@example.org", "b@example.org", "c@example.org"):
        join(store, address, status="unconfirmed")
        store.queue_mail(address, "client", "bounces@example.org", b"link")
    first, second, third = store.mails_to_send(10)
    assert store.claim_mail(first.id).mail is not None and store.claim_mail(second.id).mail is not None
    store.mail_done(second.id, "pending", error="450 4.7.1 sender rate limited", uncount=True)
    assert store.fail_uncertain_mails() == 1
    store.mail_done(first.id, "sent")               # too late: another outbox failed it as uncertain
    store.mail_done(third.id, "sent")               # never claimed: not handed over
    rows = ledger.db.execute("SELECT status, attempts, length(message) FROM signup_mails ORDER BY id").fetchall()
    assert rows == [("failed", 1, 0), ("pending", 0, 4), ("pending", 0, 4)]
    assert "uncertain" in ledger.db.execute("SELECT last_error FROM signup_mails WHERE id = ?",
                                            (first.id,)).fetchone()[0]


def test_the_purge_goes_a_batch_at_a_time_and_keeps_the_id_an_issue_mailed(ledger: Ledger) -> None:
    store = SubscriberStore(ledger)
    addresses = [f"stranger{i}@example.net" for i in range(5)]
    for address in addresses:
        join(store, address, status="unconfirmed")
        store.record_request(address, "weekly", nonce=address, client=None, form_url=None)
    ledger.plan("weekly", "email", "hash", [("Stranger3@example.net", None)])
    mailed_id = ledger.subscriber_id("stranger3@example.net")
    cutoff, statements = ledger.clock(), []
    sqlite = ledger.dialect == "sqlite"
    if sqlite:
        ledger.db.set_trace_callback(statements.append)
    assert [store.purge_unconfirmed(cutoff, limit=2) for _ in range(4)] == [2, 2, 1, 0]
    assert list(store.subscribers()) == []
    assert [row[0] for row in ledger.db.execute("SELECT address FROM subscriber_ids")] == ["stranger3@example.net"]
    assert ledger.address_for(mailed_id) == "stranger3@example.net"
    if not sqlite:
        return                  # what follows reads SQLite's query plan
    ledger.db.set_trace_callback(None)
    # The look for an issue's delivery is an index lookup, not a scan of every delivery per address.
    (erase_ids, *_) = [statement for statement in statements if "FROM deliveries" in statement]
    plan = [row[3] for row in ledger.db.execute(f"EXPLAIN QUERY PLAN {erase_ids}")]
    assert "SEARCH deliveries USING COVERING INDEX deliveries_by_address (<expr>=?)" in plan, plan
