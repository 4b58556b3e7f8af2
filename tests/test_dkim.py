"""DKIM signatures made in process, checked by dkimpy's verifier on the bytes the SMTP test server
received, against keys published on a real DNS server (dnsmasq on loopback)."""
from __future__ import annotations

import re
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from distributor.channels.mail.dkim import DkimKey, DkimSigner, load_keys
from distributor.errors import SettingsError
from distributor.settings import DkimSettings, load_settings

from .conftest import EXAMPLE
from .dns_server import dns_server
from .publish_helpers import cli, configure, run_publish
from .smtp_server import FaultySmtpServer
from .test_signup import post_signup, serving, wait_for, write_settings

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")

READERS = ["ana@example.net", "bo@example.net"]


def write_key(path: Path, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def dkim_block(rsa_path: Path, ed_path: Path | None = None) -> str:
    block = f"  dkim:\n    domain: example.org\n    selector: s2026\n    private_key_file: {rsa_path}\n"
    if ed_path is not None:
        block += f"    ed25519_selector: e2026\n    ed25519_key_file: {ed_path}\n"
    return block


def record(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, selector: str) -> str:
    algorithm = "ed25519-sha256" if isinstance(key, ed25519.Ed25519PrivateKey) else "rsa-sha256"
    return DkimKey(selector, algorithm, key).public_record()     # type: ignore[arg-type]


def signature_tags(message: bytes, index: int = 0) -> dict[str, str]:
    headers = [value for name, value in dkim.rfc822_parse(message)[0] if name.lower() == b"dkim-signature"]
    value = re.sub(rb"\s+", b"", headers[index]).decode("ascii")
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


def publish_signed(tmp_path: Path, server: FaultySmtpServer, rsa_key: rsa.RSAPrivateKey,
                   ed_key: ed25519.Ed25519PrivateKey | None = None) -> list[bytes]:
    rsa_path = write_key(tmp_path / "dkim.pem", rsa_key)
    ed_path = write_key(tmp_path / "dkim-ed25519.pem", ed_key) if ed_key is not None else None
    settings = configure(tmp_path, server, READERS, smtp_extra=dkim_block(rsa_path, ed_path))
    status, _, err = run_publish(settings)
    assert status == 0, err
    return [message.data for message in server.messages]


def test_each_mail_verifies_on_the_received_bytes_with_both_unsubscribe_headers_signed(
        tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    with FaultySmtpServer() as server:
        received = publish_signed(tmp_path, server, rsa_key)
    assert len(received) == len(READERS)
    with dns_server(txt={"s2026._domainkey.example.org": record(rsa_key, "s2026")}) as dns:
        for data in received:
            assert dkim.verify(data, dnsfunc=dns.dkimpy_dnsfunc), data[:400]
    tags = signature_tags(received[0])
    signed = tags["h"].lower().split(":")  # signature_tags drops the whitespace
    assert {"list-unsubscribe", "list-unsubscribe-post", "to", "subject", "date", "message-id",
            "list-id", "mime-version", "content-type"} <= set(signed)
    assert signed.count("from") == 2            # oversigned: a From added on the way breaks it
    assert (tags["a"], tags["c"], tags["d"], tags["s"]) == ("rsa-sha256", "relaxed/simple", "example.org", "s2026")
    # The body differs per reader (name, unsubscribe link), and so do the body hash and the signature.
    other = signature_tags(received[1])
    assert tags["bh"] != other["bh"] and tags["b"] != other["b"]


def test_a_changed_mail_or_a_different_published_key_fails(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    with FaultySmtpServer() as server:
        data = publish_signed(tmp_path, server, rsa_key)[0]
    head, _, body = data.partition(b"\r\n\r\n")
    changed_body = head + b"\r\n\r\n" + body.replace(b"\r\n", b"\r\nA", 1)
    changed_subject = re.sub(rb"\r\nSubject: ", b"\r\nSubject: Re: ", data, count=1)
    added_from = head + b"\r\nFrom: someone@example.com\r\n\r\n" + body
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with dns_server(txt={"s2026._domainkey.example.org": record(rsa_key, "s2026"),
                         "s2026._domainkey.example.com": record(other_key, "s2026")}) as dns:
        assert dkim.verify(data, dnsfunc=dns.dkimpy_dnsfunc)
        for broken in (changed_body, changed_subject, added_from):
            assert not dkim.verify(broken, dnsfunc=dns.dkimpy_dnsfunc)
    with dns_server(txt={"s2026._domainkey.example.org": record(other_key, "s2026")}) as dns:
        assert not dkim.verify(data, dnsfunc=dns.dkimpy_dnsfunc)


def test_an_ed25519_key_adds_a_second_signature_that_verifies(tmp_path: Path, rsa_key: rsa.RSAPrivateKey,
                                                             ed_key: ed25519.Ed25519PrivateKey) -> None:
    with FaultySmtpServer() as server:
        data = publish_signed(tmp_path, server, rsa_key, ed_key)[0]
    assert data.count(b"DKIM-Signature:") == 2
    assert signature_tags(data, 1)["a"] == "ed25519-sha256"
    with dns_server(txt={"s2026._domainkey.example.org": record(rsa_key, "s2026"),
                         "e2026._domainkey.example.org": record(ed_key, "e2026")}) as dns:
        verifier = dkim.DKIM(data)
        assert verifier.verify(idx=0, dnsfunc=dns.dkimpy_dnsfunc)
        assert verifier.verify(idx=1, dnsfunc=dns.dkimpy_dnsfunc)


def test_a_whole_message_signed_after_the_fact_verifies(rsa_key: rsa.RSAPrivateKey) -> None:
    message = (b"From: news@example.org\r\nTo: ana@example.net\r\nSubject: Confirm\r\n"
               b"Date: Wed, 02 Dec 2026 10:00:00 +0000\r\nMessage-ID: <c.1@example.org>\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nClick the link.\r\n\r\n\r\n")
    signed = DkimSigner("example.org", [DkimKey("s2026", "rsa-sha256", rsa_key)]).sign_message(message)
    assert signed.endswith(message)
    with dns_server(txt={"s2026._domainkey.example.org": record(rsa_key, "s2026")}) as dns:
        assert dkim.verify(signed, dnsfunc=dns.dkimpy_dnsfunc)


@pytest.mark.parametrize(("make", "expected"), [
    (lambda tmp, key: write_key(tmp / "short.pem", rsa.generate_private_key(public_exponent=65537,
                                                                           key_size=1024)),
     "smtp.dkim.private_key_file: an RSA key of 1024 bits; receivers want 2048 at least"),
    (lambda tmp, key: write_key(tmp / "ed.pem", ed25519.Ed25519PrivateKey.generate()),
     "smtp.dkim.private_key_file: an RSA private key is needed here"),
    (lambda tmp, key: (tmp / "garbage.pem").write_text("not a key") and tmp / "garbage.pem",
     "smtp.dkim.private_key_file: not an unencrypted PEM private key (ValueError)"),
    (lambda tmp, key: tmp / "missing.pem",
     "smtp.dkim.private_key_file: {tmp}/missing.pem cannot be read: No such file or directory"),
    (lambda tmp, key: tmp,
     "smtp.dkim.private_key_file: {tmp} is not a regular file of at most 64 KB"),
])
def test_a_bad_key_file_is_one_line_naming_the_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, make,
                                                   expected: str) -> None:
    path = make(tmp_path, rsa_key)
    with pytest.raises(SettingsError) as raised:
        load_keys(DkimSettings(domain="example.org", selector="s2026", private_key_file=str(path)))
    assert str(raised.value) == expected.format(tmp=tmp_path)


def test_the_key_may_come_from_the_environment_and_is_never_printed(
        tmp_path: Path, rsa_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    pem = write_key(tmp_path / "k.pem", rsa_key).read_text()
    with pytest.raises(SettingsError, match=r"^smtp.dkim.private_key_env: set the environment variable DKIM_KEY"):
        load_keys(DkimSettings(domain="example.org", selector="s2026", private_key_env="DKIM_KEY"))
    monkeypatch.setenv("DKIM_KEY", pem)
    (key,) = load_keys(DkimSettings(domain="example.org", selector="s2026", private_key_env="DKIM_KEY"))
    assert key.public_p() in record(rsa_key, "s2026")
    assert "PRIVATE" not in repr(key)
    with pytest.raises(SettingsError, match="set exactly one of the two"):
        load_keys(DkimSettings(domain="example.org", selector="s2026", private_key_env="DKIM_KEY",
                               private_key_file=str(tmp_path / "k.pem")))


def test_publish_refuses_an_unaligned_domain_and_a_missing_key_variable_before_sending(tmp_path: Path) -> None:
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, READERS, smtp_extra=(
            "  dkim:\n    domain: example.com\n    selector: s2026\n    private_key_env: DKIM_TEST_KEY_UNSET\n"))
        load_settings(settings)
        result = cli(settings, "publish", str(EXAMPLE), "--yes")
        assert not server.messages
    assert result.returncode != 0
    assert "smtp.dkim.domain 'example.com' is not the From domain 'example.org' nor a parent of it" in result.stdout \
        + result.stderr
    assert "DKIM_TEST_KEY_UNSET" in result.stdout + result.stderr


def test_the_signup_confirmation_mail_is_signed_too(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    key_file = write_key(tmp_path / "dkim.pem", rsa_key)
    with FaultySmtpServer() as server:
        settings = write_settings(tmp_path, server.port)
        settings.write_text(settings.read_text(encoding="utf-8").replace(
            "timeout_seconds: 2.0}", f"timeout_seconds: 2.0, dkim: {{domain: example.org, selector: s2026, "
                                     f"private_key_file: {key_file}}}}}"), encoding="utf-8")
        with serving(load_settings(settings)) as port:
            assert post_signup(port, "new@example.net")[0] == 200
            wait_for(lambda: len(server.messages) == 1, "the confirmation mail")
    data = server.messages[0].data
    assert data.startswith(b"DKIM-Signature: ")
    with dns_server(txt={"s2026._domainkey.example.org": record(rsa_key, "s2026")}) as dns:
        assert dkim.verify(data, dnsfunc=dns.dkimpy_dnsfunc)
