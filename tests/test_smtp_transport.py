"""The SMTP transport against a real, fault-injecting aiosmtpd server on 127.0.0.1."""
from __future__ import annotations

import ast
import asyncio
import base64
import datetime
import ipaddress
import socket
import ssl
from collections.abc import Awaitable
from pathlib import Path

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import distributor.channels.mail.smtp as smtp_module
from distributor.channels.mail.smtp import SmtpConfig, SmtpPool, check_relay, to_wire
from distributor.errors import (
    ChannelStoppedError,
    PermanentDeliveryError,
    SenderThrottledError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from tests.smtp_server import FaultySmtpServer

SENDER = "news@sender.test"
PASSWORD = "s3cret-Pa55word"
TEST_SECONDS = 10.0


def run(coroutine: Awaitable[object]) -> object:
    return asyncio.run(asyncio.wait_for(coroutine, TEST_SECONDS))


def config_for(server: FaultySmtpServer, **overrides: object) -> SmtpConfig:
    settings: dict[str, object] = dict(
        host=server.host, port=server.port, security="plain", username=None, password=None,
        timeout_seconds=2.0, pool_size=1, local_hostname="client.test",
    )
    settings.update(overrides)
    return SmtpConfig(**settings)  # type: ignore[arg-type]


async def send_all(config: SmtpConfig, *sends: tuple[str, bytes]) -> list[object]:
    """Send in order over one pool; return each reply or the error raised."""
    outcomes: list[object] = []
    async with SmtpPool(config) as pool:
        for recipient, wire in sends:
            try:
                outcomes.append(await pool.send(SENDER, recipient, wire))
            except Exception as exc:  # noqa: BLE001 - the outcome under test
                outcomes.append(exc)
    return outcomes


SMALL = to_wire(b"Subject: hello\n\nhello\n")
# The three ways a transaction goes, by what the relay offers: one command at a time, PIPELINING (RFC
# 2920: the envelope and DATA in one write), and CHUNKING with it (RFC 3030: the message too, as BDAT).
WAYS = {"one at a time": (), "pipelining": ("PIPELINING",), "chunking": ("PIPELINING", "CHUNKING")}
each_way = pytest.mark.parametrize("ways", WAYS.values(), ids=WAYS.keys())


@pytest.mark.parametrize(("message", "wire"), [
    (b"", b"\r\n"),
    (b"a", b"a\r\n"),
    (b"a\nb\n", b"a\r\nb\r\n"),
    (b"a\r\nb", b"a\r\nb\r\n"),
    (b"a\rb\r", b"a\r\nb\r\n"),
    (b"a\r\r\nb", b"a\r\n\r\nb\r\n"),
    (b".", b"..\r\n"),
    (b".a\n..b\n.\nc.d\n", b"..a\r\n...b\r\n..\r\nc.d\r\n"),
    (b"x\r\n.\r\n", b"x\r\n..\r\n"),
    (b"x\r.y", b"x\r\n..y\r\n"),
])
def test_to_wire_normalises_line_endings_and_stuffs_dots(message: bytes, wire: bytes) -> None:
    assert to_wire(message) == wire
    assert to_wire(message) == PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message))


@each_way
def test_server_receives_exactly_the_intended_bytes(ways: tuple[str, ...]) -> None:
    chinese = "本周 Linux 内核动态：调度器、内存管理与 RISC-V 支持。\n".encode() * 40
    encoded = base64.encodebytes(chinese)  # 76-character lines ending in LF
    long_line = b"L" * 998
    message = (b"From: news@sender.test\r\nTo: reader@x.test\r\nSubject: =?utf-8?b?5pys5ZGo?=\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
               b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
               b".leading dot\r\n..two dots\r\n.\r\nbare LF follows\nend of part\r\n" + long_line + b"\r\n"
               b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               + encoded + b"--b--")
    expected = message.replace(b"bare LF follows\n", b"bare LF follows\r\n").replace(b"\r\n", b"\n") \
        .replace(b"\n", b"\r\n") + b"\r\n"
    with FaultySmtpServer(extensions=ways) as server:
        [reply] = run(send_all(config_for(server), ("reader@x.test", to_wire(message))))
        [received] = server.messages
        assert (server.pipelined_mails, server.chunked_messages) == (int("PIPELINING" in ways), int("CHUNKING" in ways))
    assert reply == "250 2.0.0 Ok: queued as M1"
    assert received.data == expected
    assert (received.mail_from, received.rcpt_tos) == (SENDER, ("reader@x.test",))
    body = received.data.split(b"Content-Transfer-Encoding: base64\r\n\r\n")[1].split(b"--b--")[0]
    assert base64.b64decode(body) == chinese


