"""What the ledger holds, the same on both engines it runs on (a SQLite file and a real PostgreSQL
server, tests/postgres_server.py): deliveries, suppressions, subscriber ids, checkpoints, caches,
leases, issue identities, scheduled jobs, and the workers' batch claims. Every test runs on each."""
from __future__ import annotations

import pytest

from distributor.ledger.store import Ledger
from distributor.ledger.work import Drain, RelayShare, WorkLedger
from distributor.schedule.jobs import JobStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(open_test_ledger, clock: Clock) -> Ledger:
    return open_test_ledger(clock)


READERS = [(f"Reader{n}@Example.org", f"Reader {n}") for n in range(10)]
DRAIN = Drain("2026-12-01-weekly", "email", "/srv/site/_posts/weekly.md", "hash-1", None)


def everyone(domain: str = "", relay: str = "main") -> RelayShare:
    return RelayShare(relay, (domain,) if domain else (), (), ("email", "text"), 0.0, None, None)


def test_a_plan_adds_each_address_once_and_drops_pending_rows_that_left(ledger: Ledger) -> None:
    first = ledger.plan("k", "email", "h", READERS)
    again = ledger.plan("k", "email", "h", READERS[:8] + [("new@example.org", None)])
    assert (first.added, first.resumed, again.added, again.removed, again.resumed) == (10, False, 1, 2, True)
    rows = list(ledger.rows("k", "email", ("pending",)))
    assert [row.recipient for row in rows] == sorted(row.recipient for row in rows)
    assert len(rows) == 9 and all(row.subscriber_id for row in rows)
    assert ledger.address_for(rows[0].subscriber_id) == rows[0].recipient.lower()


def test_a_row_is_claimed_once_and_its_outcome_recorded(ledger: Ledger) -> None:
    ledger.plan("k", "email", "h", READERS[:2])
    address = READERS[0][0]
    assert ledger.claim("k", "email", address, "<m1@example.org>", ("pending",))
    assert not ledger.claim("k", "email", address, "<m1@example.org>", ("pending",))
    ledger.mark("k", "email", address, "sent", reply="250 2.0.0 ok")
    ledger.mark("k", "email", READERS[1][0], "failed", error="550", uncount=True)
    assert ledger.counts("k") == {"email": {"sent": 1, "failed": 1}}
    assert ledger.sent_since(0, ["email"]) == 1 and ledger.content_hashes("k", "email") == {"h"}
    (row,) = ledger.rows("k", "email", ("sent",))
    assert (row.attempts, row.reply, row.message_id) == (1, "250 2.0.0 ok", "<m1@example.org>")
    (failed,) = ledger.rows("k", "email", ("failed",))
    assert failed.attempts == 0          # uncounted, and never below nothing


def test_requeue_puts_only_planned_rows_back(ledger: Ledger) -> None:
    ledger.plan("k", "email", "h", READERS[:3])
    for address, _ in READERS[:3]:
        ledger.mark("k", "email", address, "failed", error="gave up")
    ledger.plan("k", "email", "h", READERS[:2])
    with ledger.transaction():
        assert ledger.requeue("k", "email", ("failed",)) == 2
    assert ledger.counts("k") == {"email": {"pending": 2, "failed": 1}}


def test_suppression_is_case_blind_and_keeps_the_stronger_source(ledger: Ledger) -> None:
    ledger.suppress("Someone@Example.org", reason="one click", source="one-click")
    ledger.suppress("someone@example.org", reason="550 no such user", source="bounce")
    ledger.suppress("someone@example.org", reason="again", source="one-click")
    found = ledger.suppression("SOMEONE@example.org")
    assert found is not None and (found.source, found.reason) == ("bounce", "550 no such user")
    ledger.plan("k", "email", "h", [("someone@example.org", None), ("other@example.org", None)])
    assert [row.recipient for row in ledger.rows("k", "email", ("pending",))] == ["other@example.org"]
    assert ledger.unsuppress("someone@example.org") and not ledger.is_suppressed("someone@example.org")


def test_checkpoints_and_caches_replace_their_values(ledger: Ledger, clock: Clock) -> None:
    ledger.save_checkpoint("k", "wechat", "draft", "media-1")
    ledger.save_checkpoint("k", "wechat", "draft", "media-2")
    assert ledger.checkpoints("k", "wechat") == {"draft": "media-2"}
    ledger.drop_checkpoint("k", "wechat", "draft")
    assert ledger.checkpoint("k", "wechat", "draft") is None
    ledger.cache("token", "app", "t1", clock.now + 10)
    ledger.cache("token", "app", "t2", clock.now + 10)
    assert ledger.cached("token", "app") == "t2"
    clock.now += 10
    assert ledger.cached("token", "app") is None


