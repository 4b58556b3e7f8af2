"""`distributor check --dns` against a real DNS server on loopback (dnsmasq) serving the records of
each case: SPF through includes, the DKIM key of settings or another one, DMARC or none, the MX."""
from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from distributor.channels.mail.dkim import DkimKey
from distributor.channels.mail.dns_check import mail_dns_checks
from distributor.settings import load_settings

from .dns_server import DnsServer, dns_server
from .publish_helpers import cli, configure
from .smtp_server import FaultySmtpServer

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def published(key: rsa.RSAPrivateKey) -> str:
    return DkimKey("s2026", "rsa-sha256", key).public_record()


def settings_for(tmp_path: Path, server: FaultySmtpServer, dns: DnsServer | None, key: rsa.RSAPrivateKey, *,
                 dns_port: int | None = None, timeout: float = 2.0) -> Path:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    port = dns.port if dns is not None else dns_port
    return configure(tmp_path, server, ["ana@example.net"], smtp_extra=(
        f"  dkim:\n    domain: example.org\n    selector: s2026\n    private_key_file: {key_file}\n"),
        extra=f"dns:\n  nameservers: [127.0.0.1]\n  port: {port}\n  timeout_seconds: {timeout}\n")


def lines(output: str) -> dict[str, str]:
    return {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in output.splitlines() if ": " in line}


def test_every_record_in_place_is_ok(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    records = {"example.org": "v=spf1 include:_spf.relay.example.net ~all",
               "_spf.relay.example.net": "v=spf1 ip4:192.0.2.0/24 ip4:127.0.0.0/8 -all",
               "s2026._domainkey.example.org": published(key),
               "_dmarc.example.org": "v=DMARC1; p=reject; adkim=s; rua=mailto:dmarc@example.org"}
    with FaultySmtpServer() as server, dns_server(txt=records, mx={"example.org": [(10, "mx.example.org")]}) as dns:
        result = cli(settings_for(tmp_path, server, dns, key), "check", "--dns")
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result.stdout)
    assert found["smtp"].startswith("relay 127.0.0.1")
    assert found["spf"].startswith("ok, example.org authorises the relay 127.0.0.1")
    assert found["dkim"] == "ok, s2026._domainkey.example.org holds the public half of the rsa key in settings"
    assert found["dmarc"] == "ok, _dmarc.example.org p=reject, SPF and DKIM aligned with From example.org"
    assert found["mx"] == "ok, bounces to example.org go to mx.example.org (10)"


def test_a_wrong_key_a_missing_dmarc_and_an_unauthorised_relay_each_say_what_to_publish(
        tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    records = {"example.org": "v=spf1 ip4:192.0.2.10 -all", "s2026._domainkey.example.org": published(other)}
    with FaultySmtpServer() as server, dns_server(txt=records, a={"example.org": ["192.0.2.10"]}) as dns:
        result = cli(settings_for(tmp_path, server, dns, key), "check", "--dns")
    assert result.returncode == 1
    found = lines(result.stdout)
    assert found["spf"].startswith("example.org does not authorise the relay 127.0.0.1 (fail): add the relay's "
                                   "include: or ip4:/ip6: to \"v=spf1 ip4:192.0.2.10 -all\"")
    assert found["dkim"] == ("the key at s2026._domainkey.example.org is not the public half of the private key "
                             f"in settings: publish \"{published(key)}\"")
    assert found["dmarc"].startswith("no DMARC record at _dmarc.example.org: publish one, e.g. \"v=DMARC1; p=none")
    assert found["mx"].startswith("ok, example.org has no MX; bounces go to its own address")


def test_nothing_published_at_all(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    with FaultySmtpServer() as server, dns_server(txt={"unrelated.example.org": "x"}) as dns:
        checks = mail_dns_checks(load_settings(settings_for(tmp_path, server, dns, key)))
    assert [(check.service, check.healthy) for check in checks] == [
        ("spf", False), ("dkim", False), ("dmarc", False), ("mx", False)]
    assert checks[0].detail.startswith("no SPF record at example.org")
    assert checks[1].detail == f"no key at s2026._domainkey.example.org: publish the TXT record \"{published(key)}\""
    assert checks[3].detail.startswith("example.org has neither MX nor address")


@pytest.mark.parametrize(("records", "a", "verdict"), [
    # redirect=, and an a mechanism with a prefix, resolved through the same server
    ({"example.org": "v=spf1 redirect=_spf.example.org", "_spf.example.org": "v=spf1 a:relay.example.org/8 -all"},
     {"relay.example.org": ["127.9.9.9"]}, "ok"),
    # an mx mechanism: the MX hosts' addresses
    ({"example.org": "v=spf1 mx -all"}, {"mx.example.org": ["127.0.0.1"]}, "ok"),
    # softfail is not authorised
    ({"example.org": "v=spf1 ip4:192.0.2.1 ~all"}, {}, "does not authorise the relay 127.0.0.1 (softfail)"),
    # an include loop runs out of lookups, as receivers' permerror does
    ({"example.org": "v=spf1 include:example.org -all"}, {}, "more than 10 DNS lookups"),
    # two SPF records are an error receivers do not resolve
    ({"example.org": ["v=spf1 -all", "v=spf1 ip4:127.0.0.1 -all"]}, {}, "2 SPF records at example.org"),
    # macros are not guessed at
    ({"example.org": "v=spf1 exists:%{i}.spf.example.org -all"}, {}, "was not evaluated: macros"),
])
def test_spf_is_evaluated_for_the_relay(tmp_path: Path, key: rsa.RSAPrivateKey, records, a, verdict: str) -> None:
    mx = {"example.org": [(5, "mx.example.org")]} if "mx" in str(records) else None
    with FaultySmtpServer() as server, dns_server(txt=records, a=a, mx=mx) as dns:
        spf = mail_dns_checks(load_settings(settings_for(tmp_path, server, dns, key)))[0]
    assert verdict in spf.detail
    assert spf.healthy == (verdict == "ok")


def test_a_resolver_that_does_not_answer_is_one_line_per_record(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    with FaultySmtpServer() as server, dns_server(txt={"example.org": "v=spf1 -all"}) as dns:
        silent_port = dns.port
    # The server is gone: its port answers nothing (or refuses); each check says so in one line.
    with FaultySmtpServer() as server:
        result = cli(settings_for(tmp_path, server, None, key, dns_port=silent_port, timeout=0.3), "check", "--dns")
    assert result.returncode == 1
    found = lines(result.stdout)
    for service in ("spf", "dkim", "dmarc", "mx"):
        assert "127.0.0.1" in found[service] or "cannot be looked up" in found[service], found[service]
    assert len(result.stdout.splitlines()) == 5, result.stdout