@each_way
def test_twenty_messages_over_a_pool_of_three_open_three_connections(ways: tuple[str, ...]) -> None:
    async def send_twenty(config: SmtpConfig) -> list[str]:
        async with SmtpPool(config) as pool:
            return await asyncio.gather(*(pool.send(SENDER, f"r{n}@x.test", SMALL) for n in range(20)))

    with FaultySmtpServer(extensions=ways) as server:
        replies = run(send_twenty(config_for(server, pool_size=3)))
        assert server.connections_opened == 3
        messages = server.messages
    assert all(reply.startswith("250 ") for reply in replies)
    assert sorted(m.rcpt_tos[0] for m in messages) == sorted(f"r{n}@x.test" for n in range(20))
    assert {m.connection for m in messages} == {1, 2, 3}


@each_way
def test_temporary_rcpt_refusal_is_transient_then_succeeds_on_the_same_connection(ways: tuple[str, ...]) -> None:
    with FaultySmtpServer(rcpt_replies={"later@x.test": ["451 4.3.0 try later", None]}, extensions=ways) as server:
        first, second = run(send_all(config_for(server), ("later@x.test", SMALL), ("later@x.test", SMALL)))
        assert server.rcpt_attempts == {"later@x.test": 2}
        assert server.connections_opened == 1
        assert len(server.messages) == 1
    assert isinstance(first, TransientDeliveryError)
    assert (first.reply, first.reconnect) == ("451 4.3.0 try later", False)
    assert second == "250 2.0.0 Ok: queued as M1"


@each_way
def test_unknown_mailbox_is_permanent_and_suppressed_and_the_pool_goes_on(ways: tuple[str, ...]) -> None:
    rejected = {"gone@x.test": "550 5.1.1 <gone@x.test>: mailbox unknown",
                "policy@x.test": "550 5.7.1 relaying denied"}
    with FaultySmtpServer(rejected_recipients=rejected, extensions=ways) as server:
        gone, policy, ok = run(send_all(config_for(server), ("gone@x.test", SMALL), ("policy@x.test", SMALL),
                                        ("ok@x.test", SMALL)))
        assert server.connections_opened == 1
    assert isinstance(gone, PermanentDeliveryError) and gone.suppress is True
    assert gone.reply == "550 5.1.1 <gone@x.test>: mailbox unknown"
    assert isinstance(policy, PermanentDeliveryError) and policy.suppress is False
    assert ok == "250 2.0.0 Ok: queued as M1"


@each_way
def test_end_of_data_refusals_are_classified(ways: tuple[str, ...]) -> None:
    replies = {"a@x.test": ["452 4.3.1 insufficient storage", "554 5.6.0 content rejected", None]}
    with FaultySmtpServer(data_replies=replies, extensions=ways) as server:
        busy, refused, ok = run(send_all(config_for(server), *[("a@x.test", SMALL)] * 3))
        assert server.connections_opened == 1
    assert isinstance(busy, TransientDeliveryError) and busy.reply == "452 4.3.1 insufficient storage"
    assert isinstance(refused, PermanentDeliveryError) and refused.suppress is False
    assert ok.startswith("250 ")


@each_way
def test_service_closing_reply_is_transient_and_reconnects(ways: tuple[str, ...]) -> None:
    with FaultySmtpServer(rcpt_replies={"a@x.test": ["421 4.7.0 too busy, closing"]}, extensions=ways) as server:
        closing, ok = run(send_all(config_for(server), ("a@x.test", SMALL), ("a@x.test", SMALL)))
        assert server.connections_opened == 2
    assert isinstance(closing, TransientDeliveryError) and closing.reconnect is True
    assert closing.reply == "421 4.7.0 too busy, closing"
    assert ok.startswith("250 ")


@each_way
def test_sender_refusals(ways: tuple[str, ...]) -> None:
    with FaultySmtpServer(mail_replies=["451 4.3.2 later", "553 5.7.1 sender not allowed", None],
                          extensions=ways) as server:
        later, stopped, ok = run(send_all(config_for(server), *[("a@x.test", SMALL)] * 3))
    assert isinstance(later, TransientDeliveryError) and later.reply == "451 4.3.2 later"
    assert not isinstance(later, SenderThrottledError)
    assert isinstance(stopped, ChannelStoppedError) and stopped.reply == "553 5.7.1 sender not allowed"
    assert ok.startswith("250 ")


