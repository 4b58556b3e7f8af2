"""Deliver prepared messages to an SMTP relay over a pool of persistent sessions.

aiosmtplib opens each session: TCP, the greeting, EHLO, STARTTLS or implicit TLS, AUTH. The mail
transactions then run on the session's asyncio transport, which `_Session` takes over through the
public `transport.set_protocol()`: aiosmtplib sends a DATA body only through `SMTP.data()`, which
line-normalises and dot-stuffs it again on every call and writes it together with the final '.'.
Owning the transport lets a body prepared once by `to_wire` go out as it is, and lets us tell a
connection lost before the final '.' (the relay cannot have the message: transient) from one lost
after it (it may have: uncertain). It also lets a transaction use what the relay offers, which
aiosmtplib (one reply read per command) does not: with PIPELINING (RFC 2920) the envelope and DATA
go in one write, two round trips a message instead of four; with CHUNKING (RFC 3030) as well, the
message goes with them as one `BDAT <size> LAST`, one round trip. On a remote relay the round trips,
not the CPU, set the rate.

Every failure leaves this module as one of the errors in `distributor.errors`, so the core never
sees an aiosmtplib exception.
"""
from __future__ import annotations

import asyncio
import collections
import ipaddress
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from aiosmtplib import SMTP, SMTPResponse
from aiosmtplib.errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPReadTimeoutError,
    SMTPResponseException,
)