def test_a_lease_goes_to_one_holder_until_it_lapses(ledger: Ledger, clock: Clock) -> None:
    assert ledger.take_lease("wechat:k", "a", 30).holder == "a"
    assert ledger.take_lease("wechat:k", "b", 30).holder == "a"
    assert ledger.renew_lease("wechat:k", "a", 30) and not ledger.renew_lease("wechat:k", "b", 30)
    clock.now += 31
    assert ledger.lease("wechat:k") is None
    assert ledger.take_lease("wechat:k", "b", 30).holder == "b"
    ledger.release_lease("wechat:k", "b")
    assert ledger.lease("wechat:k") is None


def test_an_issue_identity_is_kept_and_its_rows_move_with_its_key(ledger: Ledger) -> None:
    ledger.plan("old", "email", "h", READERS[:2])
    ledger.save_checkpoint("old", "wechat", "draft_hash", "h2")
    assert ledger.adopt_issue_rows("old", "new") == 3
    assert ledger.remember_issue_identity("new", "2026-12-01", "Weekly", "a.md")[:3] == ("2026-12-01", "Weekly", "a.md")
    assert ledger.remember_issue_identity("new", "2026-12-02", "Other", "b.md")[:3] == ("2026-12-01", "Weekly", "a.md")
    assert ledger.issue_recorded("new") and not ledger.issue_recorded("old")
    assert ledger.recorded_versions("new") == (3, {"h", "h2"}, set())


def test_a_job_is_claimed_by_one_runner_and_taken_over_after_its_lease(ledger: Ledger) -> None:
    jobs = JobStore.of(ledger)
    job = jobs.add("a.md", ("email", "text"), 100.0, "Asia/Shanghai", title="Weekly")
    assert jobs.claim("runner-a", 99.0, 60) is None
    claimed = jobs.claim("runner-a", 100.0, 60)
    assert claimed is not None and claimed.id == job.id and claimed.channels == ("email", "text")
    assert jobs.claim("runner-b", 120.0, 60) is None
    assert jobs.renew_lease(job.id, "runner-a", 200.0) and not jobs.renew_lease(job.id, "runner-b", 300.0)
    taken = jobs.claim("runner-b", 201.0, 60)
    assert taken is not None and taken.lease_owner == "runner-b" and taken.attempts == 2
    assert jobs.finish(job.id, "runner-b", "done", 210.0, exit_status=0)
    assert [found.state for found in jobs.jobs()] == ["done"]


def test_two_workers_claim_disjoint_batches_and_a_lapsed_lease_frees_its_rows(ledger: Ledger, clock: Clock) -> None:
    ledger.plan(DRAIN.issue_key, "email", "hash-1", READERS)
    first, second = WorkLedger(ledger, "worker-a", 30), WorkLedger(ledger, "worker-b", 30)
    a = first.claim_batch(DRAIN, everyone(), 4)
    b = second.claim_batch(DRAIN, everyone(), 100)
    assert len(a.rows) == 4 and len(b.rows) == 6
    assert not {row.recipient for row in a.rows} & {row.recipient for row in b.rows}
    assert all(row.subscriber_id for row in a.rows + b.rows)
    assert second.claim_batch(DRAIN, everyone(), 100).rows == ()
    ledger.claim(DRAIN.issue_key, "email", a.rows[0].recipient, "<m@example.org>", ("pending",))   # handed over
    clock.now += 20
    assert first.renew() == 4             # the 3 it holds, and the one it is handing over
    clock.now += 20                       # b's lease lapsed (not renewed); a's runs to now + 10
    taken = first.claim_batch(DRAIN, everyone(), 100)
    assert {row.recipient for row in taken.rows} == {row.recipient for row in b.rows}
    with ledger.transaction():
        assert first.release() == 9       # the one handed over stays uncertain, and its lease with it
    assert len(second.claim_batch(DRAIN, everyone(), 100).rows) == 9