@pytest.mark.parametrize(("fault", "message_bytes"), [
    ("drop_on_data", 1_000),
    # The body must outgrow the socket buffers for the client to see the reset before its final '.'.
    ("drop_in_data", 12_000_000),
])
@each_way
def test_connection_dropped_during_data_is_transient_and_the_pool_recovers(fault: str, message_bytes: int,
                                                                           ways: tuple[str, ...]) -> None:
    big = to_wire((b"y" * 70 + b"\n") * (message_bytes // 71))
    with FaultySmtpServer(**{fault: {"drop@x.test": 1}}, extensions=ways) as server:
        dropped, ok = run(send_all(config_for(server), ("drop@x.test", big), ("ok@x.test", SMALL)))
        assert server.connections_opened == 2
        assert [m.rcpt_tos for m in server.messages] == [("ok@x.test",)]
    if "CHUNKING" in ways and fault == "drop_on_data":
        # The small message went out whole with its envelope (one write): the client cannot tell a relay
        # that dropped it unread from one that took it, so the row is uncertain, as after a final '.'.
        assert isinstance(dropped, UncertainDeliveryError)
    else:
        assert isinstance(dropped, TransientDeliveryError) and dropped.reconnect is True
    assert ok.startswith("250 ")


@each_way
def test_reply_withheld_after_the_dot_is_uncertain(ways: tuple[str, ...]) -> None:
    with FaultySmtpServer(withhold_after_dot={"slow@x.test": 2.0}, extensions=ways) as server:
        withheld, ok = run(send_all(config_for(server, timeout_seconds=0.5),
                                    ("slow@x.test", SMALL), ("ok@x.test", SMALL)))
        assert [m.rcpt_tos for m in server.withheld] == [("slow@x.test",)]
        assert server.connections_opened == 2
    assert isinstance(withheld, UncertainDeliveryError)
    assert ok.startswith("250 ")


def test_refused_authentication_stops_the_channel_without_revealing_the_password() -> None:
    with FaultySmtpServer(username="sender", password="right-password") as server:
        config = config_for(server, username="sender", password=PASSWORD)
        with pytest.raises(ChannelStoppedError) as caught:
            run(SmtpPool(config).open())
        assert server.auth_attempts >= 1
    error = caught.value
    assert error.reply is not None and error.reply.startswith("535 5.7.8")
    for text in (str(error), repr(error), str(error.__cause__), error.reply, repr(config)):
        assert PASSWORD not in text


def test_authenticated_session_delivers() -> None:
    with FaultySmtpServer(username="sender", password=PASSWORD) as server:
        [reply] = run(send_all(config_for(server, username="sender", password=PASSWORD), ("a@x.test", SMALL)))
        assert server.auth_attempts == 1
    assert reply.startswith("250 ")


def test_unreachable_relay_stops_the_channel() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = SmtpConfig(host="127.0.0.1", port=port, security="plain", username=None, password=None,
                        timeout_seconds=1.0, pool_size=2)
    with pytest.raises(ChannelStoppedError, match="cannot reach relay"):
        run(SmtpPool(config).open())
    with pytest.raises(ChannelStoppedError):
        run(check_relay(config))


def test_refusing_greeting_stops_the_channel() -> None:
    with FaultySmtpServer(greeting="554 5.3.2 no service here") as server, \
            pytest.raises(ChannelStoppedError) as caught:
        run(check_relay(config_for(server)))
    assert caught.value.reply == "554 5.3.2 no service here"


def test_busy_greeting_is_transient_for_the_check_and_stops_a_pool_that_opens_nothing() -> None:
    with FaultySmtpServer(greeting="421 4.3.2 too many connections") as server:
        with pytest.raises(TransientDeliveryError) as caught:
            run(check_relay(config_for(server)))
        with pytest.raises(ChannelStoppedError, match="accepted no connection") as stopped:
            run(SmtpPool(config_for(server, pool_size=3)).open())
        assert server.connections_opened == 2   # the pool's first connection was refused: no others tried
    assert (caught.value.reply, caught.value.reconnect) == ("421 4.3.2 too many connections", True)
    assert stopped.value.reply == "421 4.3.2 too many connections"


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_tls_sessions_verify_the_certificate_and_deliver(tls: str) -> None:
    security = "starttls" if tls == "starttls" else "tls"
    with FaultySmtpServer(tls=tls, username="sender", password=PASSWORD) as server:
        config = config_for(server, security=security, username="sender", password=PASSWORD,
                            cafile=str(server.ca_path))
        summary = run(check_relay(config))
        [reply] = run(send_all(config, ("a@x.test", SMALL)))
        untrusted = config_for(server, security=security, username="sender", password=PASSWORD)
        with pytest.raises(ChannelStoppedError, match="TLS with relay .* failed: SSLCertVerificationError"):
            run(check_relay(untrusted))
    assert "TLSv1" in summary and "authenticated as sender" in summary
    assert reply.startswith("250 ")


def test_slow_server_within_the_timeout_still_delivers() -> None:
    with FaultySmtpServer(command_delay_seconds=0.05) as server:
        replies = run(send_all(config_for(server, timeout_seconds=1.0), *[("a@x.test", SMALL)] * 2))
    assert all(reply.startswith("250 ") for reply in replies)


@each_way
def test_one_recipient_failing_does_not_break_the_pool_for_the_others(ways: tuple[str, ...]) -> None:
    async def send_concurrently(config: SmtpConfig) -> list[object]:
        async with SmtpPool(config) as pool:
            return await asyncio.gather(*(pool.send(SENDER, f"r{n}@x.test", SMALL) for n in range(12)),
                                        return_exceptions=True)

    faults = dict(rejected_recipients={"r1@x.test": "550 5.1.1 unknown"},
                  rcpt_replies={"r4@x.test": ["421 4.7.0 closing"]}, drop_on_data={"r7@x.test": 1},
                  data_replies={"r9@x.test": ["451 4.3.0 later"]})
    with FaultySmtpServer(**faults, extensions=ways) as server:
        outcomes = run(send_concurrently(config_for(server, pool_size=3)))
        delivered = sorted(m.rcpt_tos[0] for m in server.messages)
    failed = {f"r{n}@x.test" for n in (1, 4, 7, 9)}
    assert delivered == sorted(f"r{n}@x.test" for n in range(12) if f"r{n}@x.test" not in failed)
    dropped = "UncertainDeliveryError" if "CHUNKING" in ways else "TransientDeliveryError"   # as above
    assert [type(o).__name__ for n, o in enumerate(outcomes) if n in (1, 4, 7, 9)] == [
        "PermanentDeliveryError", "TransientDeliveryError", dropped, "TransientDeliveryError"]


def test_config_refuses_plain_to_a_remote_host_and_hides_the_password() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SmtpConfig(host="smtp.example.com", port=25, security="plain", username=None, password=None,
                   timeout_seconds=1.0, pool_size=1)
    with pytest.raises(ValueError, match="security"):
        SmtpConfig(host="127.0.0.1", port=25, security="ssl", username=None, password=None,
                   timeout_seconds=1.0, pool_size=1)
    config = SmtpConfig(host="::1", port=25, security="plain", username="u", password=PASSWORD,
                        timeout_seconds=1.0, pool_size=1)
    assert PASSWORD not in repr(config)


def write_self_signed(directory: Path, *, dns_names: tuple[str, ...] = (),
                      ips: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """Write a self-signed server certificate (it is its own CA) and its key; return their paths."""
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (dns_names or ips)[0])])
    names = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "self-signed.pem", directory / "self-signed.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_pool_sends_over_the_connections_a_limited_relay_allows() -> None:
    async def send_ten(config: SmtpConfig) -> tuple[int, int, list[str]]:
        pool = SmtpPool(config)
        try:
            opened = await pool.open()
            replies = await asyncio.gather(*(pool.send(SENDER, f"r{n}@x.test", SMALL) for n in range(10)))
            return opened, pool.opened, replies
        finally:
            await pool.close()

    with FaultySmtpServer(max_connections=2) as server:
        opened, kept, replies = run(send_ten(config_for(server, pool_size=5)))
        assert server.refused_connections == 3
        messages = server.messages
    assert opened == kept == 2
    assert all(reply.startswith("250 ") for reply in replies)
    assert sorted(m.rcpt_tos[0] for m in messages) == sorted(f"r{n}@x.test" for n in range(10))
    assert len({m.connection for m in messages}) == 2


