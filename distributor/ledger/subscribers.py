"""The subscriber store: readers, the lists they are on, and every change of their status.

A reader is one address (compared case-insensitively: the key is the lower-cased address, the
address as written is kept to mail it) with a name, a language (zh or en) and free attributes. Per
list the reader has a status and a format (the row channel they read it through, `email` or
`text`). Every change of a status is kept in `subscription_history` with its time and source (an
import, the signup form, a confirmation, the preferences page, a bounce, a command): the record a
publisher can show a regulator. The consent of a signup (when, from which client, on which form,
when confirmed) is kept in `consents`.

The suppression list (`Ledger.suppress`) stays the one answer to "may this address be mailed at
all": an address on it is mailed by no list and no subscriber file. Suppressing an address marks
its lists here too (`mark_suppressed`), so the store says why a reader gets nothing.

Everything here runs on the ledger's connection; a write that must be atomic runs inside the
caller's `Ledger.transaction()`.
"""
from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from distributor.audience.lists import Route
from distributor.audience.standing import READER_SOURCES, STATUSES

if TYPE_CHECKING:
    from distributor.ledger.store import Connection, Ledger

# The list status that a suppression's source stands for.
_SUPPRESSED_STATUS = {"bounce": "bounced", "complaint": "complained"}
_PAGE = 500
PURGE_BATCH = 200           # readers erased per transaction of the purge: the pages wait for no more

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscribers (
    address TEXT PRIMARY KEY, email TEXT NOT NULL, name TEXT, language TEXT,
    attributes TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, updated_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions (
    address TEXT NOT NULL, list TEXT NOT NULL, status TEXT NOT NULL, format TEXT NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY (address, list)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS subscriptions_by_list ON subscriptions (list, status, address);
CREATE TABLE IF NOT EXISTS subscription_history (
    address TEXT NOT NULL, list TEXT NOT NULL, status TEXT NOT NULL, source TEXT NOT NULL,
    at REAL NOT NULL, detail TEXT);
CREATE INDEX IF NOT EXISTS subscription_history_by_address ON subscription_history (address, at);
CREATE TABLE IF NOT EXISTS consents (
    address TEXT NOT NULL, list TEXT NOT NULL, requested_at REAL NOT NULL, client TEXT, form_url TEXT,
    confirmed_at REAL, confirmed_client TEXT, nonce TEXT NOT NULL, format TEXT);
CREATE INDEX IF NOT EXISTS consents_by_address ON consents (address, list, requested_at);
CREATE UNIQUE INDEX IF NOT EXISTS consents_by_nonce ON consents (nonce);
CREATE TABLE IF NOT EXISTS signup_requests (client_key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS signup_requests_by_client ON signup_requests (client_key, at);
CREATE TABLE IF NOT EXISTS signup_mails (
    id INTEGER PRIMARY KEY, address TEXT NOT NULL, client_key TEXT NOT NULL, queued_at REAL NOT NULL,
    envelope_from TEXT NOT NULL, message BLOB NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, sent_at REAL);
CREATE INDEX IF NOT EXISTS signup_mails_by_address ON signup_mails (address, queued_at);
CREATE INDEX IF NOT EXISTS signup_mails_pending ON signup_mails (status, id);
CREATE INDEX IF NOT EXISTS deliveries_by_address ON deliveries (lower(recipient));
"""
TABLES = ("subscribers", "subscriptions", "subscription_history", "consents", "signup_requests", "signup_mails")
# signup_mails.status: pending (to send), sending (claimed for a hand-over: if it is still so when an
# outbox looks, that hand-over's outcome is unknown), sent, failed.


@dataclass(frozen=True)
class Subscription:
    """A reader's standing on one list."""

    list: str
    status: str
    format: str
    updated_at: float


@dataclass(frozen=True)
class StoredSubscriber:
    """A reader as the store holds them, with their opaque id (the one in their unsubscribe links)."""

    id: str
    address: str                    # as the reader wrote it
    name: str | None
    language: str | None
    attributes: Mapping[str, str]
    created_at: float
    subscriptions: tuple[Subscription, ...] = ()

    def on(self, list_name: str) -> Subscription | None:
        return next((s for s in self.subscriptions if s.list == list_name), None)


@dataclass(frozen=True)
class StatusChange:
    """One line of a reader's history: on `list`, `status` since `at`, because of `source`."""

    list: str
    status: str
    source: str
    at: float
    detail: str | None


class Consent(NamedTuple):
    """One signup request of a reader: for which list, when, from which client (its IP address, a keyed
    hash of it, or None, as `signup.client_address` says), on which form, and when it was confirmed."""

    list: str
    requested_at: float
    client: str | None
    form_url: str | None
    confirmed_at: float | None


@dataclass(frozen=True)
class Standing:
    """What the store holds of one address, for a change decided a batch at a time (an import):
    whether the reader exists, their name and attributes, their (status, format) on the list in
    question (None: not on it), and whether the address is suppressed."""

    known: bool
    name: str | None
    attributes: Mapping[str, str]
    subscription: tuple[str, str] | None
    suppressed: bool


@dataclass(frozen=True)
class ListChange:
    """Put the reader on a list with `status` and `format`. `source` None: the status stays and only
    the format changes, so no history line is written."""

    address: str
    status: str
    format: str
    source: str | None


@dataclass(frozen=True)
class Confirmed:
    """A consent request just confirmed: the format the reader chose on the form, if they chose one."""

    format: str | None


@dataclass(frozen=True)
class MailToSend:
    """A confirmation mail waiting in the outbox."""

    id: int
    address: str
    envelope_from: str
    message: bytes
    attempts: int


@dataclass(frozen=True)
class MailClaim:
    """What claiming a mail for its hand-over found: the mail to hand over now, or None, with the
    reason when the mail was failed unsent (None as well when it was no longer waiting)."""

    mail: MailToSend | None
    withheld: str | None


class SubscriberStore:
    """The subscriber tables of `ledger` (its connection, clock and transactions)."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.db: Connection = ledger.db

    # --- readers ---------------------------------------------------------------------------------

    def save(self, address: str, *, name: str | None = None, language: str | None = None,
             attributes: Mapping[str, str] | None = None) -> bool:
        """Add the reader, or update what is given of their name, language and attributes (merged);
        return whether anything changed."""
        folded, now = address.lower(), self.ledger.clock()
        row = self.db.execute("SELECT name, language, attributes FROM subscribers WHERE address = ?",
                              (folded,)).fetchone()
        if row is None:
            self.db.execute("INSERT INTO subscribers VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (folded, address, name, language, _json(attributes or {}), now, now))
            self.ledger.subscriber_id(folded)
            return True
        merged = {**json.loads(row[2]), **(attributes or {})}
        new = (name if name is not None else row[0], language if language is not None else row[1], _json(merged))
        if new == tuple(row):
            return False
        self.db.execute("UPDATE subscribers SET name = ?, language = ?, attributes = ?, updated_at = ?"
                        " WHERE address = ?", (*new, now, folded))
        return True

    def subscriber(self, address: str) -> StoredSubscriber | None:
        """Return the reader with `address` (any case) and their lists, or None."""
        row = self.db.execute(
            "SELECT i.id, s.email, s.name, s.language, s.attributes, s.created_at FROM subscribers s"
            " JOIN subscriber_ids i ON i.address = s.address WHERE s.address = ?", (address.lower(),)).fetchone()
        return self._with_subscriptions(row) if row else None

    def subscriber_by_id(self, subscriber_id: str) -> StoredSubscriber | None:
        """Return the reader whose unsubscribe links carry `subscriber_id`, or None."""
        address = self.ledger.address_for(subscriber_id)
        return self.subscriber(address) if address else None

    def subscribers(self, *, list_name: str | None = None, status: str | None = None) -> Iterator[StoredSubscriber]:
        """Yield every reader in address order (those on `list_name`, with `status` there, when given),
        a page at a time."""
        last = ""
        while True:
            page = self.db.execute(
                "SELECT i.id, s.email, s.name, s.language, s.attributes, s.created_at FROM subscribers s"
                " JOIN subscriber_ids i ON i.address = s.address WHERE s.address > ?"
                " AND (? IS NULL AND ? IS NULL OR EXISTS (SELECT 1 FROM subscriptions p WHERE p.address = s.address"
                " AND (? IS NULL OR p.list = ?) AND (? IS NULL OR p.status = ?)))"
                " ORDER BY s.address LIMIT ?",
                (last, list_name, status, list_name, list_name, status, status, _PAGE)).fetchall()
            if not page:
                return
            for row in page:
                yield self._with_subscriptions(row)
            last = page[-1][1].lower()

    def remove(self, address: str) -> bool:
        """Erase the reader: their row, lists, history, consents, confirmation mails and opaque id (a
        suppression stays: it is what keeps them from being mailed). Return whether there was such a
        reader."""
        folded = address.lower()
        removed = self.db.execute("DELETE FROM subscribers WHERE address = ?", (folded,)).rowcount > 0
        self._erase((folded,))
        return removed

    def _erase(self, folded: tuple[str, ...]) -> None:
        """Delete what the store keeps of the lower-cased addresses (at most a few hundred) besides their
        `subscribers` rows, a statement per table. An id stays while an issue's delivery names the
        address (found through `deliveries_by_address`): the unsubscribe link in that mail needs it.
        The unary + takes the column's text affinity off the comparison, which SQLite needs to look
        the expression index up rather than scan it for each address."""
        marks = _marks(folded)
        for table in ("subscriptions", "subscription_history", "consents", "signup_mails"):
            self.db.execute(f"DELETE FROM {table} WHERE address IN ({marks})", folded)
        self.db.execute(f"DELETE FROM subscriber_ids WHERE address IN ({marks}) AND NOT EXISTS"
                        " (SELECT 1 FROM deliveries WHERE lower(recipient) = +subscriber_ids.address)", folded)

    def _with_subscriptions(self, row: tuple) -> StoredSubscriber:
        subscriber_id, address, name, language, attributes, created_at = row
        lists = tuple(Subscription(*found) for found in self.db.execute(
            "SELECT list, status, format, updated_at FROM subscriptions WHERE address = ? ORDER BY list",
            (address.lower(),)))
        return StoredSubscriber(subscriber_id, address, name, language, json.loads(attributes), created_at, lists)

    # --- statuses --------------------------------------------------------------------------------

    def set_status(self, address: str, list_name: str, status: str, *, source: str, detail: str | None = None,
                   format: str | None = None) -> bool:
        """Put the reader (who must have been `save`d) on `list_name` with `status` (and `format`, or
        the one they had, `email` for a new list); record the change in the history. Return whether
        the status changed (a format change alone is no history line)."""
        if status not in STATUSES:
            raise ValueError(status)
        folded, now = address.lower(), self.ledger.clock()
        row = self.db.execute("SELECT status, format FROM subscriptions WHERE address = ? AND list = ?",
                              (folded, list_name)).fetchone()
        new_format = format or (row[1] if row else "email")
        if row is not None and (row[0], row[1]) == (status, new_format):
            return False
        self.db.execute("INSERT INTO subscriptions VALUES (?, ?, ?, ?, ?) ON CONFLICT (address, list) DO UPDATE"
                        " SET status = excluded.status, format = excluded.format, updated_at = excluded.updated_at",
                        (folded, list_name, status, new_format, now))
        if row is not None and row[0] == status:
            return False
        self.db.execute("INSERT INTO subscription_history VALUES (?, ?, ?, ?, ?, ?)",
                        (folded, list_name, status, source, now, detail))
        return True

    def history(self, address: str) -> list[StatusChange]:
        """Return every status change of the reader, oldest first."""
        return [StatusChange(*row) for row in self.db.execute(
            "SELECT list, status, source, at, detail FROM subscription_history WHERE address = ?"
            " ORDER BY at, rowid", (address.lower(),))]

    def recipients(self, routes: Iterable[Route], *, issue_key: str = "",
                   reached_by: tuple[str, ...] = ()) -> Iterator[tuple[str, str | None]]:
        """Yield (address as written, name) of every reader who is active on one of the routes' lists in a
        format the route takes, and not suppressed: each reader once, in address order, a page at a time
        (a list of 100,000 is never held whole). Readers the issue `issue_key` already reached (or may have:
        uncertain) through one of the channels `reached_by` are left out: a reader who switched from email
        to text between two runs of an issue does not get it twice."""
        clauses, parameters = [], []
        for route in routes:
            if route.other_formats:
                clauses.append(f"(p.list = ? AND (p.format IN ({_marks(route.formats)}) OR p.format NOT IN"
                               f" ({_marks(route.excluded)})))")
                parameters += [route.list, *route.formats, *route.excluded]
            else:
                clauses.append(f"(p.list = ? AND p.format IN ({_marks(route.formats)}))")
                parameters += [route.list, *route.formats]
        if not clauses:
            return
        last = ""
        while True:
            page = self.db.execute(
                "SELECT s.address, s.email, s.name FROM subscribers s WHERE s.address > ? AND EXISTS"
                f" (SELECT 1 FROM subscriptions p WHERE p.address = s.address AND p.status = 'active' AND"
                f" ({' OR '.join(clauses)})) AND s.address NOT IN (SELECT address FROM suppressions)"
                # One lookup per reader through deliveries_by_address, not a scan of the issue's rows per page.
                " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE lower(d.recipient) = +s.address"
                f" AND d.issue_key = ? AND d.channel IN ({_marks(reached_by)}) AND d.status IN ('sent', 'uncertain'))"
                " ORDER BY s.address LIMIT ?", (last, *parameters, issue_key, *reached_by, _PAGE)).fetchall()
            if not page:
                return
            for _, address, name in page:
                yield address, name
            last = page[-1][0]

    def counts(self) -> dict[str, dict[str, int]]:
        """Return {list: {status: readers}}."""
        result: dict[str, dict[str, int]] = {}
        for list_name, status, count in self.db.execute(
                "SELECT list, status, COUNT(*) FROM subscriptions GROUP BY list, status ORDER BY list"):
            result.setdefault(list_name, {})[status] = count
        return result

    # --- batches: many readers in few statements (an import of 100,000) --------------------------

    def standings(self, addresses: Sequence[str], list_name: str) -> dict[str, Standing]:
        """Return what the store holds of each of `addresses` (at most a few hundred), by lower-cased
        address, in three queries."""
        folded = [address.lower() for address in addresses]
        marks = _marks(tuple(folded))
        readers = {row[0]: (row[1], json.loads(row[2])) for row in self.db.execute(
            f"SELECT address, name, attributes FROM subscribers WHERE address IN ({marks})", folded)}
        lists = {row[0]: (row[1], row[2]) for row in self.db.execute(
            f"SELECT address, status, format FROM subscriptions WHERE list = ? AND address IN ({marks})",
            (list_name, *folded))}
        suppressed = {row[0] for row in self.db.execute(
            f"SELECT address FROM suppressions WHERE address IN ({marks})", folded)}
        return {address: Standing(address in readers, *readers.get(address, (None, {})), lists.get(address),
                                  address in suppressed) for address in folded}

    def save_many(self, readers: Sequence[tuple[str, str | None, Mapping[str, str]]], *, new: bool) -> None:
        """Add readers given as (address as written, name, attributes) with their subscriber ids
        (`new`), or replace the name and attributes of readers the store has."""
        now = self.ledger.clock()
        if new:
            self.db.executemany("INSERT INTO subscribers VALUES (?, ?, ?, NULL, ?, ?, ?)",
                                [(address.lower(), address, name, _json(attributes), now, now)
                                 for address, name, attributes in readers])
            self.db.executemany("INSERT OR IGNORE INTO subscriber_ids (id, address) VALUES (?, ?)",
                                [(secrets.token_urlsafe(12), address.lower()) for address, _, _ in readers])
        else:
            self.db.executemany("UPDATE subscribers SET name = ?, attributes = ?, updated_at = ? WHERE address = ?",
                                [(name, _json(attributes), now, address.lower()) for address, name, attributes
                                 in readers])

    def set_statuses(self, list_name: str, changes: Sequence[ListChange], *, detail: str | None = None) -> None:
        """Apply `changes` on `list_name`, each status change with its history line (`detail` in it)."""
        now = self.ledger.clock()
        self.db.executemany("INSERT INTO subscriptions VALUES (?, ?, ?, ?, ?) ON CONFLICT (address, list) DO UPDATE"
                            " SET status = excluded.status, format = excluded.format, updated_at = excluded.updated_at",
                            [(change.address.lower(), list_name, change.status, change.format, now)
                             for change in changes])
        self.db.executemany("INSERT INTO subscription_history VALUES (?, ?, ?, ?, ?, ?)",
                            [(change.address.lower(), list_name, change.status, change.source, now, detail)
                             for change in changes if change.source is not None])

    # --- signup ----------------------------------------------------------------------------------

    def known_id(self, address: str) -> str | None:
        """Return the opaque id of `address` if it has one (reading only)."""
        row = self.db.execute("SELECT id FROM subscriber_ids WHERE address = ?", (address.lower(),)).fetchone()
        return row[0] if row else None

    def claim_id(self, address: str, candidate: str) -> str:
        """Give `address` the id `candidate` unless it has one; return the id it has now."""
        self.db.execute("INSERT OR IGNORE INTO subscriber_ids (id, address) VALUES (?, ?)",
                        (candidate, address.lower()))
        return self.db.execute("SELECT id FROM subscriber_ids WHERE address = ?", (address.lower(),)).fetchone()[0]

    def charge_request(self, client_key: str) -> None:
        """Count one accepted signup POST against the client, whatever it decided."""
        self.db.execute("INSERT INTO signup_requests VALUES (?, ?)", (client_key, self.ledger.clock()))

    def requests_since(self, since: float, client_key: str) -> int:
        """Count the signup POSTs the client made since `since`."""
        return self.db.execute("SELECT COUNT(*) FROM signup_requests WHERE client_key = ? AND at >= ?",
                               (client_key, since)).fetchone()[0]

    def record_request(self, address: str, list_name: str, *, nonce: str, client: str | None, form_url: str | None,
                       format: str | None = None) -> None:
        """Keep the consent request of a signup form (confirmed later, or never): `nonce` is the one its
        confirmation link carries, `format` the one the reader chose on the form, if any."""
        self.db.execute("INSERT INTO consents (address, list, requested_at, client, form_url, nonce, format)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (address.lower(), list_name, self.ledger.clock(), client, form_url, nonce, format))

    def confirm_request(self, address: str, list_name: str, nonce: str, *, client: str | None) -> Confirmed | None:
        """Mark the request with `nonce` confirmed; None when there is no such open request of the
        address for the list: confirmed already, never made, or closed. Confirming a request closes
        every other request of the address for the list made before then: the link of an older mail
        cannot put back on the list a reader who confirmed with another and left since. A closed
        request stays in the record, never confirmed."""
        row = self.db.execute(
            "SELECT rowid, format FROM consents c WHERE address = ? AND list = ? AND nonce = ? AND confirmed_at IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM consents later WHERE later.address = c.address AND later.list = c.list"
            " AND later.confirmed_at >= c.requested_at)",
            (address.lower(), list_name, nonce)).fetchone()
        if row is None:
            return None
        self.db.execute("UPDATE consents SET confirmed_at = ?, confirmed_client = ? WHERE rowid = ?",
                        (self.ledger.clock(), client, row[0]))
        return Confirmed(row[1])

    def consents(self, address: str) -> list[Consent]:
        """Return the reader's signup requests, oldest first."""
        return [Consent(*row) for row in self.db.execute(
            "SELECT list, requested_at, client, form_url, confirmed_at FROM consents"
            " WHERE address = ? ORDER BY requested_at, rowid", (address.lower(),))]

    def mails_since(self, since: float, *, address: str) -> int:
        """Count the confirmation mails queued to `address` since `since`."""
        return self.db.execute("SELECT COUNT(*) FROM signup_mails WHERE address = ? AND queued_at >= ?",
                               (address.lower(), since)).fetchone()[0]

    def queue_mail(self, address: str, client_key: str, envelope_from: str, message: bytes) -> None:
        self.db.execute("INSERT INTO signup_mails (address, client_key, queued_at, envelope_from, message)"
                        " VALUES (?, ?, ?, ?, ?)", (address.lower(), client_key, self.ledger.clock(), envelope_from,
                                                    message))

    def mails_to_send(self, limit: int, *, after: int = 0) -> list[MailToSend]:
        """Return the oldest confirmation mails waiting for the relay (those queued after mail `after`:
        the outbox pages through them). A mail is sent only as `claim_mail` returns it."""
        return [MailToSend(row[0], row[1], row[2], bytes(row[3]), row[4]) for row in self.db.execute(
            "SELECT id, address, envelope_from, message, attempts FROM signup_mails WHERE status = 'pending'"
            " AND id > ? ORDER BY id LIMIT ?", (after, limit))]

    def claim_mail(self, mail_id: int) -> MailClaim:
        """Take the pending mail `mail_id` for a hand-over, inside the caller's transaction, which must
        commit before the hand-over starts: it becomes `sending`, one attempt more, and is returned as
        it stands now. A mail no longer pending (another outbox took it, its reader was erased) is not
        returned. Nor is one whose address was suppressed since it was queued by a source other than
        the reader (a bounce, a complaint, the publisher's command), or whose reader is gone: it is
        `failed` unsent, with the reason, and loses its message."""
        row = self.db.execute(
            "SELECT m.address, m.envelope_from, m.message, m.attempts, x.source, r.address IS NOT NULL"
            " FROM signup_mails m LEFT JOIN suppressions x ON x.address = m.address"
            " LEFT JOIN subscribers r ON r.address = m.address WHERE m.id = ? AND m.status = 'pending'",
            (mail_id,)).fetchone()
        if row is None:
            return MailClaim(None, None)
        address, envelope_from, message, attempts, source, known = row
        withheld = None
        if source is not None and source not in READER_SOURCES:
            withheld = f"not sent: the address was suppressed ({source}) after the mail was queued"
        elif not known:
            withheld = "not sent: the reader was erased after the mail was queued"
        if withheld is not None:
            self.db.execute("UPDATE signup_mails SET status = 'failed', last_error = ?, message = X'' WHERE id = ?",
                            (withheld, mail_id))
            return MailClaim(None, withheld)
        self.db.execute("UPDATE signup_mails SET status = 'sending', attempts = attempts + 1 WHERE id = ?",
                        (mail_id,))
        return MailClaim(MailToSend(mail_id, address, envelope_from, bytes(message), attempts + 1), None)

    def fail_uncertain_mails(self) -> int:
        """Fail every mail still `sending`: the outbox that claimed it stopped (or could not record the
        outcome) during its hand-over, so whether the relay took it is unknown, and a confirmation is
        never sent twice (the reader can ask again). Return how many."""
        return self.db.execute(
            "UPDATE signup_mails SET status = 'failed', message = X'', last_error = 'uncertain: the outbox stopped"
            " before it recorded the hand-over' WHERE status = 'sending'").rowcount

    def mail_done(self, mail_id: int, status: str, *, error: str | None = None, uncount: bool = False) -> None:
        """Record how the hand-over of a claimed (`sending`) mail went: `sent`, `failed` (never again), or
        `pending` (try later; `uncount`: the relay refused before the hand-over, and the claim's attempt
        is taken back). A mail sent or failed loses its message: it holds a live confirmation link. A mail
        no longer `sending` (failed as uncertain by another outbox meanwhile) stays as it is."""
        if status not in ("sent", "failed", "pending"):
            raise ValueError(status)
        self.db.execute("UPDATE signup_mails SET status = ?, attempts = attempts - ?, last_error = ?,"
                        " sent_at = CASE ? WHEN 'sent' THEN ? END,"
                        " message = CASE WHEN ? = 'pending' THEN message ELSE X'' END"
                        " WHERE id = ? AND status = 'sending'",
                        (status, int(uncount), error, status, self.ledger.clock(), status, mail_id))

    def purge_unconfirmed(self, requested_before: float, *, limit: int = PURGE_BATCH) -> int:
        """Erase at most `limit` of the readers a signup made who never confirmed: on no list but as
        `unconfirmed`, with signup requests, the last made before `requested_before`. Return how many
        went: fewer than `limit` when no more are left. The caller gives each call a transaction of its
        own, so a purge of thousands never holds the write lock for long."""
        stale = tuple(row[0] for row in self.db.execute(
            "SELECT c.address FROM consents c GROUP BY c.address HAVING MAX(c.requested_at) < ? AND NOT EXISTS"
            " (SELECT 1 FROM subscriptions p WHERE p.address = c.address AND p.status != 'unconfirmed') LIMIT ?",
            (requested_before, limit)))
        if stale:
            self.db.execute(f"DELETE FROM subscribers WHERE address IN ({_marks(stale)})", stale)
            self._erase(stale)
        return len(stale)

    def forget_requests(self, made_before: float) -> int:
        """Drop the client counts of the signup POSTs made before `made_before`; return how many."""
        return self.db.execute("DELETE FROM signup_requests WHERE at < ?", (made_before,)).rowcount


def mark_suppressed(db: Connection, address: str, source: str, reason: str | None, now: float) -> None:
    """Mark the lists of a suppressed address (lower-cased) that still mail it: `bounced` for a bounce,
    `complained` for a complaint, else `unsubscribed`; each change goes into the history, with the
    suppression's reason (a bounce's reply) as its detail."""
    status = _SUPPRESSED_STATUS.get(source, "unsubscribed")
    lists = [row[0] for row in db.execute(
        "SELECT list FROM subscriptions WHERE address = ? AND status IN ('active', 'unconfirmed')", (address,))]
    for list_name in lists:
        db.execute("UPDATE subscriptions SET status = ?, updated_at = ? WHERE address = ? AND list = ?",
                   (status, now, address, list_name))
        db.execute("INSERT INTO subscription_history VALUES (?, ?, ?, ?, ?, ?)",
                   (address, list_name, status, source, now, reason))


def _marks(values: tuple[str, ...]) -> str:
    return ",".join("?" * len(values)) or "NULL"


def _json(attributes: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(attributes.items())), ensure_ascii=False, separators=(",", ":"))
