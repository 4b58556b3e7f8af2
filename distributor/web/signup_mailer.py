"""The outbox of the signup form: a thread that sends the queued confirmation mails through the relay.

`distributor serve` starts it next to the web server. It wakes when a POST queued a mail (`wake`,
set by web.signup_pages), when a deferred mail comes due, and every WAKE_SECONDS, so mails queued
while serve was down, or left pending by a relay that was away, go out too. Each wake it opens one
relay session (the SMTP pool with one connection, as the operator's report does), makes one attempt
per due mail and records it in a transaction of its own right after the hand-over, before the next
mail goes: a crash resends at most the mail in flight. A permanent refusal or an uncertain
hand-over is `failed` (a confirmation mail is never sent twice on purpose; the reader can ask
again), and a refusal that says the mailbox does not exist (5.1.x at RCPT, as for an issue) also
suppresses the address as a `bounce`; a mail sent or failed loses its message, which holds a live
link. A transient one stays `pending` and waits as the one retry policy says (`retry.*`, as for
every channel), until `retry.attempts` attempts are used. A relay that limits the sender ends the
session without counting an attempt, and the outbox keeps quiet for the policy's backoff. It has a
ledger connection of its own, so sending never holds the web pages' lock, and a lease in the
ledger, so that of several `serve` processes on one ledger one sends at a time. `stop()` ends it
after the attempt in flight.

At its start and then at most once every PURGE_SECONDS it erases the readers a signup made who never
confirmed within `signup.confirm_hours` (SubscriberStore.purge_unconfirmed), and the clients' counts
of POSTs: strangers' POSTs leave no lasting rows. Neither goes before a day has passed, whatever
`signup.confirm_hours` says: the per-address and per-client limits count the mails and POSTs of the
last 24 hours.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import threading
import time

from distributor.audience.signup import DAY_SECONDS
from distributor.channels.mail.relay import smtp_config
from distributor.channels.mail.smtp import SmtpConfig, SmtpPool, to_wire
from distributor.delivery.retry import RetryPolicy
from distributor.errors import (
    ChannelStoppedError,
    DeliveryError,
    PermanentDeliveryError,
    SenderThrottledError,
    TransientDeliveryError,
)
from distributor.ledger.store import Ledger, open_ledger
from distributor.ledger.subscribers import MailToSend, SubscriberStore
from distributor.settings import Settings

WAKE_SECONDS = 5.0          # how often the outbox looks for mails without being woken
PAGE = 200                  # pending mails read per ledger query
PURGE_SECONDS = 3600.0      # how often unconfirmed signups past their link's life are erased
# One outbox sends at a time, however many `serve` processes share the ledger: each would send every
# pending mail otherwise. The lease is renewed while sending and lapses this long after its holder died.
LEASE, LEASE_SECONDS = "signup-outbox", 60.0
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Attempt:
    """How one mail's attempt went: the status to record and the relay's reply or the error."""

    mail_id: int
    status: str             # sent, failed or pending
    detail: str | None
    bounce: str | None = None   # the reply of a refusal that says the mailbox does not exist


class SignupMailer:
    """Send the outbox of the ledger of `settings` from a thread of its own, until `stop()`."""

    def __init__(self, settings: Settings, wake: threading.Event, *, wake_seconds: float = WAKE_SECONDS):
        self.settings = settings
        self.wake = wake
        self.wake_seconds = wake_seconds
        self.policy = RetryPolicy.from_settings(settings.retry)
        self._config: SmtpConfig = dataclasses.replace(smtp_config(settings), pool_size=1)
        self._stopping = threading.Event()
        self._not_before: dict[int, float] = {}   # mail id -> when a deferred mail may be tried again
        self._throttles = 0                       # sender refusals in a row, for the policy's backoff
        self._quiet_until = 0.0                   # no session before this, after a sender refusal
        self._holder = f"outbox {socket.gethostname()} pid {os.getpid()} {id(self):x}"
        self._renewed = 0.0
        self._purged: float | None = None          # when the last purge ran (monotonic)
        self._thread = threading.Thread(target=self._run, name="signup-mailer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to end after the attempt in flight, and wait for it (`timeout` seconds at most)."""
        self._stopping.set()
        self.wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            ledger = open_ledger(self.settings.ledger)
        except Exception:
            _log.exception("the outbox cannot open the ledger; confirmation mails are not sent")
            return
        try:
            while not self._stopping.is_set():
                self.wake.clear()
                try:
                    self._purge(ledger)
                    asyncio.run(self._drain(ledger))
                except Exception:          # a ledger or relay failure must not end the outbox for good
                    _log.exception("the outbox failed; it tries again in %s seconds", self.wake_seconds)
                self.wake.wait(self._next_wait())
        finally:
            ledger.close()

    def _purge(self, ledger: Ledger) -> None:
        """Erase the unconfirmed signups older than a confirmation link's life, at most once every
        PURGE_SECONDS."""
        if self._purged is not None and time.monotonic() - self._purged < PURGE_SECONDS:
            return
        self._purged = time.monotonic()
        with ledger.transaction():
            purged = SubscriberStore(ledger).purge_unconfirmed(
                ledger.clock() - max(self.settings.signup.confirm_hours * 3600, DAY_SECONDS))
        if purged:
            _log.info("erased %d unconfirmed signups older than signup.confirm_hours", purged)

    def _next_wait(self) -> float:
        """Seconds until the next wake: WAKE_SECONDS, or sooner when a deferred mail or the end of a
        quiet spell comes due before."""
        now = time.monotonic()
        due = [moment - now for moment in (*self._not_before.values(), self._quiet_until) if moment > now]
        return min([self.wake_seconds, *due])

    async def _drain(self, ledger: Ledger) -> None:
        """Attempt every due pending mail once, a page at a time, over one relay session opened when the
        first is due, recording each attempt as soon as it is made."""
        if time.monotonic() < self._quiet_until:
            return                     # the relay limits the sender; the policy's backoff is not over
        if ledger.take_lease(LEASE, self._holder, LEASE_SECONDS).holder != self._holder:
            return                     # another outbox on this ledger is sending; look again next wake
        self._renewed = time.monotonic()
        store, pool, after = SubscriberStore(ledger), None, 0
        try:
            while not self._stopping.is_set():
                page = store.mails_to_send(PAGE, after=after)     # each pending mail once per wake
                if not page:
                    return
                after, now = page[-1].id, time.monotonic()
                for mail in page:
                    if self._not_before.get(mail.id, 0.0) > now:
                        continue
                    if pool is None:
                        pool = SmtpPool(self._config)
                        try:
                            await pool.open()
                        except DeliveryError as exc:
                            _log.warning("the relay takes no confirmation mail now (%s); the outbox tries again",
                                         exc)
                            return
                    attempt = await self._attempt(pool, store, mail)
                    if attempt is None:
                        return
                    with ledger.transaction():
                        store.mail_done(attempt.mail_id, attempt.status,
                                        error=attempt.detail if attempt.status != "sent" else None)
                        if attempt.bounce is not None:
                            ledger.suppress(mail.address, reason=attempt.bounce, source="bounce")
        finally:
            if pool is not None:
                await pool.close()
            ledger.release_lease(LEASE, self._holder)

    async def _attempt(self, pool: SmtpPool, store: SubscriberStore, mail: MailToSend) -> Attempt | None:
        """Make one attempt at `mail`; None when this session ends before it (stopping, the lease lost,
        the relay stopped the session or limits the sender): the mail is left for a later wake, with no
        attempt counted."""
        if self._stopping.is_set() or not self._still_holding(store.ledger):
            return None
        reader = store.subscriber(mail.address)
        recipient = reader.address if reader else mail.address
        try:
            reply = await pool.send(mail.envelope_from, recipient, to_wire(mail.message))
        except ChannelStoppedError as exc:
            _log.warning("the relay stopped the outbox: %s", exc)
            return None
        except SenderThrottledError as exc:
            self._throttles += 1
            wait = self.policy.delay_seconds(self._throttles, exc.retry_after_seconds)
            self._quiet_until = time.monotonic() + wait
            _log.warning("the relay limits the sender (%s); the outbox waits %.1f seconds", exc, wait)
            return None
        except TransientDeliveryError as exc:
            return self._deferred(mail, str(exc), exc.retry_after_seconds)
        except PermanentDeliveryError as exc:
            self._not_before.pop(mail.id, None)
            return Attempt(mail.id, "failed", str(exc), (exc.reply or str(exc)) if exc.suppress else None)
        except DeliveryError as exc:        # uncertain
            self._not_before.pop(mail.id, None)
            return Attempt(mail.id, "failed", str(exc))
        self._throttles = 0
        self._not_before.pop(mail.id, None)
        return Attempt(mail.id, "sent", reply)

    def _still_holding(self, ledger: Ledger) -> bool:
        """Renew the lease when a third of it has passed; False when it was lost (this outbox stalled
        so long that another took over)."""
        if time.monotonic() - self._renewed < LEASE_SECONDS / 3:
            return True
        self._renewed = time.monotonic()
        if ledger.renew_lease(LEASE, self._holder, LEASE_SECONDS):
            return True
        _log.warning("the outbox lost its lease on the ledger; another outbox goes on")
        return False

    def _deferred(self, mail: MailToSend, error: str, retry_after_seconds: float | None) -> Attempt:
        """A transient refusal: `failed` once this was the last of `retry.attempts`, else `pending`
        until the policy's backoff for this many attempts has passed."""
        made = mail.attempts + 1
        if made >= self.policy.attempts:
            self._not_before.pop(mail.id, None)
            return Attempt(mail.id, "failed", f"{error} (after {made} attempts, retry.attempts)")
        self._not_before[mail.id] = time.monotonic() + self.policy.delay_seconds(made, retry_after_seconds)
        return Attempt(mail.id, "pending", error)