def test_a_login_refused_on_a_further_connection_stops_the_channel_as_on_the_first() -> None:
    """Only a relay turning extra connections away at the greeting is left out; AUTH refused on connection
    2 (an account locked mid-run) is no connection limit and must not pass silently."""
    with FaultySmtpServer(username="sender", password=PASSWORD, accepted_logins=1) as server:
        with pytest.raises(ChannelStoppedError, match="refused authentication"):
            run(SmtpPool(config_for(server, username="sender", password=PASSWORD, pool_size=3)).open())
        assert server.connections_opened == 3 and server.messages == []


@each_way
def test_rate_limit_on_the_sender_at_mail_from_is_sender_throttled(ways: tuple[str, ...]) -> None:
    limit = "450 4.7.1 Error: too much mail from 127.0.0.1"
    with FaultySmtpServer(mail_replies=[limit, "421 4.7.0 closing", None], extensions=ways) as server:
        throttled, closing, ok = run(send_all(config_for(server), *[("a@x.test", SMALL)] * 3))
        assert server.rcpt_attempts == {"a@x.test": 1}
    assert isinstance(throttled, SenderThrottledError) and throttled.reply == limit
    assert isinstance(throttled, TransientDeliveryError) and throttled.reconnect is False
    assert type(closing) is TransientDeliveryError and closing.reconnect is True
    assert ok.startswith("250 ")


