"""Deliver prepared messages to an SMTP relay over a pool of persistent aiosmtplib connections.

Every failure leaves this module as one of the errors in `distributor.errors`, so the core never
sees an aiosmtplib exception.
"""
from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
from dataclasses import dataclass, field

from aiosmtplib import SMTP, SMTPResponse
from aiosmtplib.errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from distributor.errors import (
    ChannelStoppedError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
    UncertainDeliveryError,
)

SECURITY_MODES = ("plain", "starttls", "tls")
_MAILBOX_UNKNOWN = re.compile(r"^5\.1\.\d{1,3}\b")
_SERVICE_CLOSING = 421


@dataclass(frozen=True)
class SmtpConfig:
    """How to reach and log in to one SMTP relay; `password` never appears in a repr or an error."""

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

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {', '.join(SECURITY_MODES)}, not {self.security!r}")
        if self.security == "plain" and not _is_loopback(self.host):
            raise ValueError(f"security 'plain' is allowed only for a loopback host, not {self.host!r}")
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")


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


class PrestuffedSMTP(SMTP):
    """An aiosmtplib client whose DATA phase sends a body already prepared by `to_wire`.

    `SMTP.data` re-normalises and dot-stuffs the whole body on every call; these three steps replace it.
    The protocol's command lock covers DATA itself but not the body: a pooled connection is used by one
    task at a time, so no other command can interleave.
    """

    async def envelope(self, verb: bytes, address: str) -> None:
        """Send MAIL FROM or RCPT TO for an address that is plain ASCII with no brackets or spaces (the
        subscriber reader guarantees that); `mail()`/`rcpt()` would parse and quote it again every time."""
        prefix = b"FROM:<" if verb == b"MAIL" else b"TO:<"
        response = await self.execute_command(verb, prefix + address.encode("ascii") + b">")
        if response.code not in (250, 251):   # 251: user not local, will forward
            raise SMTPResponseException(response.code, response.message)

    async def start_data(self) -> SMTPResponse:
        """Send DATA and return the server's reply (354 when it is ready for the body)."""
        return await self.execute_command(b"DATA")

    async def write_body(self, wire: bytes) -> None:
        """Write the body and wait until the transport has handed all of it to the socket."""
        if self.protocol is None or self.protocol.transport is None:
            raise SMTPServerDisconnected("Connection lost")
        # A high-water mark of 0 pauses the protocol while anything is buffered, so the drain below
        # returns only once the buffer is empty: the final '.' is then written strictly after the body.
        self.protocol.transport.set_write_buffer_limits(high=0)  # type: ignore[attr-defined]
        self.protocol.write(wire)
        try:
            # _drain_helper is the StreamWriter.drain() contract of the flow-control mixin the protocol
            # copies from the standard library; it raises ConnectionResetError once the peer is gone.
            await asyncio.wait_for(self.protocol._drain_helper(), self.timeout)
        except (TimeoutError, asyncio.TimeoutError) as exc:
            self.close()
            raise SMTPTimeoutError("Timed out writing the message body") from exc
        except ConnectionError as exc:
            self.close()
            raise SMTPServerDisconnected("Connection lost while writing the message body") from exc

    async def finish_data(self) -> SMTPResponse:
        """Write the terminating '.' line and return the server's reply to the whole message."""
        if self.protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        self.protocol.write(b".\r\n")
        try:
            response = await self.protocol.read_response(timeout=self.timeout)
        except (SMTPServerDisconnected, SMTPTimeoutError):
            self.close()
            raise
        if response.code == _SERVICE_CLOSING:
            self.close()
        return response


def _reply(code: int, message: str) -> str:
    return f"{code} {message}"


