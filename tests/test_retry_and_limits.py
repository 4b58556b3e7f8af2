"""The one retry policy and the rate limiter, on their own and inside a publish."""
from __future__ import annotations

import asyncio
import dataclasses
import random
import sqlite3
import time

import pytest

from distributor.delivery.ratelimit import RateLimiter
from distributor.delivery.retry import RetryPolicy
from distributor.errors import (
    ChannelStoppedError,
    PermanentDeliveryError,
    SenderThrottledError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from distributor.settings import RetrySettings

from .publish_helpers import configure, ledger_rows, received_by, run_publish
from .smtp_server import FaultySmtpServer

FAST = RetryPolicy(attempts=4, base_delay_seconds=0.001, max_delay_seconds=0.002, deadline_seconds=5,
                   random=random.Random(7))


def attempts_that(*outcomes):
    """Return an attempt function that raises or returns the given outcomes in turn, and its call log."""
    calls = []

    async def attempt():
        outcome = outcomes[len(calls)]
        calls.append(outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return attempt, calls


@pytest.mark.parametrize("outcomes, result, calls", [
    (["ok"], "ok", 1),
    ([TransientDeliveryError("451"), TransientDeliveryError("451"), "ok"], "ok", 3),
    ([PermanentDeliveryError("550")], PermanentDeliveryError, 1),
    ([UncertainDeliveryError("timeout after .")], UncertainDeliveryError, 1),
    ([ChannelStoppedError("535")], ChannelStoppedError, 1),
    ([TransientDeliveryError("451")] * 4, TransientDeliveryError, 4),
    # A throttled sender is not the recipient's fault: it does not use up the recipient's attempts.
    ([SenderThrottledError("450 4.7.1")] * 6 + [TransientDeliveryError("451")] * 3 + ["ok"], "ok", 10),
])
def test_only_transient_errors_are_retried(outcomes, result, calls):
    attempt, log = attempts_that(*outcomes)
    if isinstance(result, type):
        with pytest.raises(result):
            asyncio.run(FAST.run(attempt))
    else:
        assert asyncio.run(FAST.run(attempt)) == result
    assert len(log) == calls


def test_backoff_grows_is_capped_and_honours_retry_after():
    policy = RetryPolicy(base_delay_seconds=1, max_delay_seconds=8, random=random.Random(1))
    delays = [policy.delay_seconds(attempt, None) for attempt in range(1, 8)]
    assert all(0.5 * min(8, 2 ** (n - 1)) <= d <= min(8, 2 ** (n - 1)) for n, d in enumerate(delays, 1))
    assert policy.delay_seconds(1, 60) == 60


class FakeTime:
    """A clock that only `sleep` moves, recording each wait asked for."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def test_a_policy_from_the_settings_is_those_settings_with_their_backoff():
    settings = RetrySettings(attempts=2, base_delay_seconds=0.01, max_delay_seconds=0.01, deadline_seconds=5)
    policy = RetryPolicy.from_settings(settings)
    assert isinstance(policy, RetrySettings)
    assert {item.name: getattr(policy, item.name) for item in dataclasses.fields(RetrySettings)} == \
        dataclasses.asdict(settings)
    attempt, log = attempts_that(*[TransientDeliveryError("451")] * 5)
    fake = FakeTime()
    with pytest.raises(TransientDeliveryError):
        asyncio.run(policy.run(attempt, clock=fake.clock, sleep=fake.sleep))
    assert len(log) == 2 and len(fake.waits) == 1 and 0.005 <= fake.waits[0] <= 0.01


def test_deadline_stops_retrying_before_the_attempt_limit():
    policy = RetryPolicy(attempts=100, base_delay_seconds=0.05, max_delay_seconds=0.05, deadline_seconds=0.2)
    attempt, log = attempts_that(*[TransientDeliveryError("busy")] * 100)
    fake = FakeTime()
    with pytest.raises(TransientDeliveryError):
        asyncio.run(policy.run(attempt, clock=fake.clock, sleep=fake.sleep))
    # It waited between attempts, never past the deadline, and stopped once the next wait would cross it.
    assert len(log) == len(fake.waits) + 1 and 4 <= len(fake.waits) <= 8
    assert all(0.025 <= wait <= 0.05 for wait in fake.waits)
    assert 0.2 - 0.05 < sum(fake.waits) <= 0.2


def test_rate_limit_spaces_sends():
    limiter = RateLimiter(per_second=50)

    async def five():
        for _ in range(5):
            await limiter.acquire()

    started = time.monotonic()
    asyncio.run(five())
    assert time.monotonic() - started >= 0.07


def test_daily_cap_counts_earlier_runs():
    limiter = RateLimiter(0, daily_cap=3, sent_last_day=2)
    asyncio.run(limiter.acquire())
    with pytest.raises(ChannelStoppedError, match="daily cap of 3"):
        asyncio.run(limiter.acquire())


@pytest.mark.usefixtures("unsubscribe_secret")
def test_hourly_cap_stops_the_run_and_a_later_run_resumes(tmp_path):
    addresses = [f"r{i}@example.org" for i in range(5)]
    with FaultySmtpServer() as server:
        settings = configure(tmp_path, server, addresses, smtp_extra="  hourly_cap: 3")
        status, out, _ = run_publish(settings)
        assert status == 3 and "hourly cap" in out
        assert len(server.messages) == 3
        assert sorted(row[0] for row in ledger_rows(tmp_path).values()) == ["pending"] * 2 + ["sent"] * 3
        settings.write_text(settings.read_text().replace("hourly_cap: 3", "hourly_cap: 10"))
        assert run_publish(settings)[0] == 0
        assert sorted(received_by(server)) == addresses and len(server.messages) == 5


def test_a_sender_throttled_for_ever_is_bounded_by_the_deadline():
    policy = RetryPolicy(attempts=3, base_delay_seconds=0.01, max_delay_seconds=0.02, deadline_seconds=0.2)
    attempt, log = attempts_that(*[SenderThrottledError("450 4.7.1 slow down")] * 1000)
    fake = FakeTime()
    with pytest.raises(SenderThrottledError):
        asyncio.run(policy.run(attempt, clock=fake.clock, sleep=fake.sleep))
    # Throttles use up no attempts (far more than 3 tries), but the deadline ends them.
    assert len(log) == len(fake.waits) + 1 > 3
    assert all(wait <= 0.02 for wait in fake.waits)
    assert 0.2 - 0.02 < sum(fake.waits) <= 0.2


def test_a_throttle_pauses_every_sender_halves_the_rate_and_recovers_with_successes():
    limiter = RateLimiter(per_second=10)
    started = time.monotonic()
    limiter.throttled(0.2)
    limiter.throttled(0.2)                  # a second connection hearing the same refusal: no second halving
    assert limiter.slowdown == pytest.approx(0.2) and limiter.throttles == 1

    async def two_sends() -> None:
        await limiter.acquire()
        await limiter.acquire(counted=False)

    asyncio.run(two_sends())
    assert time.monotonic() - started >= 0.2 + 0.19     # the pause, then the halved rate's spacing
    limiter.throttled(0.01)                 # refused again before a success: a pause, the rate stays
    assert limiter.slowdown == pytest.approx(0.2) and limiter.throttles == 2
    for _ in range(100):
        limiter.succeeded()
    assert limiter.slowdown == 0.0 and limiter.throttles == 0


@pytest.mark.usefixtures("unsubscribe_secret")
def test_a_relay_throttling_the_sender_slows_the_run_down_and_everyone_gets_it(tmp_path):
    addresses = [f"r{i:03d}@example.org" for i in range(200)]
    throttled = 20                          # the first 20 MAIL FROM commands get 450 4.7.1
    with FaultySmtpServer(mail_replies=["450 4.7.1 <news@example.org>: sender rate limit exceeded"] * throttled) \
            as server:
        settings = configure(tmp_path, server, addresses)
        status, out, err = run_publish(settings)
        assert status == 0, out + err
        assert received_by(server) == {address: 1 for address in addresses}
    rows = ledger_rows(tmp_path)
    assert {row[0] for row in rows.values()} == {"sent"}
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    attempts = [row[0] for row in db.execute("SELECT attempts FROM deliveries")]
    assert sum(attempts) == len(addresses)  # the throttled tries are not the recipients' attempts


@pytest.mark.usefixtures("unsubscribe_secret")
def test_a_relay_that_never_takes_the_sender_again_stops_the_channel_with_rows_pending(tmp_path):
    addresses = [f"r{i}@example.org" for i in range(6)]
    with FaultySmtpServer(mail_replies=["450 4.7.1 sender rate limit exceeded"] * 100_000) as server:
        settings = configure(tmp_path, server, addresses)
        settings.write_text(settings.read_text().replace("retry:\n", "retry:\n  deadline_seconds: 0.5\n"))
        status, out, _ = run_publish(settings)
        assert server.messages == []
    assert status == 3 and "stopped: the relay kept refusing the sender" in out and "4.7.1" in out
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    assert db.execute("SELECT DISTINCT status, attempts FROM deliveries").fetchall() == [("pending", 0)]