def test_wrong_password_is_tried_once_per_mechanism_on_one_connection() -> None:
    with FaultySmtpServer(username="sender", password="right-password") as server:
        with pytest.raises(ChannelStoppedError, match="refused authentication"):
            run(SmtpPool(config_for(server, username="sender", password=PASSWORD, pool_size=5)).open())
        assert server.connections_opened == 1
        assert 1 <= server.auth_attempts <= 2     # the server offers PLAIN and LOGIN


def test_a_self_signed_certificate_is_refused_with_openssl_reason_and_trusted_through_the_ca_file(
        tmp_path: Path) -> None:
    cert_path, key_path = write_self_signed(tmp_path, ips=("127.0.0.1",))
    with FaultySmtpServer(tls="starttls", certificate=(cert_path, key_path)) as server:
        with pytest.raises(ChannelStoppedError) as caught:
            run(check_relay(config_for(server, security="starttls")))
        [reply] = run(send_all(config_for(server, security="starttls", cafile=str(cert_path)), ("a@x.test", SMALL)))
    assert "SSLCertVerificationError: self-signed certificate (to trust a private CA, name its certificate in " \
        "smtp.ca_file)" in str(caught.value)
    assert reply.startswith("250 ")


def test_a_certificate_for_another_name_says_ip_address_mismatch(tmp_path: Path) -> None:
    cert_path, key_path = write_self_signed(tmp_path, dns_names=("mail.example.org",))
    with FaultySmtpServer(tls="starttls", certificate=(cert_path, key_path)) as server, \
            pytest.raises(ChannelStoppedError) as caught:
        run(check_relay(config_for(server, security="starttls", cafile=str(cert_path))))
    assert "SSLCertVerificationError: IP address mismatch, certificate is not valid for '127.0.0.1'" \
        in str(caught.value)
    assert "ca_file" not in str(caught.value)


def test_starttls_against_an_implicit_tls_port_says_so_without_waiting_the_command_timeout() -> None:
    with FaultySmtpServer(tls="implicit") as server:
        config = config_for(server, security="starttls", timeout_seconds=60.0, greeting_timeout_seconds=0.5)
        with pytest.raises(ChannelStoppedError) as caught:
            run(SmtpPool(config).open())    # bounded by TEST_SECONDS, far below the 60 s timeout
    assert "did not answer the greeting within 0.5 s: is this an implicit-TLS port? try smtp.security: tls" \
        in str(caught.value)


def test_implicit_tls_against_a_starttls_port_says_so() -> None:
    with FaultySmtpServer(tls="starttls") as server, \
            pytest.raises(ChannelStoppedError, match="is this a STARTTLS port. try smtp.security: starttls"):
        run(check_relay(config_for(server, security="tls", cafile=str(server.ca_path))))


@pytest.mark.parametrize("words", ["[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)",
                                   "[SSL: RECORD_LAYER_FAILURE] record layer failure (_ssl.c:1010)",
                                   "[SSL: PACKET_LENGTH_TOO_LONG] packet length too long (_ssl.c:1010)",
                                   "wrong version number"])