from distributor.channels.mail.refusals import meaning, sender_policy_status
from distributor.errors import (
    ChannelStoppedError,
    DeliveryError,
    PermanentDeliveryError,
    SenderRefusedError,
    SenderThrottledError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from distributor.validate.addresses import ehlo_name_problem

_T = TypeVar("_T")
SECURITY_MODES = ("plain", "starttls", "tls")
# A relay greets within a second or two (Postfix's postscreen waits 6 s at most); a port that speaks
# TLS first never greets a client that waits for a greeting, so we need not wait a whole command timeout.
GREETING_TIMEOUT_SECONDS = 10.0
_QUIT_TIMEOUT_SECONDS = 2.0
_MAILBOX_UNKNOWN = re.compile(r"^5\.1\.\d{1,3}\b")
_SERVICE_CLOSING = 421
# What an envelope address may hold on the wire: printable ASCII without spaces or angle brackets.
_ENVELOPE_ADDRESS = re.compile(rb"[!-;=?-~]{1,320}")
_NAME_MISMATCH = (62, 63, 64)   # OpenSSL's X509_V_ERR_{HOSTNAME,EMAIL,IP_ADDRESS}_MISMATCH
_MAX_REPLY_LINE_BYTES = 4096
_MAX_REPLY_LINES = 100


@dataclass(frozen=True)
class SmtpConfig:
    """How to reach and log in to one SMTP relay; `password` never appears in a repr or an error.

    `local_hostname` is the EHLO name (None: the machine's FQDN, as aiosmtplib finds it); `cafile` is a
    PEM file of certificates trusted in addition to the system's."""

    host: str
    port: int
    security: str
    username: str | None
    password: str | None = field(repr=False)
    timeout_seconds: float
    pool_size: int
    local_hostname: str | None = None
    tls_verify: bool = True
    cafile: str | None = None
    greeting_timeout_seconds: float = GREETING_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {', '.join(SECURITY_MODES)}, not {self.security!r}")
        if self.security == "plain" and not _is_loopback(self.host):
            raise ValueError(f"security 'plain' is allowed only for a loopback host, not {self.host!r}")
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if not self.timeout_seconds > 0 or not self.greeting_timeout_seconds > 0:
            raise ValueError("timeout_seconds must be positive")
        if self.local_hostname is not None and (problem := ehlo_name_problem(self.local_hostname)):
            raise ValueError(f"ehlo_name: {problem}")

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def to_wire(message: bytes) -> bytes:
    """Normalise line endings to CRLF and dot-stuff once per message body, so that per-recipient sends do no
    per-send pass over the body; the result ends with CRLF (without the terminating '.')."""
    text = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not text.endswith(b"\n"):
        text += b"\n"
    if text.startswith(b"."):
        text = b"." + text
    return text.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")


class _ProtocolError(ConnectionError):
    """The relay sent something that is not an SMTP reply; the session cannot be trusted any more."""


class _Session(asyncio.Protocol):
    """The transaction phase of one relay session, on the transport taken over from aiosmtplib.

    One task uses a session at a time (the pool hands each connection to one sender), so commands never
    interleave. The write buffer's high-water mark is 0: `drain()` returns only once everything written
    was handed to the socket, so a message counts as complete only once all of it, its final '.' (or
    the last byte of its BDAT chunk) included, has left the process. Over TLS it is
    handed to the TLS layer, which may still hold the body's last few dozen KB: a connection lost then is
    reported uncertain, never transient, so the error stays on the side that sends no duplicate.
    """

    def __init__(self, transport: asyncio.Transport, timeout: float, *, pipelining: bool = False,
                 chunking: bool = False):
        self._transport = transport
        # What the relay's EHLO offered: PIPELINING (RFC 2920) lets a transaction's commands go in one
        # write; CHUNKING (BDAT, RFC 3030) with it lets the message follow in that same write.
        self.pipelining = pipelining
        self.chunking = chunking and pipelining
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._partial = bytearray()
        self._lines: list[bytes] = []
        self._replies: collections.deque[SMTPResponse] = collections.deque()
        self._waiter: asyncio.Future[SMTPResponse] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused = False
        self._lost: Exception | None = None

    @classmethod
    def take_over(cls, client: SMTP, timeout: float) -> _Session:
        """Move a connected, secured and logged-in aiosmtplib client's transport to a new session;
        the client is not used again."""
        transport = client.transport
        if not client.is_connected or not isinstance(transport, asyncio.Transport) or transport.is_closing():
            raise ConnectionResetError("the relay closed the connection after the login")
        session = cls(transport, timeout, pipelining=client.supports_extension("pipelining"),
                      chunking=client.supports_extension("chunking"))
        transport.set_protocol(session)
        transport.set_write_buffer_limits(high=0)
        return session

    # asyncio.Protocol callbacks.

    def data_received(self, data: bytes) -> None:
        self._partial += data
        while self._lost is None:
            end = self._partial.find(b"\n")
            if end < 0:
                if len(self._partial) > _MAX_REPLY_LINE_BYTES:
                    self._fail(_ProtocolError("the relay sent an overlong reply line"))
                return
            line = bytes(self._partial[:end]).rstrip(b"\r")
            del self._partial[:end + 1]
            self._lines.append(line)
            if line[3:4] == b"-":
                if len(self._lines) >= _MAX_REPLY_LINES:
                    self._fail(_ProtocolError("the relay sent an overlong reply"))
                continue
            self._deliver(self._parse(self._lines))
            self._lines = []

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc if isinstance(exc, ConnectionError) else ConnectionResetError(
            f"the relay closed the connection{f': {exc}' if exc else ''}"))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # Used by the transaction.

    @property
    def is_open(self) -> bool:
        return self._lost is None and not self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.is_open:
            raise self._lost or ConnectionResetError("the connection is closed")
        self._transport.write(data)

    async def command(self, line: bytes) -> SMTPResponse:
        """Write one command line (ending in CRLF) and return the relay's reply."""
        self.write(line)
        return await self.reply()

    async def reply(self) -> SMTPResponse:
        """Wait for the relay's next reply; raise ConnectionError when the connection is gone and
        TimeoutError after the command timeout."""
        if self._replies:
            return self._replies.popleft()
        if self._lost is not None:
            raise self._lost
        self._waiter = self._loop.create_future()
        return await self._bounded(self._waiter, "waiting for the relay's reply")

    async def drain(self) -> None:
        """Wait until everything written has been handed to the socket."""
        if not self._paused:
            return
        if self._lost is not None:
            raise self._lost
        self._drained = self._loop.create_future()
        await self._bounded(self._drained, "writing the message body")

    async def quit(self) -> None:
        """Say QUIT and close; never raises."""
        try:
            self.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reply(), _QUIT_TIMEOUT_SECONDS)
        except (ConnectionError, TimeoutError, asyncio.TimeoutError):
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the connection at once (nothing buffered is sent)."""
        self._transport.abort()

    # Internals.

    async def _bounded(self, future: asyncio.Future[_T], doing: str) -> _T:
        timer = self._loop.call_later(self._timeout, self._expire, future, doing)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, future: asyncio.Future[_T], doing: str) -> None:
        if not future.done():
            future.set_exception(TimeoutError(f"timed out after {self._timeout:g} s {doing}"))

    @staticmethod
    def _parse(lines: list[bytes]) -> SMTPResponse | Exception:
        code = lines[0][:3]
        if not code.isdigit() or lines[0][3:4] not in (b"", b" ", b"-"):
            return _ProtocolError(f"the relay sent no SMTP reply: {lines[0][:60]!r}")
        text = b"\n".join(line[4:] for line in lines).decode("utf-8", errors="replace")
        return SMTPResponse(int(code), text)

    def _deliver(self, reply: SMTPResponse | Exception) -> None:
        if isinstance(reply, Exception):
            self._fail(reply)
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(reply)
        else:
            self._replies.append(reply)   # a reply no command waits for yet (e.g. a 421 before closing)

    def _fail(self, error: Exception) -> None:
        if self._lost is None:
            self._lost = error
            self._transport.abort()
        for future in (self._waiter, self._drained):
            if future is not None and not future.done():
                future.set_exception(error)


def _reply(code: int, message: str) -> str:
    return f"{code} {message}"


def _tls_failure(config: SmtpConfig, error: ssl.SSLError) -> ChannelStoppedError:
    """Say why TLS failed in OpenSSL's words ("self-signed certificate", "IP address mismatch"), and what
    the likely fix is when the port speaks another security mode."""
    reason = error.verify_message if isinstance(error, ssl.SSLCertVerificationError) else None
    message = f"TLS with relay {config.where} failed: {error.__class__.__name__}: {reason or _reason(error)}"
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_code not in _NAME_MISMATCH:
        message += " (to trust a private CA, name its certificate in smtp.ca_file)"
    elif config.security == "tls" and _looks_like_plain_text(error):
        message += ": the server did not answer in TLS: is this a STARTTLS port? try smtp.security: starttls"
    return ChannelStoppedError(message)


# How OpenSSL versions name a handshake whose first "record" was plain text (such as a "220 " greeting):
# 1.1 and 3.0 say WRONG_VERSION_NUMBER, 3.2 and later may say RECORD_LAYER_FAILURE or PACKET_LENGTH_TOO_LONG.
_PLAIN_TEXT_REASONS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
                       "UNKNOWN_PROTOCOL", "HTTP_REQUEST", "WRONG_SSL_VERSION")


def _reason(error: ssl.SSLError) -> str | None:
    return getattr(error, "reason", None)     # set by OpenSSL's errors; absent from one made in Python


def _looks_like_plain_text(error: ssl.SSLError) -> bool:
    """Whether the TLS handshake failed because the server's first bytes were no TLS record, in OpenSSL's
    reason code or, when a build reports none, in the words of its message."""
    words = f"{_reason(error) or ''} {error}".upper().replace(" ", "_")
    return any(reason in words for reason in _PLAIN_TEXT_REASONS)


class _TurnedAwayError(TransientDeliveryError):
    """The relay refused a new session for now: 421 while it opened, or another 4xx greeting. A relay
    limiting connections per client answers so (Postfix: "421 4.7.0 ... too many connections")."""


def _stop_for_session_failure(config: SmtpConfig, exc: BaseException) -> DeliveryError:
    """Translate a failure to open a session into a delivery error (421 is worth a later reconnect)."""
    where = config.where
    if isinstance(exc, SMTPResponseException) and exc.code == _SERVICE_CLOSING:
        return _TurnedAwayError(f"relay {where} is closing the session", reply=_reply(exc.code, exc.message),
                                reconnect=True)
    if isinstance(exc, SMTPConnectResponseError) and 400 <= exc.code < 500:
        return _TurnedAwayError(f"relay {where} refused the session for now", reply=_reply(exc.code, exc.message),
                                reconnect=True)
    if isinstance(exc, SMTPAuthenticationError):
        return ChannelStoppedError(f"relay {where} refused authentication for user {config.username!r}",
                                   reply=_reply(exc.code, exc.message))
    if isinstance(exc, SMTPConnectResponseError):
        return ChannelStoppedError(f"relay {where} refused the session", reply=_reply(exc.code, exc.message))
    if isinstance(exc, SMTPResponseException):
        return ChannelStoppedError(f"relay {where} refused the session setup", reply=_reply(exc.code, exc.message))
    tls_error = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
    if isinstance(tls_error, ssl.SSLError):
        return _tls_failure(config, tls_error)
    if isinstance(exc, SMTPConnectTimeoutError) and isinstance(exc.__cause__, SMTPReadTimeoutError):
        hint = ": is this an implicit-TLS port? try smtp.security: tls" if config.security != "tls" else ""
        return ChannelStoppedError(f"relay {where} did not answer the greeting within "
                                   f"{_greeting_timeout(config):g} s{hint}")
    if isinstance(exc, SMTPConnectError):
        return ChannelStoppedError(f"cannot reach relay {where}: {exc}")
    return ChannelStoppedError(f"session with relay {where} failed: {exc.__class__.__name__}: {exc}")


def _greeting_timeout(config: SmtpConfig) -> float:
    return min(config.greeting_timeout_seconds, config.timeout_seconds)


async def _connect(config: SmtpConfig) -> tuple[SMTP, SMTPResponse]:
    """Connect, EHLO, secure and log in with aiosmtplib; return the client and the server's greeting.
    aiosmtplib's login tries each mechanism both sides offer at most once."""
    client = SMTP(
        hostname=config.host, port=config.port, username=config.username, password=config.password,
        local_hostname=config.local_hostname, timeout=config.timeout_seconds,
        use_tls=config.security == "tls", start_tls=config.security == "starttls",
        validate_certs=config.tls_verify, cert_bundle=config.cafile,
    )
    try:
        greeting = await client.connect(timeout=_greeting_timeout(config))
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
    except (SMTPException, OSError) as exc:
        client.close()
        raise _stop_for_session_failure(config, exc) from exc
    return client, greeting