def test_a_claim_takes_only_its_relays_domains(ledger: Ledger) -> None:
    friends = [("friend@QQ.example", None), ("pal@qq.example", None)]
    ledger.plan(DRAIN.issue_key, "email", "hash-1", READERS[:3] + friends)
    work = WorkLedger(ledger, "worker", 30)
    routed = work.claim_batch(DRAIN, everyone("qq.example", "qq"), 100)
    rest = work.claim_batch(DRAIN, RelayShare("main", (), ("qq.example",), ("email",), 0.0, None, None), 100)
    assert sorted(row.recipient for row in routed.rows) == ["friend@QQ.example", "pal@qq.example"]
    assert len(rest.rows) == 3 and all(row.recipient.endswith("@Example.org") for row in rest.rows)


def test_caps_count_what_every_worker_sent_and_holds(ledger: Ledger, clock: Clock) -> None:
    ledger.plan(DRAIN.issue_key, "email", "hash-1", READERS)
    capped = RelayShare("main", (), (), ("email", "text"), 0.0, 6, None)
    first, second = WorkLedger(ledger, "worker-a", 30), WorkLedger(ledger, "worker-b", 30)
    a = first.claim_batch(DRAIN, capped, 4)
    for row in a.rows[:2]:
        ledger.claim(DRAIN.issue_key, "email", row.recipient, "<m@example.org>", ("pending",))
        ledger.mark(DRAIN.issue_key, "email", row.recipient, "sent", reply="250")
    b = second.claim_batch(DRAIN, capped, 4)
    assert (len(a.rows), a.capped, len(b.rows), b.capped) == (4, None, 2, "hourly")
    assert second.claim_batch(DRAIN, capped, 4).rows == ()
    clock.now += 3601                    # the hour has passed, the leases too
    assert len(second.claim_batch(DRAIN, capped, 10).rows) == 6


def test_a_rate_gives_each_batch_the_next_send_times(ledger: Ledger, clock: Clock) -> None:
    ledger.plan(DRAIN.issue_key, "email", "hash-1", READERS)
    paced = RelayShare("main", (), (), ("email",), 2.0, None, None)
    first = WorkLedger(ledger, "worker-a", 30).claim_batch(DRAIN, paced, 3)
    second = WorkLedger(ledger, "worker-b", 30).claim_batch(DRAIN, paced, 3)
    assert first.slots == (clock.now, clock.now + 0.5, clock.now + 1.0)
    assert second.slots == (clock.now + 1.5, clock.now + 2.0, clock.now + 2.5)


def test_a_drain_is_done_when_no_row_is_pending_and_a_paused_relay_is_seen_by_all(ledger: Ledger,
                                                                                    clock: Clock) -> None:
    ledger.plan(DRAIN.issue_key, "email", "hash-1", READERS[:1])
    work = WorkLedger(ledger, "worker", 30)
    work.open_drain(DRAIN)
    assert work.open_drains() == [DRAIN] and not work.finish_if_drained(DRAIN)
    ledger.mark(DRAIN.issue_key, "email", READERS[0][0], "sent")
    assert work.finish_if_drained(DRAIN) and work.open_drains() == []
    work.pause_relay("qq", 60, "554 no service")
    assert WorkLedger(ledger, "other", 30).paused_relays() == {"qq": "554 no service"}
    clock.now += 61
    assert work.paused_relays() == {}


def test_a_drain_counts_hand_overs_in_flight_until_their_outcome_or_their_lease_ends(ledger: Ledger,
                                                                                   clock: Clock) -> None:
    ledger.plan(DRAIN.issue_key, "email", "hash-1", READERS[:2])
    work = WorkLedger(ledger, "worker", 30)
    first, second = work.claim_batch(DRAIN, everyone(), 2).rows
    ledger.claim(DRAIN.issue_key, "email", first.recipient, "<m1@example.org>", ("pending",))
    assert work.remaining(DRAIN.issue_key, "email") == 2         # one pending, one on its way
    ledger.mark(DRAIN.issue_key, "email", first.recipient, "sent", reply="250")
    ledger.claim(DRAIN.issue_key, "email", second.recipient, "<m2@example.org>", ("pending",))
    assert work.remaining(DRAIN.issue_key, "email") == 1 and work.renew() == 1
    clock.now += 31                      # the worker died during the hand-over: its row stays uncertain
    assert work.remaining(DRAIN.issue_key, "email") == 0
    assert ledger.counts(DRAIN.issue_key) == {"email": {"sent": 1, "uncertain": 1}}
