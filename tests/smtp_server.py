"""A recording, fault-injecting SMTP server on 127.0.0.1 for tests (aiosmtpd on its own event-loop thread).

    with FaultySmtpServer(username="u", password="p", tls="starttls",
                          rcpt_replies={"a@x.test": ["451 4.3.0 try later", None]}) as server:
        ...  # connect to server.host, server.port (trust server.ca_path for TLS)
        assert server.messages[0].data == b"Subject: hi\\r\\n\\r\\nbody\\r\\n"

Faults are scripted per recipient address and bounded: a scripted list is consumed one entry per attempt
and, once empty, the server behaves normally. A reply starting with 421 is followed by closing the
connection, as real relays do. The server never listens on anything but 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import ipaddress
import shutil
import ssl
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"
TLS_MODES = ("none", "starttls", "implicit")
_IN_DATA_READ_BYTES = 4096
_STOP_SECONDS = 5.0
# The longest `hold_after_messages` keeps a message unanswered when a test never calls release().
_HOLD_SECONDS = 60.0


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the server received it: `data` keeps CRLF and has the dot-stuffing removed."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    connection: int


class FaultySmtpServer:
    """Start an SMTP server on 127.0.0.1 (free port) that records what it accepts and injects scripted faults.

    Keyword arguments (all optional):
      username/password     offer AUTH PLAIN/LOGIN with these credentials; a wrong one gets
                            '535 5.7.8 Authentication credentials invalid'; MAIL needs a login
      tls                   "none", "starttls" (offered and required) or "implicit" (TLS from the first byte),
                            with a certificate for 127.0.0.1/localhost signed by a throwaway CA (`ca_path`)
      greeting              replace the 220 greeting (e.g. "554 5.3.2 no service"); the connection then closes
      mail_replies          replies to successive MAIL FROM commands (None = accept)
      rcpt_replies          {address: [reply or None, ...]} consumed per RCPT attempt (None = accept)
      rejected_recipients   {address: reply} given to every RCPT attempt (e.g. "550 5.1.1 no such user")
      data_replies          {address: [reply or None, ...]} consumed per end-of-DATA (None = accept)
      drop_on_data          {address: n} close the connection on the DATA (or BDAT) command, before 354
                            (or before reading the chunk), n times
      drop_in_data          {address: n} reply 354 (or take BDAT), read the first 4 KiB of the body, then reset the
                            connection, n times; a client notices before its final '.' only if the message
                            is larger than the socket buffers (several MB on loopback)
      withhold_after_dot    {address: seconds} receive the whole message (recorded in `withheld`), then
                            stay silent for `seconds` and close the connection
      hold_after_messages   once this many messages were accepted, receive each later one (recorded in
                            `withheld`) and stay silent until `release()` (at most _HOLD_SECONDS), then close
                            the connection; after `release()` messages are accepted as usual. A client is
                            thus stopped after exactly that many messages, for as long as a test needs
      command_delay_seconds wait this long before every reply, the greeting included
      max_connections       greet at most this many connections at a time; the greeting of one more is
                            '421 4.7.0 too many connections' and the connection closes (Postfix's limit)
      certificate           (certificate, key) PEM paths to serve instead of the throwaway CA's certificate
      accepted_logins       accept the right credentials this many times; later logins get 535 all the same
      extensions            offer these in EHLO besides aiosmtpd's own: PIPELINING (commands of a
                            transaction read in one go, as aiosmtpd always reads them) and CHUNKING
                            (BDAT, RFC 3030, answered here)
    """

    def __init__(self, *, username: str | None = None, password: str | None = None, tls: str = "none",
                 greeting: str | None = None, mail_replies: Sequence[str | None] = (),
                 rcpt_replies: Mapping[str, Sequence[str | None]] | None = None,
                 rejected_recipients: Mapping[str, str] | None = None,
                 data_replies: Mapping[str, Sequence[str | None]] | None = None,
                 drop_on_data: Mapping[str, int] | None = None, drop_in_data: Mapping[str, int] | None = None,
                 withhold_after_dot: Mapping[str, float] | None = None, command_delay_seconds: float = 0.0,
                 max_connections: int | None = None, certificate: tuple[Path, Path] | None = None,
                 hold_after_messages: int | None = None, accepted_logins: int | None = None,
                 extensions: Sequence[str] = ()):
        if tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {TLS_MODES}, not {tls!r}")
        self.host = HOST
        self.port = 0
        self.ca_path: Path | None = None
        self._credentials = (username, password) if username is not None else None
        self._tls = tls
        self._greeting = greeting
        self._delay = command_delay_seconds
        self._max_connections = max_connections
        self._certificate = certificate
        self._ehlo_names: list[str] = []
        self._refused_connections = 0
        self._admitted = 0
        self._mail_replies = collections.deque(mail_replies)
        self._rcpt_replies = {a: collections.deque(r) for a, r in (rcpt_replies or {}).items()}
        self._rejected = dict(rejected_recipients or {})
        self._data_replies = {a: collections.deque(r) for a, r in (data_replies or {}).items()}
        self._drops_on_data = collections.Counter(drop_on_data or {})
        self._drops_in_data = collections.Counter(drop_in_data or {})
        self._withhold = dict(withhold_after_dot or {})
        self._hold_after = hold_after_messages
        self._released = asyncio.Event()    # waited on in the server's loop, set from any thread by release()
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._withheld: list[ReceivedMessage] = []
        self._connections = 0
        self._rcpt_attempts: collections.Counter[str] = collections.Counter()
        self._auth_attempts = 0
        self._logins_left = accepted_logins
        self._extensions = tuple(extensions)
        # MAIL commands read with the rest of their transaction already waiting: the client pipelined.
        self.pipelined_mails = 0
        self.chunked_messages = 0       # messages that came as BDAT
        self._tmpdir: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._live: set[_FaultySMTP] = set()
        self._startup_error: OSError | None = None

    # Records, safe to read from any thread.

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Messages accepted with a 250 reply, in order."""
        with self._lock:
            return list(self._messages)

    @property
    def withheld(self) -> list[ReceivedMessage]:
        """Messages received in full but never answered (`withhold_after_dot`, `hold_after_messages`)."""
        with self._lock:
            return list(self._withheld)

    @property
    def connections_opened(self) -> int:
        with self._lock:
            return self._connections

    @property
    def rcpt_attempts(self) -> dict[str, int]:
        """RCPT commands seen per recipient address, accepted or not."""
        with self._lock:
            return dict(self._rcpt_attempts)

    @property
    def auth_attempts(self) -> int:
        with self._lock:
            return self._auth_attempts

    @property
    def ehlo_names(self) -> list[str]:
        """The name each EHLO (or HELO) command gave, in order."""
        with self._lock:
            return list(self._ehlo_names)

    @property
    def refused_connections(self) -> int:
        """Connections greeted with 421 because of `max_connections`."""
        with self._lock:
            return self._refused_connections

    def release(self) -> None:
        """End the hold of `hold_after_messages`: held messages get no reply and their connections close;
        later messages are accepted as usual."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._released.set)

    # Lifecycle.

    def start(self) -> FaultySmtpServer:
        """Listen on 127.0.0.1 on a free port, in a background thread; return self."""
        server_tls = self._make_tls_context() if self._tls != "none" else None
        self._loop = asyncio.new_event_loop()
        listening = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server_tls, listening), daemon=True,
                                        name=f"faulty-smtp-{id(self)}")
        self._thread.start()
        if not listening.wait(_STOP_SECONDS) or not self.port:
            raise RuntimeError("SMTP test server did not start") from self._startup_error
        return self

    def stop(self) -> None:
        """Close every connection, stop the thread and delete the certificate files."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_STOP_SECONDS)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> FaultySmtpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, server_tls: ssl.SSLContext | None, listening: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        implicit = server_tls if self._tls == "implicit" else None
        try:
            server = loop.run_until_complete(loop.create_server(
                lambda: _FaultySMTP(self, tls_context=server_tls if self._tls == "starttls" else None),
                HOST, 0, ssl=implicit))
        except OSError as exc:
            self._startup_error = exc
            loop.close()
            listening.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        listening.set()
        loop.run_forever()
        server.close()
        for protocol in list(self._live):
            if protocol.transport is not None:
                protocol.transport.abort()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()

    def _make_tls_context(self) -> ssl.SSLContext:
        self._tmpdir = Path(tempfile.mkdtemp(prefix="faulty-smtp-"))
        self.ca_path, cert_path, key_path = _write_certificates(self._tmpdir)
        if self._certificate is not None:
            cert_path, key_path = self._certificate
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
        return context

    # Script, consulted from the server thread.

    def _next_reply(self, replies: collections.deque[str | None] | None) -> str | None:
        with self._lock:
            return replies.popleft() if replies else None

    def _take_drop(self, drops: collections.Counter[str], recipients: Iterable[str]) -> bool:
        with self._lock:
            for address in recipients:
                if drops[address] > 0:
                    drops[address] -= 1
                    return True
        return False

    def _held_now(self) -> bool:
        with self._lock:
            return self._hold_after is not None and len(self._messages) >= self._hold_after \
                and not self._released.is_set()

    def _record(self, into: list[ReceivedMessage], message: ReceivedMessage) -> int:
        with self._lock:
            into.append(message)
            return len(into)


