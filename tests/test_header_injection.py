"""Header and SMTP injection, tried against a real SMTP server on 127.0.0.1 through the real CLI: every
address and header value from settings, `--to` and the subscriber file is refused before anything is
sent (exit 2, one line naming where it came from), and the server receives nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import EXAMPLE
from .publish_helpers import cli, fast_retry_and_ledger, received_by
from .smtp_server import FaultySmtpServer

EMAIL_DEFAULTS = {
    "from_address": "news@example.org",
    "from_name": "Example Weekly",
    "reply_to": "editors@example.org",
    "return_path": "bounces@example.org",
    "list_id": "weekly.example.org",
    "unsubscribe_mailto": "unsubscribe@example.org",
}


def write_settings(tmp_path: Path, server: FaultySmtpServer, addresses: list[str], *, email: dict | None = None,
                   extra: str = "") -> Path:
    """Settings that publish the email channel to `server`, with `email` keys replacing the defaults (each
    value is written as a YAML double-quoted string, so "\\r\\n" in it is a real CR LF)."""
    subscribers = tmp_path / "subscribers.csv"
    subscribers.write_text("email\n" + "".join(f"{address}\n" for address in addresses), encoding="utf-8")
    keys = "".join(f'    {key}: "{value}"\n' for key, value in {**EMAIL_DEFAULTS, **(email or {})}.items())
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"""channels:
  email:
    subscribers: {subscribers}
{keys}  wechat: {{enabled: false}}
  text: {{enabled: false}}
smtp:
  host: 127.0.0.1
  port: {server.port}
  security: plain
  timeout_seconds: 2.0
{fast_retry_and_ledger(tmp_path)}
{extra}""", encoding="utf-8")
    return settings


BCC = "\\r\\nBcc: victim@evil.example"
SETTINGS_CASES = {
    "CR LF in unsubscribe_mailto adds a Bcc": ({"unsubscribe_mailto": "unsubscribe@example.org" + BCC}, "",
                                               "channels.email.unsubscribe_mailto: holds a control character"),
    "CR LF in return_path adds a recipient": ({"return_path": "bounces@example.org\\r\\nRCPT TO:<victim@evil.example>"},
                                              "", "channels.email.return_path: holds a control character"),
    "a from_address that is no address": ({"from_address": "not an address"}, "",
                                          "channels.email.from_address: invalid address 'not an address'"),
    "an SMTP parameter after return_path": ({"return_path": "<bounces@example.org> NOTIFY=SUCCESS"}, "",
                                            "channels.email.return_path: invalid address"),
    "two addresses in reply_to": ({"reply_to": "editors@example.org, victim@evil.example"}, "",
                                  "channels.email.reply_to: invalid address"),
    "a non-ASCII return_path": ({"return_path": "bounces@例子.example"}, "",
                                "channels.email.return_path: non-ASCII address 'bounces@例子.example': "
                                "SMTPUTF8 is not supported"),
    "a mailto URL for unsubscribe_mailto": ({"unsubscribe_mailto": "mailto:unsubscribe@example.org"}, "",
                                            "channels.email.unsubscribe_mailto: invalid address"),
    "angle brackets in list_id": ({"list_id": "<weekly.example.org>"}, "", "channels.email.list_id: invalid list id"),
    "CR LF in schedule.operator_email": ({}, 'schedule:\n  operator_email: "ops@example.org' + BCC + '"\n',
                                         "schedule.operator_email: holds a control character"),
    "CR LF in site.name": ({}, 'site:\n  name: "Weekly' + BCC + '"\n', "site.name: holds a control character"),
}


@pytest.mark.parametrize("name", SETTINGS_CASES)
def test_an_unsafe_settings_value_is_refused_before_any_connection(tmp_path: Path, name: str) -> None:
    email, extra, expected = SETTINGS_CASES[name]
    with FaultySmtpServer() as server:
        settings = write_settings(tmp_path, server, ["reader@example.org"], email=email, extra=extra)
        result = cli(settings, "publish", str(EXAMPLE), "--yes")
        assert result.returncode == 2, result.stdout + result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"distributor: error: {settings}: {expected}"), line
        assert server.connections_opened == 0 and server.messages == []


TO_CASES = {
    "two addresses": ("a@example.org, victim@evil.example", "invalid address 'a@example.org, victim@evil.example'"),
    "DSN parameters after the address": ("<t@example.org> NOTIFY=SUCCESS ORCPT=rfc822;t@example.org",
                                         "invalid address '<t@example.org> NOTIFY=SUCCESS"),
    "not an address": ("not an address", "invalid address 'not an address'; give one address as local@domain"),
    "a display name": ("Ann <ann@example.org>", "invalid address 'Ann <ann@example.org>'"),
    "CR LF and a second command": ("t@example.org\r\nRCPT TO:<victim@evil.example>", "invalid address 't@example.org"),
    "non-ASCII": ("zoë@example.org", "non-ASCII address 'zoë@example.org': SMTPUTF8 is not supported"),
}


@pytest.mark.parametrize("name", TO_CASES)
def test_an_unsafe_test_copy_address_is_refused_before_any_connection(tmp_path: Path, name: str) -> None:
    value, expected = TO_CASES[name]
    with FaultySmtpServer() as server:
        settings = write_settings(tmp_path, server, ["reader@example.org"])
        result = cli(settings, "publish", str(EXAMPLE), "--to", value, "--yes")
        assert result.returncode == 2, result.stdout + result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"distributor: error: --to: {expected}"), line
        assert server.connections_opened == 0 and server.messages == []


def test_subscriber_rows_that_are_not_one_plain_address_are_never_mailed(tmp_path: Path) -> None:
    hostile = ['"a@example.org, victim@evil.example"', '"<t@example.org> NOTIFY=SUCCESS"', ".dot@example.org",
               "dot.@example.org", '"Ann <ann@example.org>"']
    good = ["one@example.org", "two@example.org"]
    with FaultySmtpServer() as server:
        settings = write_settings(tmp_path, server, [good[0], *hostile, good[1]])
        result = cli(settings, "publish", str(EXAMPLE), "--yes")
        assert received_by(server) == {address: 1 for address in good}, result.stdout + result.stderr
    for line in range(3, 3 + len(hostile)):
        assert f"subscribers.csv:{line}: invalid address" in result.stdout + result.stderr