async def _open_session(config: SmtpConfig) -> _Session:
    client, _ = await _connect(config)
    try:
        return _Session.take_over(client, config.timeout_seconds)
    except ConnectionError as exc:
        client.close()
        raise TransientDeliveryError(f"relay {config.where} closed the session: {exc}", reconnect=True) from exc


def _refusal(stage: str, recipient: str, code: int, message: str) -> DeliveryError:
    """Classify a refusal at MAIL, RCPT, DATA or end of DATA."""
    reply = _reply(code, message)
    what = f"{stage} for {recipient} refused"
    if code == _SERVICE_CLOSING:
        return TransientDeliveryError(f"{what}: relay closing the session", reply=reply, reconnect=True)
    policy = sender_policy_status(message)     # 5.7.x, 4.7.x: about the sender, never the recipient
    if 400 <= code < 500:
        if policy:
            return SenderThrottledError(f"{what}: the receiver limits the sender for now ({meaning(policy)})",
                                        reply=reply)
        return TransientDeliveryError(f"{what} for now", reply=reply)
    if 500 <= code < 600:
        if stage == "MAIL FROM":
            explained = f" ({meaning(policy)})" if policy else ""
            return ChannelStoppedError(f"{what}: relay refuses the sender{explained}", reply=reply)
        if policy:
            return SenderRefusedError(f"{what}: the receiver refuses the sender", reply=reply, meaning=meaning(policy))
        suppress = stage == "RCPT TO" and _MAILBOX_UNKNOWN.match(message) is not None
        return PermanentDeliveryError(what, reply=reply, suppress=suppress)
    return TransientDeliveryError(f"{what} with an unexpected reply", reply=reply, reconnect=True)


