"""The bounce mailbox on a real IMAP server (dovecot, tests/imap_server.py) and in a Maildir: what is
read, what is moved or flagged, what is left, and how each failure reads."""
from __future__ import annotations

import mailbox
from pathlib import Path

import pytest

from distributor.errors import SettingsError, StorageError
from distributor.feedback.mailboxes import PROCESSED_KEYWORD, ImapMailbox, MaildirMailbox
from distributor.settings import ImapSettings

from .imap_server import ImapServer, imap_server

SAMPLES = Path(__file__).parent / "data" / "bounces"
SAMPLE_NAMES = ["postfix_01.txt", "exim_01.txt", "qmail_01.txt", "microsoft_01.txt", "dsn_05.txt", "dumbass_01.txt"]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    with imap_server() as running:
        monkeypatch.setenv("IMAP_TEST_PASSWORD", running.password)
        yield running


def imap_settings(server: ImapServer, **overrides) -> ImapSettings:
    values = {"host": "127.0.0.1", "port": server.port, "security": "starttls", "username": server.username,
              "password_env": "IMAP_TEST_PASSWORD", "ca_file": str(server.ca_file), "timeout_seconds": 10.0}
    values.update(overrides)
    return ImapSettings(**values)


def samples() -> list[bytes]:
    """The sample bounces with CRLF line ends, as a mail server stores and returns them."""
    return [(SAMPLES / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            for name in SAMPLE_NAMES]


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_unread_messages_come_back_whole_and_done_moves_them(server: ImapServer, security: str) -> None:
    server.append(*samples())
    port = server.tls_port if security == "tls" else server.port
    box = ImapMailbox(imap_settings(server, security=security, port=port), max_bytes=1 << 20)
    try:
        unread = list(box.unread(100))
        assert [message.raw for message in unread] == samples()     # the bytes APPENDed, in order
        assert all(message.size == len(message.raw or b"") for message in unread)
        for message in unread[:2]:
            box.done(message.key)
        assert len(list(box.unread(100))) == len(SAMPLE_NAMES) - 2
    finally:
        box.close()
    assert server.count("Processed") == 2 and server.count("INBOX") == len(SAMPLE_NAMES) - 2


def test_the_limit_bounds_a_reading(server: ImapServer) -> None:
    server.append(*samples())
    box = ImapMailbox(imap_settings(server), max_bytes=1 << 20)
    try:
        assert len(list(box.unread(3))) == 3
    finally:
        box.close()


def test_flag_mode_keeps_messages_where_they_are(server: ImapServer) -> None:
    server.append(*samples()[:3])
    box = ImapMailbox(imap_settings(server, processed="flag"), max_bytes=1 << 20)
    try:
        first = next(iter(box.unread(10)))
        box.done(first.key)
        assert [message.key for message in box.unread(10)] != [] and first.key not in \
            [message.key for message in box.unread(10)]
    finally:
        box.close()
    client = server.client()
    try:
        client.select("INBOX")
        status, data = client.uid("SEARCH", f"KEYWORD {PROCESSED_KEYWORD}")
        assert status == "OK" and data[0].split() == [first.key.encode()]
        assert client.list('""', '"Processed"')[1] == [None]       # no folder made in flag mode
    finally:
        client.logout()
    assert server.count("INBOX") == 3


def test_a_message_over_the_size_limit_is_not_fetched(server: ImapServer) -> None:
    big = samples()[0] + b"x" * 5000 + b"\r\n"
    server.append(big, samples()[2])
    box = ImapMailbox(imap_settings(server), max_bytes=2048)
    try:
        first, second = box.unread(10)
    finally:
        box.close()
    assert first.raw is None and first.size == len(big)
    assert second.raw == samples()[2]


def test_a_wrong_password_is_one_line_without_the_password(server: ImapServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAP_TEST_PASSWORD", "not-the-password")
    with pytest.raises(StorageError) as raised:
        ImapMailbox(imap_settings(server), max_bytes=1 << 20)
    message = str(raised.value)
    assert message.startswith(f"bounce mailbox imap://bounces@127.0.0.1:{server.port}/INBOX: login ")
    assert "\n" not in message and "not-the-password" not in message


def test_a_folder_that_does_not_exist_is_one_line(server: ImapServer) -> None:
    with pytest.raises(StorageError, match=r"/Bounces: select refused"):
        ImapMailbox(imap_settings(server, folder="Bounces"), max_bytes=1 << 20)


def test_a_certificate_not_trusted_is_refused(server: ImapServer) -> None:
    with pytest.raises(StorageError, match="cannot connect: .*CERTIFICATE_VERIFY_FAILED"):
        ImapMailbox(imap_settings(server, ca_file=None), max_bytes=1 << 20)


def test_plain_imap_is_for_loopback_only_and_the_password_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="plain is allowed only for a loopback host, not 'mail.example.org'"):
        ImapMailbox(ImapSettings(host="mail.example.org", port=143, security="plain", username="u"), 1 << 20)
    monkeypatch.delenv("BOUNCES_IMAP_PASSWORD", raising=False)
    with pytest.raises(SettingsError, match="BOUNCES_IMAP_PASSWORD"):
        ImapMailbox(ImapSettings(host="127.0.0.1", port=143, security="plain", username="u"), 1 << 20)


def test_a_maildir_reads_new_and_cur_oldest_first_and_moves_what_is_done(tmp_path: Path) -> None:
    path = tmp_path / "Maildir"
    box = mailbox.Maildir(path, create=True)
    first, second, third = samples()[:3]
    (path / "new" / "1700000002.M1P1Q1.host").write_bytes(second)
    (path / "cur" / "1700000001.M1P1Q1.host:2,S").write_bytes(first)     # read by a mail client already
    (path / "new" / "1700000003.M1P1Q1.host").write_bytes(third)
    (path / "new" / ".hidden").write_bytes(b"not a message")
    reader = MaildirMailbox(path, max_bytes=1 << 20)
    unread = list(reader.unread(10))
    assert [message.raw for message in unread] == [first, second, third]
    assert unread[0].key == "cur/1700000001.M1P1Q1.host:2,S"
    reader.done(unread[0].key)
    reader.done(unread[1].key)
    assert [message.raw for message in reader.unread(10)] == [third]
    processed = box.get_folder("Processed")          # a Maildir++ folder any mail client opens
    assert sorted(processed.get_bytes(key) for key in processed.iterkeys()) == sorted([first, second])
    assert sorted(p.name for p in (path / ".Processed" / "cur").iterdir()) == [
        "1700000001.M1P1Q1.host:2,S", "1700000002.M1P1Q1.host:2,"]


def test_a_folder_that_is_not_a_maildir_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="is not a Maildir"):
        MaildirMailbox(tmp_path, max_bytes=1 << 20)