def _stop_for_session_failure(config: SmtpConfig, exc: BaseException) -> DeliveryError:
    """Translate a failure to open a session into a delivery error (421 is worth a later reconnect)."""
    where = f"{config.host}:{config.port}"
    if isinstance(exc, SMTPResponseException) and exc.code == _SERVICE_CLOSING:
        return TransientDeliveryError(f"relay {where} is closing the session", reply=_reply(exc.code, exc.message),
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
        return ChannelStoppedError(f"TLS with relay {where} failed: {tls_error.__class__.__name__}: {tls_error.reason}")
    if isinstance(exc, SMTPConnectError):
        return ChannelStoppedError(f"cannot reach relay {where}: {exc}")
    return ChannelStoppedError(f"session with relay {where} failed: {exc.__class__.__name__}: {exc}")


async def _open_session(config: SmtpConfig) -> tuple[PrestuffedSMTP, SMTPResponse]:
    """Connect, EHLO, secure and log in; return the client and the server's greeting."""
    client = PrestuffedSMTP(
        hostname=config.host, port=config.port, username=config.username, password=config.password,
        local_hostname=config.local_hostname, timeout=config.timeout_seconds,
        use_tls=config.security == "tls", start_tls=config.security == "starttls",
        validate_certs=config.tls_verify, cert_bundle=config.cafile,
    )
    try:
        greeting = await client.connect()
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
    except (SMTPException, OSError) as exc:
        client.close()
        raise _stop_for_session_failure(config, exc) from exc
    return client, greeting


def _refusal(stage: str, recipient: str, code: int, message: str) -> DeliveryError:
    """Classify a refusal at MAIL, RCPT, DATA or end of DATA."""
    reply = _reply(code, message)
    what = f"{stage} for {recipient} refused"
    if code == _SERVICE_CLOSING:
        return TransientDeliveryError(f"{what}: relay closing the session", reply=reply, reconnect=True)
    if 400 <= code < 500:
        return TransientDeliveryError(f"{what} for now", reply=reply)
    if 500 <= code < 600:
        if stage == "MAIL FROM":
            return ChannelStoppedError(f"{what}: relay refuses the sender", reply=reply)
        suppress = stage == "RCPT TO" and _MAILBOX_UNKNOWN.match(message) is not None
        return PermanentDeliveryError(what, reply=reply, suppress=suppress)
    return TransientDeliveryError(f"{what} with an unexpected reply", reply=reply, reconnect=True)


async def _reset_transaction(client: PrestuffedSMTP) -> None:
    """Abort the open mail transaction so the connection can be reused; drop the connection if RSET fails."""
    try:
        await client.rset()
    except (SMTPException, OSError):
        client.close()


async def _begin_transaction(client: PrestuffedSMTP, envelope_from: str, recipient: str) -> None:
    """Send MAIL, RCPT and DATA; on a refusal reset the transaction and raise the classified error."""
    stage = "MAIL FROM"
    try:
        await client.envelope(b"MAIL", envelope_from)
        stage = "RCPT TO"
        await client.envelope(b"RCPT", recipient)
        stage = "DATA"
        started = await client.start_data()
        if started.code != 354:
            raise SMTPResponseException(started.code, started.message)
    except SMTPResponseException as exc:
        if stage != "MAIL FROM" and client.is_connected:
            await _reset_transaction(client)
        raise _refusal(stage, recipient, exc.code, exc.message) from exc
    except ValueError as exc:
        if stage == "MAIL FROM":
            raise ChannelStoppedError(f"envelope sender {envelope_from!r} cannot be sent: {exc}") from exc
        await _reset_transaction(client)
        raise PermanentDeliveryError(f"recipient {recipient!r} cannot be sent: {exc}") from exc


async def _transact(client: PrestuffedSMTP, envelope_from: str, recipient: str, wire: bytes) -> str:
    """Run one mail transaction on an open connection and return the server's final reply."""
    try:
        await _begin_transaction(client, envelope_from, recipient)
        await client.write_body(wire)
    except (SMTPServerDisconnected, SMTPTimeoutError) as exc:
        client.close()
        raise TransientDeliveryError(f"connection lost before the message to {recipient} was complete: {exc}",
                                     reconnect=True) from exc
    try:
        final = await client.finish_data()
    except (SMTPServerDisconnected, SMTPTimeoutError) as exc:
        client.close()
        raise UncertainDeliveryError(f"no reply after the message to {recipient} was sent: {exc}") from exc
    if final.code != 250:
        raise _refusal("end of DATA", recipient, final.code, final.message)
    return _reply(final.code, final.message)


class _PooledConnection:
    """One persistent session, reopened before use whenever it was closed or lost."""

    def __init__(self, config: SmtpConfig):
        self._config = config
        self._client: PrestuffedSMTP | None = None

    async def ensure_open(self) -> PrestuffedSMTP:
        if self._client is None or not self._client.is_connected:
            if self._client is not None:
                self._client.close()
                self._client = None
            self._client, _ = await _open_session(self._config)
        return self._client

    async def send(self, envelope_from: str, recipient: str, wire: bytes) -> str:
        client = await self.ensure_open()
        try:
            return await _transact(client, envelope_from, recipient, wire)
        except TransientDeliveryError as exc:
            if exc.reconnect:
                client.close()
            raise
        except DeliveryError:
            raise
        except BaseException:
            client.close()  # state unknown (cancelled, unexpected error): never reuse it
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None or not client.is_connected:
            return
        try:
            await client.quit()
        except (SMTPException, OSError):
            client.close()


class SmtpPool:
    """A fixed number of persistent relay sessions shared by concurrent `send` calls."""

    def __init__(self, config: SmtpConfig):
        self._config = config
        self._connections = [_PooledConnection(config) for _ in range(config.pool_size)]
        self._idle: asyncio.Queue[_PooledConnection] = asyncio.Queue()
        for connection in self._connections:
            self._idle.put_nowait(connection)

    async def open(self) -> None:
        """Open every session now (EHLO, STARTTLS or TLS, AUTH) rather than on first use; on failure close them
        all and raise."""
        results = await asyncio.gather(*(c.ensure_open() for c in self._connections), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.close()
            raise failures[0]

    async def close(self) -> None:
        """Say QUIT on every open session; never raises."""
        await asyncio.gather(*(c.close() for c in self._connections), return_exceptions=True)

    async def __aenter__(self) -> SmtpPool:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send(self, envelope_from: str, recipient: str, wire: bytes) -> str:
        """Send one message to one recipient over a pooled connection; return the server's final reply text
        (e.g. '250 2.0.0 Ok: queued as X'). `wire` is the message as SMTP carries it: CRLF line ends and
        dot-stuffed, ending in CRLF (what `to_wire` makes of any message, and what MessageTemplate builds)."""
        connection = await self._idle.get()
        try:
            return await connection.send(envelope_from, recipient, wire)
        finally:
            self._idle.put_nowait(connection)


async def check_relay(config: SmtpConfig) -> str:
    """Connect, EHLO, secure and authenticate as configured, then QUIT; return a one-line summary."""
    client, greeting = await _open_session(config)
    try:
        cipher = client.get_transport_info("cipher")
        tls = f"TLS {cipher[1]} {cipher[0]}" if cipher else "no TLS"
        login = f"authenticated as {config.username}" if config.username else "no authentication"
        return f"relay {config.host}:{config.port} ready ({tls}, {login}): {_reply(greeting.code, greeting.message)}"
    finally:
        try:
            await client.quit()
        except (SMTPException, OSError):
            client.close()