def _envelope_address(address: str) -> bytes:
    """Return an envelope address as it goes between the angle brackets; refuse anything that could end
    the command or add parameters to it (the readers refuse such addresses first)."""
    data = address.encode("ascii")     # UnicodeEncodeError, a ValueError: SMTPUTF8 is not used
    if not _ENVELOPE_ADDRESS.fullmatch(data):
        raise ValueError("an envelope address must be printable ASCII without spaces or angle brackets")
    return data


async def _reset_after(session: _Session, code: int, stage: str) -> None:
    """After a refusal: drop the session on 421, else reset the transaction (RSET) so the session goes on;
    a refused MAIL FROM opened no transaction."""
    if code == _SERVICE_CLOSING:
        session.abort()
    elif stage != "MAIL FROM":
        try:
            reset = await session.command(b"RSET\r\n")
            if reset.code != 250:
                session.abort()
        except (ConnectionError, TimeoutError):
            session.abort()


async def _expect(session: _Session, stage: str, recipient: str, line: bytes, codes: tuple[int, ...]) -> None:
    """Send one transaction command; on a refusal reset the transaction and raise the classified error."""
    reply = await session.command(line)
    if reply.code in codes:
        return
    await _reset_after(session, reply.code, stage)
    raise _refusal(stage, recipient, reply.code, reply.message)


