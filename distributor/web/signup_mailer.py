"""The outbox of the signup form: a thread that sends the queued confirmation mails through the relay.

`distributor serve` starts it next to the web server. It wakes when a POST queued a mail (`wake`,
set by web.signup_pages), when a deferred mail comes due, and every WAKE_SECONDS, so mails queued
while serve was down, or left pending by a relay that was away, go out too. Each wake it opens one
relay session (the SMTP pool with one connection, as the operator's report does) and makes one
attempt per due mail, as the row run does for an issue: it claims the mail (`sending`, its attempt
counted) in a committed transaction before the hand-over, and records the outcome in another right
after it, before the next mail goes. A mail found `sending` by a later wake or another outbox was
being handed over when its outbox died or could not record the outcome (the ledger locked, the disk
full): whether the relay took it is unknown, and it is `failed`, never sent again. The claim reads
the mail again: one whose address was suppressed since it was queued by a bounce, a complaint or the
publisher's command, or whose reader was erased, is `failed` unsent (or gone with its reader). A
permanent refusal or an uncertain hand-over is `failed` too (a confirmation mail is never sent twice
on purpose; the reader can ask again), and a refusal that says the mailbox does not exist (5.1.x at
RCPT, as for an issue) also suppresses the address as a `bounce`; a mail sent or failed loses its
message, which holds a live link. A transient one stays `pending` and waits as the one retry policy
says (`retry.*`, as for every channel), until `retry.attempts` attempts are used. A relay that
limits the sender ends the session without counting an attempt, and the outbox keeps quiet for the
policy's backoff. It has a ledger connection of its own, so sending never holds the web pages' lock,
and a lease in the ledger, so that of several `serve` processes on one ledger one sends at a time:
renewed with each claim, for long enough that one hand-over (several SMTP commands of up to
`smtp.timeout_seconds` each) ends before it lapses. `stop()` ends it after the attempt in flight.

At its start and then at most once every PURGE_SECONDS it erases the readers a signup made who never
confirmed within `signup.confirm_hours` (SubscriberStore.purge_unconfirmed, PURGE_BATCH readers per
transaction, so the pages never wait long for the write lock), and the clients' counts of POSTs:
strangers' POSTs leave no lasting rows. Neither goes before a day has passed, whatever
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
from distributor.channels.mail.dkim import signer_for
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
from distributor.ledger.subscribers import PURGE_BATCH, MailClaim, MailToSend, SubscriberStore
from distributor.settings import Settings

WAKE_SECONDS = 5.0          # how often the outbox looks for mails without being woken
PAGE = 200                  # pending mails read per ledger query (each is read again when claimed)
PURGE_SECONDS = 3600.0      # how often unconfirmed signups past their link's life are erased
# One outbox sends at a time, however many `serve` processes share the ledger: each would send every
# pending mail otherwise. The lease is renewed with each claim and lapses this long after its holder
# died: LEASE_SECONDS, or a hand-over's HAND_OVER_COMMANDS SMTP commands at smtp.timeout_seconds each
# (connect, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, the message) when that is longer.
LEASE, LEASE_SECONDS, HAND_OVER_COMMANDS = "signup-outbox", 60.0, 8
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Attempt:
    """How one mail's attempt went: the status to record and the relay's reply or the error."""

    mail_id: int
    status: str             # sent, failed or pending
    detail: str | None
    bounce: str | None = None   # the reply of a refusal that says the mailbox does not exist
    handed_over: bool = True    # False: the relay stopped the session or limits the sender, before the
                                # hand-over; no attempt is counted and the session ends


class SignupMailer:
    """Send the outbox of the ledger of `settings` from a thread of its own, until `stop()`."""

    def __init__(self, settings: Settings, wake: threading.Event, *, wake_seconds: float = WAKE_SECONDS):
        self.settings = settings
        self.wake = wake
        self.wake_seconds = wake_seconds
        self.policy = RetryPolicy.from_settings(settings.retry)
        self._config: SmtpConfig = dataclasses.replace(smtp_config(settings), pool_size=1)
        self._signer = signer_for(settings.smtp.dkim)     # a bad key stops `serve` here, before a request
        self._stopping = threading.Event()
        self._not_before: dict[int, float] = {}   # mail id -> when a deferred mail may be tried again
        self._throttles = 0                       # sender refusals in a row, for the policy's backoff
        self._quiet_until = 0.0                   # no session before this, after a sender refusal
        self._holder = f"outbox {socket.gethostname()} pid {os.getpid()} {id(self):x}"
        self._lease_seconds = max(LEASE_SECONDS, HAND_OVER_COMMANDS * settings.smtp.timeout_seconds)
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
        store, purged = SubscriberStore(ledger), 0
        before = ledger.clock() - max(self.settings.signup.confirm_hours * 3600, DAY_SECONDS)
        while not self._stopping.is_set():
            with ledger.transaction():
                batch = store.purge_unconfirmed(before, limit=PURGE_BATCH)
            purged += batch
            if batch < PURGE_BATCH:       # each full batch erased its readers' requests: this ends
                break
        with ledger.transaction():
            store.forget_requests(before)
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
        if ledger.take_lease(LEASE, self._holder, self._lease_seconds).holder != self._holder:
            return                     # another outbox on this ledger is sending; look again next wake
        store, pool, after = SubscriberStore(ledger), None, 0
        try:
            with ledger.transaction():
                uncertain = store.fail_uncertain_mails()
            if uncertain:
                _log.warning("%d confirmation mails were being handed over when an outbox stopped; they are"
                             " failed, not sent again", uncertain)
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
                    claimed = self._claim(store, mail.id)
                    if claimed is None:
                        return
                    if claimed.mail is None:
                        if claimed.withheld:
                            _log.info("a confirmation mail was %s", claimed.withheld)
                        continue
                    attempt = await self._attempt(pool, store, claimed.mail)
                    with ledger.transaction():
                        store.mail_done(attempt.mail_id, attempt.status, uncount=not attempt.handed_over,
                                        error=attempt.detail if attempt.status != "sent" else None)
                        if attempt.bounce is not None:
                            ledger.suppress(mail.address, reason=attempt.bounce, source="bounce")
                    if not attempt.handed_over:
                        return
        finally:
            if pool is not None:
                await pool.close()
            ledger.release_lease(LEASE, self._holder)

    def _wire(self, message: bytes) -> bytes:
        """The queued message as SMTP sends it, DKIM-signed (when `smtp.dkim` is set) at the hand-over."""
        if self._signer is not None:
            message = self._signer.sign_message(message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        return to_wire(message)

    def _claim(self, store: SubscriberStore, mail_id: int) -> MailClaim | None:
        """Renew the lease and claim the mail, in one committed transaction; None when this session
        ends before it: stopping, or the lease lost (this outbox stalled so long that another took over)."""
        if self._stopping.is_set():
            return None
        with store.ledger.transaction():
            if not store.ledger.renew_lease(LEASE, self._holder, self._lease_seconds):
                _log.warning("the outbox lost its lease on the ledger; another outbox goes on")
                return None
            return store.claim_mail(mail_id)

    async def _attempt(self, pool: SmtpPool, store: SubscriberStore, mail: MailToSend) -> Attempt:
        """Make one attempt at the claimed `mail` (its attempts count this one)."""
        reader = store.subscriber(mail.address)
        recipient = reader.address if reader else mail.address
        try:
            reply = await pool.send(mail.envelope_from, recipient, self._wire(mail.message))
        except ChannelStoppedError as exc:
            _log.warning("the relay stopped the outbox: %s", exc)
            return Attempt(mail.id, "pending", str(exc), handed_over=False)
        except SenderThrottledError as exc:
            self._throttles += 1
            wait = self.policy.delay_seconds(self._throttles, exc.retry_after_seconds)
            self._quiet_until = time.monotonic() + wait
            _log.warning("the relay limits the sender (%s); the outbox waits %.1f seconds", exc, wait)
            return Attempt(mail.id, "pending", str(exc), handed_over=False)
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

    def _deferred(self, mail: MailToSend, error: str, retry_after_seconds: float | None) -> Attempt:
        """A transient refusal: `failed` once this was the last of `retry.attempts`, else `pending`
        until the policy's backoff for this many attempts has passed."""
        made = mail.attempts
        if made >= self.policy.attempts:
            self._not_before.pop(mail.id, None)
            return Attempt(mail.id, "failed", f"{error} (after {made} attempts, retry.attempts)")
        self._not_before[mail.id] = time.monotonic() + self.policy.delay_seconds(made, retry_after_seconds)
        return Attempt(mail.id, "pending", error)