def test_every_openssl_wording_of_a_plain_text_answer_to_tls_gets_the_starttls_hint(words: str) -> None:
    """OpenSSL 1.1/3.0 and 3.2+ word a "220 " greeting read as a TLS record differently."""
    config = SmtpConfig(host="127.0.0.1", port=465, security="tls", username=None, password=None,
                        timeout_seconds=2.0, pool_size=1)
    stopped = smtp_module._tls_failure(config, ssl.SSLError(1, words))
    assert str(stopped).endswith("is this a STARTTLS port? try smtp.security: starttls")
    other = smtp_module._tls_failure(config, ssl.SSLError(1, "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] x"))
    assert "STARTTLS port" not in str(other)


def test_the_ehlo_name_is_the_configured_one_or_the_machines_fqdn() -> None:
    with FaultySmtpServer() as server:
        run(send_all(config_for(server, local_hostname="mail.sender.test"), ("a@x.test", SMALL)))
        run(send_all(config_for(server, local_hostname=None), ("a@x.test", SMALL)))
        names = server.ehlo_names
    assert names == ["mail.sender.test", socket.getfqdn()]
    with pytest.raises(ValueError, match="ehlo_name"):
        config_for(server, local_hostname="bad name\r\nMAIL FROM:<x@y>")


@pytest.mark.parametrize(("name", "problem"), [("mail.example.org", None), ("[192.0.2.1]", None),
                                              ("[IPv6:2001:db8::1]", None),
                                              ("192.0.2.1", "write an IP address in brackets"),
                                              ("[2001:db8::1]", "invalid address literal"),
                                              ("mail.example.org.", "invalid host name"),
                                              ("bad name", "invalid host name")])
def test_the_transport_checks_the_ehlo_name_as_settings_do(name: str, problem: str | None) -> None:
    """One check of the EHLO name (distributor.validate.addresses), in settings and in SmtpConfig alike."""
    config = dict(host="127.0.0.1", port=25, security="plain", username=None, password=None,
                  timeout_seconds=2.0, pool_size=1, local_hostname=name)
    if problem is None:
        assert SmtpConfig(**config).local_hostname == name      # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError, match=f"ehlo_name: {problem}"):
            SmtpConfig(**config)                                  # type: ignore[arg-type]


@pytest.mark.parametrize("recipient", ["a@x.test> NOTIFY=SUCCESS ORCPT=rfc822;v@evil.test",
                                       "a@x.test>\r\nRCPT TO:<v@evil.test", "读者@x.test"])
def test_a_recipient_that_would_change_the_command_is_refused_before_the_relay_sees_it(recipient: str) -> None:
    with FaultySmtpServer() as server:
        refused, ok = run(send_all(config_for(server), (recipient, SMALL), ("ok@x.test", SMALL)))
        assert server.rcpt_attempts == {"ok@x.test": 1}
    assert isinstance(refused, PermanentDeliveryError) and "cannot be sent" in str(refused)
    assert ok.startswith("250 ")


@each_way
def test_a_multiline_reply_and_a_reply_before_the_command_are_read_whole(ways: tuple[str, ...]) -> None:
    replies = {"a@x.test": ["250-2.0.0 first line\r\n250-second line\r\n250 2.0.0 Ok: queued as X"]}
    with FaultySmtpServer(data_replies=replies, extensions=ways) as server:
        [reply] = run(send_all(config_for(server), ("a@x.test", SMALL)))
    assert reply == "250 2.0.0 first line\nsecond line\n2.0.0 Ok: queued as X"


def test_the_transport_uses_no_private_name_of_aiosmtplib() -> None:
    """Only our own underscored names: aiosmtplib's private ones (e.g. `_drain_helper`) may change in any release."""
    source = Path(smtp_module.__file__).read_text(encoding="utf-8")
    own = {node.name for node in ast.walk(ast.parse(source))
           if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))}
    own |= {target.attr for node in ast.walk(ast.parse(source)) if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in getattr(node, "targets", [getattr(node, "target", None)])
            if isinstance(target, ast.Attribute)}
    private = {node.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Attribute)
               and node.attr.startswith("_") and not node.attr.startswith("__") and node.attr not in own}
    assert private == set()


CHUNKING = WAYS["chunking"]