def _mail_from_command(envelope_from: str) -> bytes:
    """Return the MAIL FROM command line for an envelope sender; ChannelStoppedError when it cannot be sent."""
    try:
        return b"MAIL FROM:<" + _envelope_address(envelope_from) + b">\r\n"
    except ValueError as exc:
        raise ChannelStoppedError(f"envelope sender {envelope_from!r} cannot be sent: {exc}") from exc


def _rcpt_command(recipient: str) -> bytes:
    try:
        return b"RCPT TO:<" + _envelope_address(recipient) + b">\r\n"
    except ValueError as exc:
        raise PermanentDeliveryError(f"recipient {recipient!r} cannot be sent: {exc}") from exc


# The replies each transaction command wants, in the order the commands go.
_ENVELOPE = (("MAIL FROM", (250,)), ("RCPT TO", (250, 251)))     # 251: user not local, will forward


async def _transact(session: _Session, mail: bytes, recipient: str, wire: bytes,
                    behind: Callable[[], bytes] = bytes) -> str:
    """Run one mail transaction on an open session and return the server's final reply; `mail` is the
    MAIL FROM command line (`_mail_from_command`). Where the relay offers them, PIPELINING sends the
    envelope and DATA in one write (two round trips a message), and CHUNKING the message too, as
    one `BDAT LAST` (one round trip); otherwise each command waits for its reply.

    Whatever the way, a connection lost before the whole message was written is transient (the relay
    cannot have it), and one lost after it, before the final reply, is uncertain, unless a reply
    already read refused the envelope."""
    rcpt = _rcpt_command(recipient)
    if session.chunking:
        return await _transact_chunked(session, mail + rcpt, recipient, wire, behind)
    try:
        if session.pipelining:
            session.write(mail + rcpt + b"DATA\r\n")
            await _pipelined_replies(session, recipient, (*_ENVELOPE, ("DATA", (354,))),
                                     _lost_before_complete(recipient))
        else:
            await _expect(session, "MAIL FROM", recipient, mail, (250,))
            await _expect(session, "RCPT TO", recipient, rcpt, (250, 251))
            await _expect(session, "DATA", recipient, b"DATA\r\n", (354,))
        # One write: the final '.' goes after the whole body, so a connection lost before the write
        # was handed over whole (drain) left the message incomplete, and one lost after it may not have.
        session.write(wire + b".\r\n")
        await session.drain()
    except (ConnectionError, TimeoutError) as exc:
        session.abort()
        raise _lost_before_complete(recipient)(exc) from exc
    return await _final_reply(session, recipient)


async def _pipelined_replies(session: _Session, recipient: str, stages: tuple[tuple[str, tuple[int, ...]], ...],
                             lost: Callable[[Exception], DeliveryError], *, reset: bool = True) -> SMTPResponse:
    """Read one reply per pipelined command, in order, and return the last. At a refusal the rest are
    read too (the relay answers every command of the group), the transaction is reset (unless not
    `reset`) and the first refusal raised, classified. A connection lost on the way raises the refusal
    already read, if any (the relay took no message then), else `lost(error)`."""
    refused: tuple[str, SMTPResponse] | None = None
    last = None
    for stage, codes in stages:
        try:
            last = await session.reply()
        except (ConnectionError, TimeoutError) as exc:
            session.abort()
            if refused is not None:
                raise _refusal(refused[0], recipient, refused[1].code, refused[1].message) from exc
            raise lost(exc) from exc
        if refused is None and last.code not in codes:
            refused = (stage, last)
    assert last is not None
    if refused is None:
        return last
    stage, reply = refused
    if last.code == 354:            # DATA accepted after a refusal: end an empty message, sent to no one
        session.write(b".\r\n")
        await session.reply()
    if reset or reply.code == _SERVICE_CLOSING:
        await _reset_after(session, reply.code, stage)
    raise _refusal(stage, recipient, reply.code, reply.message)


