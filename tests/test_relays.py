"""Several relays (`smtp.relays`): mail routed by recipient domain, each relay with its own pool, and a relay
that stops holding back only its own share. Through the real CLI, into aiosmtpd test servers."""
from __future__ import annotations

import sqlite3

import pytest

from distributor.errors import SettingsError
from distributor.settings import load_settings

from .conftest import EXAMPLE
from .publish_helpers import cli, configure, ledger_rows, received_by
from .smtp_server import FaultySmtpServer

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")

READERS = [f"reader{n}@example.org" for n in range(8)] + [f"friend{n}@qq.example" for n in range(5)]


def relays_yaml(default: FaultySmtpServer, routed: FaultySmtpServer, *, routed_extra: str = "") -> str:
    return f"""  relays:
    - {{name: main, host: 127.0.0.1, port: {default.port}, security: plain, pool_size: 2, timeout_seconds: 2}}
    - {{name: qq, host: 127.0.0.1, port: {routed.port}, security: plain, pool_size: 1, timeout_seconds: 2,
        domains: [qq.example]{routed_extra}}}
workers:
  lease_seconds: 3
  relay_pause_seconds: 60
  poll_seconds: 0.1
"""


def test_mail_goes_through_the_relay_of_its_domain(tmp_path):
    with FaultySmtpServer() as main, FaultySmtpServer() as routed:
        settings = configure(tmp_path, main, READERS, smtp_extra=relays_yaml(main, routed))
        result = cli(settings, "publish", str(EXAMPLE), "--channel", "email", "--yes")
        assert result.returncode == 0, result.stdout + result.stderr
        assert received_by(main) == {address: 1 for address in READERS if address.endswith("@example.org")}
        assert received_by(routed) == {address: 1 for address in READERS if address.endswith("@qq.example")}
    assert {row[0] for row in ledger_rows(tmp_path).values()} == {"sent"}


def test_a_relay_that_refuses_the_session_stops_only_its_share(tmp_path):
    with FaultySmtpServer() as main, FaultySmtpServer(greeting="554 5.3.2 no service") as routed:
        settings = configure(tmp_path, main, READERS, smtp_extra=relays_yaml(main, routed))
        result = cli(settings, "publish", str(EXAMPLE), "--channel", "email", "--yes")
        assert result.returncode == 3, result.stdout + result.stderr
        assert "relay qq paused" in result.stdout and "554 5.3.2 no service" in result.stdout
        assert received_by(main) == {address: 1 for address in READERS if address.endswith("@example.org")}
        assert received_by(routed) == {}
    rows = ledger_rows(tmp_path)
    assert {address for address, row in rows.items() if row[0] == "pending"} == \
        {address for address in READERS if address.endswith("@qq.example")}

    # Once the relay is back (and its pause over), publishing again sends the rest, and nothing twice.
    with FaultySmtpServer() as main, FaultySmtpServer() as routed:
        settings = configure(tmp_path, main, READERS, smtp_extra=relays_yaml(main, routed))
        with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:     # the 60 s pause, lifted by hand
            db.execute("DELETE FROM relay_pauses")
        again = cli(settings, "publish", str(EXAMPLE), "--channel", "email", "--yes")
        assert again.returncode == 0, again.stdout + again.stderr
        assert received_by(main) == {}
        assert received_by(routed) == {address: 1 for address in READERS if address.endswith("@qq.example")}


@pytest.mark.parametrize(("relays", "problem"), [
    ("[{name: a, host: h.example}, {name: b, host: i.example}]", "exactly one relay must have no domains"),
    ("[{name: a, domains: [x.example]}, {name: a}]", "'a' names two relays"),
    ("[{name: a}, {name: b, domains: [x.example]}, {name: c, domains: [X.example]}]", "routed to relay 'b'"),
    ("[{host: h.example}]", "smtp.relays[0].name is missing"),
    ("[{name: Bad Name}]", "is not a relay name"),
    ("[{name: a, domains: [not a domain]}]", "smtp.relays[0].domains[0]"),
    ("[{name: a, relays: []}]", "unknown key smtp.relays[0].relays"),
])
def test_bad_relays_are_refused_naming_the_key(tmp_path, relays, problem):
    path = tmp_path / "settings.yaml"
    path.write_text(f"smtp:\n  relays: {relays}\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        load_settings(path)