async def send_concurrently_counting(config: SmtpConfig, recipients: list[str], *, in_hand: int,
                                     refuse_hand_over: set[str] = frozenset()) -> tuple[list[object], list[str], int]:
    """Send to `recipients` with `in_hand` sends at a time over one pool, as the row run does; return each
    outcome (or error), the order of the hand-overs, and how many envelopes went ahead."""
    handed: list[str] = []

    class NotOurs(Exception):
        pass

    async with SmtpPool(config) as pool:
        queue = list(recipients)
        outcomes: dict[str, object] = {}

        async def worker() -> None:
            while queue:
                recipient = queue.pop(0)

                async def hand_over(recipient: str = recipient) -> None:
                    if recipient in refuse_hand_over:
                        raise NotOurs(recipient)
                    handed.append(recipient)

                try:
                    outcomes[recipient] = await pool.send(SENDER, recipient, SMALL, hand_over)
                except Exception as exc:  # noqa: BLE001 - the outcome under test
                    outcomes[recipient] = exc

        await asyncio.gather(*(worker() for _ in range(in_hand)))
        return [outcomes[r] for r in recipients], handed, pool.sent_ahead


def test_with_chunking_a_waiting_send_goes_behind_the_message_in_flight_and_each_arrives_once() -> None:
    recipients = [f"r{n}@x.test" for n in range(30)]
    with FaultySmtpServer(extensions=CHUNKING) as server:
        outcomes, handed, ahead = run(send_concurrently_counting(config_for(server, pool_size=2), recipients,
                                                                 in_hand=4))
        received = sorted(m.rcpt_tos[0] for m in server.messages)
        assert server.connections_opened == 2
    assert all(isinstance(outcome, str) and outcome.startswith("250 ") for outcome in outcomes)
    assert received == sorted(recipients) and sorted(handed) == sorted(recipients)
    assert ahead >= 10                  # most envelopes went ahead, behind the message before them


def test_an_envelope_sent_ahead_that_fails_is_reset_and_the_send_made_the_plain_way() -> None:
    recipients = [f"r{n}@x.test" for n in range(16)]
    faults = dict(rejected_recipients={"r5@x.test": "550 5.1.1 unknown"},
                  data_replies={"r8@x.test": ["554 5.6.0 content rejected"]},
                  rcpt_replies={"r11@x.test": ["451 4.3.0 later", "451 4.3.0 later"]})    # ahead, then plain
    with FaultySmtpServer(**faults, extensions=CHUNKING) as server:
        outcomes, handed, _ = run(send_concurrently_counting(config_for(server, pool_size=2), recipients,
                                                             in_hand=4, refuse_hand_over={"r13@x.test"}))
        received = sorted(m.rcpt_tos[0] for m in server.messages)
    by_recipient = dict(zip(recipients, outcomes, strict=True))
    assert isinstance(by_recipient["r5@x.test"], PermanentDeliveryError) and by_recipient["r5@x.test"].suppress
    assert isinstance(by_recipient["r8@x.test"], PermanentDeliveryError)
    assert isinstance(by_recipient["r11@x.test"], TransientDeliveryError)
    assert type(by_recipient["r13@x.test"]).__name__ == "NotOurs"
    failed = {"r5@x.test", "r8@x.test", "r11@x.test", "r13@x.test"}
    assert received == sorted(set(recipients) - failed)       # nobody twice, nobody lost behind a failure
    assert "r13@x.test" not in handed and len(handed) == len(set(handed))
    assert all(isinstance(by_recipient[r], str) for r in set(recipients) - failed)


def test_a_connection_lost_after_a_message_leaves_only_that_message_uncertain() -> None:
    recipients = [f"r{n}@x.test" for n in range(10)]
    with FaultySmtpServer(withhold_after_dot={"r4@x.test": 2.0}, extensions=CHUNKING) as server:
        outcomes, handed, _ = run(send_concurrently_counting(config_for(server, pool_size=1, timeout_seconds=0.5),
                                                             recipients, in_hand=2))
        received = sorted(m.rcpt_tos[0] for m in server.messages)
    by_recipient = dict(zip(recipients, outcomes, strict=True))
    assert isinstance(by_recipient["r4@x.test"], UncertainDeliveryError)
    # The envelope behind it went for nothing: that send was made again on a new connection, once.
    assert received == sorted(set(recipients) - {"r4@x.test"})
    assert all(isinstance(by_recipient[r], str) for r in set(recipients) - {"r4@x.test"})
    assert sorted(handed) == sorted(recipients)
