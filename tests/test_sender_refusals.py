"""Refusals about the sender (5.7.x policy, DMARC, authentication; 4.7.x limits) at send time: never a
reason to suppress the recipient; several in a row stop the channel, resumable, saying what they mean."""
from __future__ import annotations

import pytest

from distributor.errors import SenderRefusedError, SenderThrottledError
from distributor.ledger.store import Ledger

from .publish_helpers import configure, ledger_rows, received_by, run_publish
from .smtp_server import FaultySmtpServer
from .test_smtp_transport import SMALL, config_for, run, send_all

pytestmark = pytest.mark.usefixtures("unsubscribe_secret")

DMARC = "550 5.7.26 Unauthenticated email from example.org is not accepted due to domain's DMARC policy"


def test_policy_refusals_are_about_the_sender() -> None:
    with FaultySmtpServer(rejected_recipients={"a@x.test": DMARC},
                          rcpt_replies={"b@x.test": ["450 4.7.1 greylisted, try again", None]},
                          data_replies={"c@x.test": ["550 5.7.515 Access denied, sending domain does not meet"
                                                     " the required authentication level"]}) as server:
        dmarc, limited, outlook, ok = run(send_all(config_for(server), ("a@x.test", SMALL), ("b@x.test", SMALL),
                                                   ("c@x.test", SMALL), ("d@x.test", SMALL)))
    assert isinstance(dmarc, SenderRefusedError) and dmarc.suppress is False
    assert "DMARC" in dmarc.meaning and dmarc.reply == DMARC
    assert isinstance(limited, SenderThrottledError) and "limits the sender" in str(limited)
    assert isinstance(outlook, SenderRefusedError) and "Outlook.com" in outlook.meaning
    assert ok.startswith("250 ")


def test_refusals_in_a_row_stop_the_channel_and_a_later_run_sends_them(tmp_path) -> None:
    readers = [f"reader{i}@example.org" for i in range(8)]
    with FaultySmtpServer(rejected_recipients={address: DMARC for address in readers}) as server:
        settings = configure(tmp_path, server, readers, smtp_extra="  policy_refusals_to_stop: 3")
        status, out, _ = run_publish(settings)
        assert status == 3, out
        assert "refusals of the sender in a row" in out and "DMARC" in out, out
        assert server.messages == []
    rows = ledger_rows(tmp_path)
    assert {row[0] for row in rows.values()} == {"pending"}, rows
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        assert not any(ledger.is_suppressed(address) for address in readers)
        attempts = [row[0] for row in ledger.db.execute("SELECT attempts FROM deliveries")]
    assert set(attempts) == {0}

    with FaultySmtpServer() as fixed:      # the sender's DNS fixed: the same run goes on
        settings = configure(tmp_path, fixed, readers)
        status, out, _ = run_publish(settings)
        assert status == 0, out
        assert received_by(fixed) == {address: 1 for address in readers}


def test_a_lone_refusal_fails_the_row_without_suppressing(tmp_path) -> None:
    readers = [f"reader{i}@example.org" for i in range(5)]
    refused = readers[2]
    with FaultySmtpServer(rejected_recipients={refused: "550 5.7.1 recipient refuses mail from this sender"}) as server:
        settings = configure(tmp_path, server, readers)
        status, out, _ = run_publish(settings)
        assert status == 1, out
        assert set(received_by(server)) == set(readers) - {refused}
    rows = ledger_rows(tmp_path)
    assert rows[refused][0] == "failed" and "5.7.1" in rows[refused][1]
    assert "policy refuses this sender" in rows[refused][2]
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        assert not ledger.is_suppressed(refused)