def _lost_before_complete(recipient: str) -> Callable[[Exception], DeliveryError]:
    return lambda exc: TransientDeliveryError(
        f"connection lost before the message to {recipient} was complete: {exc}", reconnect=True)


def _lost_after_complete(recipient: str) -> Callable[[Exception], DeliveryError]:
    return lambda exc: UncertainDeliveryError(f"no reply after the message to {recipient} was sent: {exc}")


def _unstuffed(wire: bytes) -> bytes:
    """The message as BDAT carries it: `wire` (CRLF, dot-stuffed for DATA) with the stuffing taken out."""
    body = wire[1:] if wire.startswith(b"..") else wire
    return body.replace(b"\r\n..", b"\r\n.")


async def _transact_chunked(session: _Session, envelope: bytes, recipient: str, wire: bytes,
                            behind: Callable[[], bytes], *, stages: tuple[tuple[str, tuple[int, ...]], ...] = _ENVELOPE
                            ) -> str:
    """`envelope` (MAIL FROM and RCPT TO; nothing when they went ahead and were accepted) and `BDAT <size>
    LAST` with the message, in one write, then their replies. `behind()` gives the envelope of the next
    send, booked meanwhile, to go in the same write (see `SmtpPool`); when one went, a refusal here
    resets nothing: that send resets the session itself before it goes on."""
    body = _unstuffed(wire)
    try:
        ahead = behind()
        session.write(envelope + b"BDAT %d LAST\r\n" % len(body) + body + ahead)
        await session.drain()
    except (ConnectionError, TimeoutError) as exc:
        session.abort()
        raise _lost_before_complete(recipient)(exc) from exc
    final = await _pipelined_replies(session, recipient, (*stages, ("end of DATA", (250,))),
                                     _lost_after_complete(recipient), reset=not ahead)
    return _reply(final.code, final.message)


async def _final_reply(session: _Session, recipient: str) -> str:
    """Read the reply to the end of DATA: 250, or the refusal classified; none is uncertain."""
    try:
        final = await session.reply()
    except (ConnectionError, TimeoutError) as exc:
        session.abort()
        raise _lost_after_complete(recipient)(exc) from exc
    if final.code != 250:
        if final.code == _SERVICE_CLOSING:
            session.abort()
        raise _refusal("end of DATA", recipient, final.code, final.message)
    return _reply(final.code, final.message)


@dataclass
class _Booking:
    """A send waiting for a busy connection of a relay with CHUNKING: its envelope goes out behind the
    message in flight there, in the same write, and the send takes the connection over after it."""

    envelope: bytes                 # its MAIL FROM and RCPT TO lines
    handoff: asyncio.Future[None]   # done when the send before it is over: the connection is this one's
    written: bool = False           # the envelope went out behind the message before it
    clean: bool = False             # that message ended with 250: the envelope met no open transaction


class _PooledConnection:
    """One persistent session, reopened before use whenever it was closed or lost; `owned` while a send
    uses it, with at most one send booked `next` (see `SmtpPool`)."""

    def __init__(self, config: SmtpConfig):
        self._config = config
        self._session: _Session | None = None
        self.owned = False
        self.next: _Booking | None = None

    @property
    def session(self) -> _Session | None:
        return self._session

    def bookable(self) -> bool:
        return self.owned and self.next is None and self._session is not None and self._session.is_open \
            and self._session.chunking

    def behind(self) -> bytes:
        """The booked send's envelope, to go out once, behind the message being written now."""
        if self.next is None or self.next.written:
            return b""
        self.next.written = True
        return self.next.envelope

    async def ensure_open(self) -> _Session:
        if self._session is None or not self._session.is_open:
            if self._session is not None:
                self._session.abort()
                self._session = None
            self._session = await _open_session(self._config)
        return self._session

    async def send(self, mail: bytes, recipient: str, wire: bytes) -> str:
        session = await self.ensure_open()
        return await self.guarded(session, _transact(session, mail, recipient, wire, self.behind))

    async def send_accepted(self, session: _Session, recipient: str, wire: bytes) -> str:
        """Send the message whose envelope went ahead and was accepted: BDAT LAST, and its reply."""
        return await self.guarded(session, _transact_chunked(session, b"", recipient, wire, self.behind, stages=()))

    @staticmethod
    async def guarded(session: _Session, transaction: Awaitable[str]) -> str:
        """Run a transaction; drop the session when it can no longer be trusted."""
        try:
            return await transaction
        except TransientDeliveryError as exc:
            if exc.reconnect:
                session.abort()
            raise
        except DeliveryError:
            raise
        except BaseException:
            session.abort()  # state unknown (cancelled, unexpected error): never reuse it
            raise

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and session.is_open:
            await session.quit()


