"""The exception tree of the distributor.

    DistributorError
    ├── InputError               bad input: one line on stderr, exit status 2, nothing sent
    │   └── SettingsError        a settings key that is unknown, mistyped or missing
    ├── StorageError             the ledger or an output file cannot be used (corrupt, locked, read-only,
    │                            disk full): one line on stderr, exit status 3, nothing half-written
    └── DeliveryError            raised by a channel for one delivery attempt
        ├── TransientDeliveryError   may succeed if tried again (the core retry policy decides)
        │   └── SenderThrottledError the relay limits the sender, not this recipient (450 4.7.1 at
        │                            MAIL FROM): slow the channel down, retry without blaming the row
        ├── PermanentDeliveryError   will fail again: recorded, never retried
        │   └── SenderRefusedError   the receiver refused the sender, not the recipient (5.7.x: policy,
        │                            DMARC, authentication): never suppresses; several in a row stop
        │                            the channel
        ├── UncertainDeliveryError   handed over, outcome unknown: not retried automatically
        └── ChannelStoppedError      the channel cannot go on (relay refused the session, quota):
                                     stop it, leave the remaining deliveries untouched

Adapters translate library errors into these at their edge, so the core never imports
aiosmtplib or wechatpy.
"""
from __future__ import annotations

# Exit statuses of every command: done; some deliveries failed or are uncertain; bad input;
# stopped early (a later run resumes).
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 3


class DistributorError(Exception):
    """Base of every error the distributor raises on purpose."""


class InputError(DistributorError):
    """Bad input from the user: a file, a front matter field, a command-line value."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = path or ""
        if path and line:
            where = f"{path}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class SettingsError(InputError):
    """A settings file that cannot be used; the message names the key path."""


class StorageError(DistributorError):
    """The ledger or a file we write cannot be used: corrupt, locked by another process, read-only,
    or the disk is full. Nothing was half-written; the message says what and where."""

    def __init__(self, message: str, *, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class DeliveryError(DistributorError):
    """One delivery attempt failed; `reply` is what the other side said, when it said anything."""

    def __init__(self, message: str, *, reply: str | None = None):
        self.reply = reply
        super().__init__(message)


class TransientDeliveryError(DeliveryError):
    """Worth another attempt; `retry_after_seconds` is the least wait the other side asked for,
    and `reconnect` asks the core to reopen the channel's connection before the next attempt."""

    def __init__(self, message: str, *, reply: str | None = None,
                 retry_after_seconds: float | None = None, reconnect: bool = False):
        super().__init__(message, reply=reply)
        self.retry_after_seconds = retry_after_seconds
        self.reconnect = reconnect


class SenderThrottledError(TransientDeliveryError):
    """The relay refuses the sender for now (a rate or reputation limit, e.g. 450 4.7.1 at MAIL
    FROM): the whole channel slows down and the same recipient is tried again; the refusal does
    not count against that recipient's attempts, and nobody is marked failed for it."""


class PermanentDeliveryError(DeliveryError):
    """Will fail again whatever we do; `suppress` marks an address that must not be mailed again
    (a hard bounce)."""

    def __init__(self, message: str, *, reply: str | None = None, suppress: bool = False):
        super().__init__(message, reply=reply)
        self.suppress = suppress


class SenderRefusedError(PermanentDeliveryError):
    """The receiver refused the mail for who sent it (5.7.1 policy, 5.7.26 DMARC, 5.7.515 authentication):
    the recipient is never suppressed for it, and `SendLimits.sender_refusals_to_stop` of them in a row
    stop the channel, since every further message would be refused the same way. `meaning` says in a
    line what such a refusal usually means."""

    def __init__(self, message: str, *, reply: str | None = None, meaning: str = ""):
        super().__init__(message, reply=reply, suppress=False)
        self.meaning = meaning


class UncertainDeliveryError(DeliveryError):
    """The message was handed over but no answer came back: it may have been delivered."""


class ChannelStoppedError(DeliveryError):
    """The whole channel must stop now (session refused, relay unreachable, quota reached);
    deliveries not yet made stay as they are, so a later run resumes them."""
