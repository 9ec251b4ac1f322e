"""The request-rate buckets (tuneforge/app/core/rates.py): the in-process one, and the Redis one on a
real Redis, which every API process shares."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from redis import Redis

from tests.helpers import REDIS_URL
from tuneforge.app.core.rates import LocalBucket, Rate, RedisBucket

RATE = Rate(per_minute=600, setting="TUNEFORGE_TEST_RATE", what="tests")  # one each 100 ms, 100 at once


async def _burst(bucket: LocalBucket | RedisBucket, key: str, n: int) -> list[float]:
    return [await bucket.take(key, RATE) for _ in range(n)]


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_a_burst_passes_then_one_request_each_interval(kind: str) -> None:
    bucket = LocalBucket() if kind == "local" else RedisBucket(REDIS_URL)
    key = f"tuneforge:test-rate:{secrets.token_hex(4)}"

    async def scenario() -> None:
        waits = await _burst(bucket, key, RATE.burst + 1)
        assert waits[: RATE.burst] == [0.0] * RATE.burst  # a sixth of a minute's worth at once
        assert 0 < waits[-1] <= RATE.interval_ms  # the next one: within one interval
        await asyncio.sleep(waits[-1] / 1000 + 0.02)
        assert await bucket.take(key, RATE) == 0.0  # and then it passes
        assert await bucket.take(key, RATE) > 0  # one, not a new burst
        assert await bucket.take(f"{key}-other", RATE) == 0.0  # another organization's bucket is its own

    asyncio.run(scenario())
    if kind == "redis":  # the key expires once the bucket is full again: idle organizations leave nothing
        ttl_ms = Redis.from_url(REDIS_URL).pttl(key)
        assert 0 < ttl_ms <= (RATE.burst + 1) * RATE.interval_ms, ttl_ms


def test_refused_requests_are_not_counted() -> None:
    """A client that keeps knocking while refused is not pushed further back: only requests let through
    move the bucket."""
    bucket = LocalBucket()

    async def scenario() -> None:
        await _burst(bucket, "k", RATE.burst)
        first = await bucket.take("k", RATE)
        refused = await _burst(bucket, "k", 50)
        assert all(0 < w <= first for w in refused)

    asyncio.run(scenario())