HandOver = Callable[[], Awaitable[None]]


class SmtpPool:
    """Up to `pool_size` persistent relay sessions shared by concurrent `send` calls.

    A send records its attempt (`hand_over`: the ledger's claim) once it holds a connection, before
    any byte of its transaction is written. Where the relay offers CHUNKING, a send that finds every
    connection busy books one instead: its envelope (MAIL FROM, RCPT TO) goes out behind the message
    written there next, in the same write, and it takes the connection over once that message's reply
    has come. Then the relay answers the message and the next envelope in one go — one round trip a
    message, even with a relay that answers a chunk apart from the envelope before it (Postfix does,
    and without TCP_NODELAY its second answer waits for the first one's ACK). An envelope sent ahead
    hands nothing over: the attempt is recorded only once it was accepted, just before the message is
    written. If anything is wrong with it (refused, the connection lost, the message before it not
    ending with 250) it is reset (RSET) and the send made the plain way, its attempt recorded first."""

    def __init__(self, config: SmtpConfig):
        self._config = config
        self._connections = [_PooledConnection(config) for _ in range(config.pool_size)]
        self._idle: list[_PooledConnection] = []
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._mail_from: tuple[str, bytes] | None = None     # the last envelope sender and its MAIL FROM line
        self.opened = 0     # sessions that `open` opened (the relay may allow fewer than pool_size)
        self.sent_ahead = 0     # messages whose envelope went ahead and was accepted

    async def open(self) -> int:
        """Open the sessions now (EHLO, STARTTLS or TLS, AUTH) rather than on first use; return how many
        opened (also kept in `opened`), which is fewer than `pool_size` when the relay limits connections.

        The first one opens alone, so that a refused login is tried once (one attempt per mechanism) and
        stops the channel before other connections repeat it. The others then open together. Those the
        relay turns away at the greeting (a relay limiting connections answers the extra greetings with 421,
        or with another 4xx) are left out: sending goes on over the ones that opened. Any other failure of
        theirs (TLS, AUTH, a refused session) stops the channel as it would have on the first one. Raises
        ChannelStoppedError when none opens."""
        first, *others = self._connections
        try:
            await first.ensure_open()
        except TransientDeliveryError as exc:
            raise ChannelStoppedError(f"relay {self._config.where} accepted no connection: {exc}",
                                      reply=exc.reply) from exc
        results = await asyncio.gather(*(c.ensure_open() for c in others), return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException) and not isinstance(r, _TurnedAwayError)),
                       None)
        if failure is not None:
            await self.close()
            if isinstance(failure, TransientDeliveryError):
                raise ChannelStoppedError(f"relay {self._config.where} failed a further connection: {failure}",
                                          reply=failure.reply) from failure
            raise failure
        opened = [first] + [c for c, r in zip(others, results, strict=True) if not isinstance(r, BaseException)]
        self._idle.extend(opened)
        self.opened = len(opened)
        return self.opened

    async def close(self) -> None:
        """Say QUIT on every open session; never raises."""
        await asyncio.gather(*(c.close() for c in self._connections), return_exceptions=True)

    async def __aenter__(self) -> SmtpPool:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send(self, envelope_from: str, recipient: str, wire: bytes, hand_over: HandOver | None = None) -> str:
        """Send one message to one recipient over a pooled connection; return the server's final reply text
        (e.g. '250 2.0.0 Ok: queued as X'). `wire` is the message as SMTP carries it: CRLF line ends and
        dot-stuffed, ending in CRLF (what `to_wire` makes of any message, and what MessageTemplate builds).
        `hand_over` is awaited before the attempt writes anything that could deliver the message; what it
        raises ends the send with nothing handed over."""
        try:
            if self._mail_from is None or self._mail_from[0] != envelope_from:
                self._mail_from = (envelope_from, _mail_from_command(envelope_from))
        except ChannelStoppedError:         # an attempt all the same, recorded as the plain way records it
            if hand_over is not None:
                await hand_over()
            raise
        mail = self._mail_from[1]
        try:
            envelope: bytes | None = mail + _rcpt_command(recipient)
        except PermanentDeliveryError:
            envelope = None                 # never sent ahead: the plain way records the attempt, then refuses it
        connection, booking = await self._acquire(envelope)
        if booking is None:
            return await self._send_on(connection, mail, recipient, wire, hand_over)
        return await self._send_booked(connection, booking, mail, recipient, wire, hand_over)

    async def _acquire(self, envelope: bytes | None) -> tuple[_PooledConnection, _Booking | None]:
        """Wait for an idle connection, or book a busy one (with CHUNKING) for `envelope`."""
        loop = asyncio.get_running_loop()
        while True:
            if self._idle:
                connection = self._idle.pop()
                connection.owned = True
                return connection, None
            if envelope is not None:
                for connection in self._connections:
                    if connection.bookable():
                        connection.next = _Booking(envelope, loop.create_future())
                        return connection, connection.next
            waiter = loop.create_future()
            self._waiters.append(waiter)
            await waiter

    def _release(self, connection: _PooledConnection, *, clean: bool) -> None:
        """The send on `connection` is over (`clean`: its message ended with 250): the send booked next
        takes the connection over, else it is idle again."""
        booking, connection.next = connection.next, None
        if booking is not None and not booking.handoff.done():
            booking.clean = clean
            booking.handoff.set_result(None)
        else:
            connection.owned = False
            self._idle.append(connection)
        # Either way one waiting send can go on now: on the idle connection, or booking this one.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def _send_on(self, connection: _PooledConnection, mail: bytes, recipient: str, wire: bytes,
                       hand_over: HandOver | None) -> str:
        """The plain way: record the attempt, then the whole transaction on `connection`."""
        clean = False
        try:
            if hand_over is not None:
                await hand_over()
            reply = await connection.send(mail, recipient, wire)
            clean = True
            return reply
        finally:
            self._release(connection, clean=clean)

    async def _send_booked(self, connection: _PooledConnection, booking: _Booking, mail: bytes, recipient: str,
                           wire: bytes, hand_over: HandOver | None) -> str:
        """Wait for the connection booked; send the message behind its envelope if that went ahead and was
        accepted after a clean transaction, else reset and send the plain way."""
        try:
            await asyncio.shield(booking.handoff)
        except asyncio.CancelledError:
            booking.handoff.add_done_callback(lambda _: self._abandon(connection))
            raise
        session = connection.session
        if not booking.written or session is None or not session.is_open:
            return await self._send_on(connection, mail, recipient, wire, hand_over)
        try:
            await _pipelined_replies(session, recipient, _ENVELOPE, _lost_before_complete(recipient), reset=False)
            accepted = booking.clean
        except DeliveryError:
            accepted = False
        if not accepted:
            if session.is_open:
                await _reset_after(session, 0, "RCPT TO")
            return await self._send_on(connection, mail, recipient, wire, hand_over)
        try:
            if hand_over is not None:
                await hand_over()
        except BaseException:               # not this run's to send: the accepted envelope is reset
            if session.is_open:
                await _reset_after(session, 0, "RCPT TO")
            self._release(connection, clean=False)
            raise
        self.sent_ahead += 1
        clean = False
        try:
            reply = await connection.send_accepted(session, recipient, wire)
            clean = True
            return reply
        finally:
            self._release(connection, clean=clean)

    def _abandon(self, connection: _PooledConnection) -> None:
        """A send that had booked `connection` was cancelled: its envelope may be on the wire, so the
        session is dropped and the connection goes on to the next send."""
        if connection.session is not None:
            connection.session.abort()
        self._release(connection, clean=False)


async def check_relay(config: SmtpConfig) -> str:
    """Connect, EHLO, secure and authenticate as configured, then QUIT; return a one-line summary."""
    client, greeting = await _connect(config)
    try:
        cipher = client.get_transport_info("cipher")
        tls = f"TLS {cipher[1]} {cipher[0]}" if cipher else "no TLS"
        login = f"authenticated as {config.username}" if config.username else "no authentication"
        return f"relay {config.where} ready ({tls}, {login}): {_reply(greeting.code, greeting.message)}"
    finally:
        try:
            await client.quit()
        except (SMTPException, OSError):
            client.close()
