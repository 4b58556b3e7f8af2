"""The one retry policy and the rate limiter, on their own and inside a publish."""
from __future__ import annotations

import asyncio
import random
import time

import pytest

from distributor.errors import (ChannelStoppedError, PermanentDeliveryError, TransientDeliveryError,
                                UncertainDeliveryError)
from distributor.ratelimit import RateLimiter
from distributor.retry import RetryPolicy

from .smtp_server import FaultySmtpServer
from .publish_helpers import configure, ledger_rows, received_by, run_publish

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


def test_deadline_stops_retrying_before_the_attempt_limit():
    policy = RetryPolicy(attempts=100, base_delay_seconds=0.05, max_delay_seconds=0.05, deadline_seconds=0.2)
    attempt, log = attempts_that(*[TransientDeliveryError("busy")] * 100)
    started = time.monotonic()
    with pytest.raises(TransientDeliveryError):
        asyncio.run(policy.run(attempt))
    assert time.monotonic() - started < 1 and 2 <= len(log) < 10


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