class _FaultySMTP(SMTP):
    """One server-side session that follows the owning FaultySmtpServer's script."""

    def __init__(self, owner: FaultySmtpServer, *, tls_context: ssl.SSLContext | None):
        self._owner = owner
        self._greeted = False
        self._counted = False
        self.connection_number = 0
        self._chunks = bytearray()
        handler = _Handler(owner)
        super().__init__(handler, hostname="smtp.test", ident="FaultySmtpServer",
                         tls_context=tls_context, require_starttls=tls_context is not None,
                         auth_require_tls=False, authenticator=handler.authenticate, loop=owner._loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # the second call, after STARTTLS, is the same connection
            owner = self._owner
            with owner._lock:
                owner._connections += 1
                self.connection_number = owner._connections
            owner._live.add(self)
        super().connection_made(transport)

    def _admit(self) -> bool:
        """Count this connection against `max_connections` if there is room; False when there is none."""
        owner = self._owner
        with owner._lock:
            if owner._admitted >= (owner._max_connections or 0):
                owner._refused_connections += 1
                return False
            owner._admitted += 1
            self._counted = True
            return True

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            with self._owner._lock:
                self._owner._admitted -= 1
        self._owner._live.discard(self)
        super().connection_lost(error)

    async def push(self, status: str | bytes) -> None:
        text = status.decode() if isinstance(status, bytes) else status
        close_after = text.startswith("421")
        if not self._greeted:
            self._greeted = True
            owner = self._owner
            if owner._greeting is not None:
                text = owner._greeting
                close_after = not text.startswith("220")
            elif owner._max_connections is not None and not self._admit():
                text, close_after = "421 4.7.0 smtp.test Error: too many connections from 127.0.0.1", True
        if self._owner._delay:
            await asyncio.sleep(self._owner._delay)
        await super().push(text)
        if close_after and self.transport is not None:
            self.transport.close()

    async def smtp_EHLO(self, hostname: str) -> None:
        with self._owner._lock:
            self._owner._ehlo_names.append(hostname)
        await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        with self._owner._lock:
            self._owner._ehlo_names.append(hostname)
        await super().smtp_HELO(hostname)

    async def smtp_MAIL(self, arg: str) -> None:
        if self._reader._buffer:        # type: ignore[attr-defined]   # bytes read past this command line
            with self._owner._lock:
                self._owner.pipelined_mails += 1
        await super().smtp_MAIL(arg)

    async def smtp_BDAT(self, arg: str) -> None:
        """BDAT <size> [LAST] (RFC 3030), when CHUNKING is offered: the chunk is read whole whatever the
        reply, and the LAST one ends the message as the end of DATA does."""
        parts = arg.split()
        if "CHUNKING" not in self._owner._extensions or not 1 <= len(parts) <= 2 or not parts[0].isdigit() \
                or parts[1:] not in ([], ["LAST"]):
            await self.push("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        recipients = list(self.envelope.rcpt_tos) if self.envelope is not None else []
        if self.transport is not None and self._owner._take_drop(self._owner._drops_on_data, recipients):
            await self.abort_connection()
            return
        if self.transport is not None and self._owner._take_drop(self._owner._drops_in_data, recipients):
            await asyncio.wait_for(self._reader.read(_IN_DATA_READ_BYTES), _STOP_SECONDS)
            await self.abort_connection()
            return
        chunk = await self._reader.readexactly(int(parts[0]))
        if self.envelope is None or not self.envelope.rcpt_tos:
            self._chunks = bytearray()
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        self._chunks += chunk
        if not parts[1:]:
            await self.push(f"250 2.0.0 {len(chunk)} octets received")
            return
        self.envelope.original_content = self.envelope.content = bytes(self._chunks)
        self._chunks = bytearray()
        with self._owner._lock:
            self._owner.chunked_messages += 1
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)

    async def smtp_DATA(self, arg: str) -> None:
        recipients = list(self.envelope.rcpt_tos) if self.envelope is not None else []
        if self.transport is not None and self._owner._take_drop(self._owner._drops_on_data, recipients):
            await self.abort_connection()
            return
        if self.transport is not None and self._owner._take_drop(self._owner._drops_in_data, recipients):
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await asyncio.wait_for(self._reader.read(_IN_DATA_READ_BYTES), _STOP_SECONDS)
            await self.abort_connection()  # unread data in the socket makes this a reset, not a clean close
            return
        await super().smtp_DATA(arg)

    async def abort_connection(self) -> None:
        """Drop the connection at once and end this session without reading another command."""
        if self.transport is not None:
            self.transport.abort()
        await asyncio.sleep(_STOP_SECONDS)  # cancelled as soon as the connection is gone


class _Handler:
    """aiosmtpd hooks: scripted replies, AUTH checks and recording."""

    def __init__(self, owner: FaultySmtpServer):
        self._owner = owner

    async def handle_EHLO(self, server: SMTP, session, envelope, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return responses[:-1] + [f"250-{extension}" for extension in self._owner._extensions] + responses[-1:]

    def authenticate(self, server: SMTP, session, envelope, mechanism: str, auth_data: object) -> AuthResult:
        owner = self._owner
        with owner._lock:
            owner._auth_attempts += 1
        expected = owner._credentials
        ok = (expected is not None and isinstance(auth_data, LoginPassword)
              and (auth_data.login, auth_data.password) == (expected[0].encode(), (expected[1] or "").encode()))
        with owner._lock:
            if ok and owner._logins_left is not None:
                ok = owner._logins_left > 0
                owner._logins_left -= ok
        return AuthResult(success=ok, handled=False)

    async def handle_MAIL(self, server: SMTP, session, envelope, address: str, mail_options: list[str]) -> str:
        if self._owner._credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        scripted = self._owner._next_reply(self._owner._mail_replies)
        if scripted is not None:
            return scripted
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session, envelope, address: str, rcpt_options: list[str]) -> str:
        owner = self._owner
        with owner._lock:
            owner._rcpt_attempts[address] += 1
        scripted = owner._rejected.get(address) or owner._next_reply(owner._rcpt_replies.get(address))
        if scripted is not None:
            return scripted
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: _FaultySMTP, session, envelope) -> str:
        owner = self._owner
        message = ReceivedMessage(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.original_content,
                                  server.connection_number)
        withhold = max((owner._withhold.get(a, 0.0) for a in envelope.rcpt_tos), default=0.0)
        if withhold:
            owner._record(owner._withheld, message)
            await asyncio.sleep(withhold)
            await server.abort_connection()
            return "451 4.3.0 withheld"
        if owner._held_now():
            owner._record(owner._withheld, message)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(owner._released.wait(), _HOLD_SECONDS)
            await server.abort_connection()
            return "451 4.3.0 held"
        for address in envelope.rcpt_tos:
            scripted = owner._next_reply(owner._data_replies.get(address))
            if scripted is not None:
                return scripted
        number = owner._record(owner._messages, message)
        return f"250 2.0.0 Ok: queued as M{number}"


def _write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Write a throwaway CA and a server certificate for 127.0.0.1 and localhost; return their paths."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FaultySmtpServer test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path
