"""The per-organization in-flight counters, on the real Redis and in process: the cap holds under
concurrent takers, released and expired slots free up, and a full share is a 429 with Retry-After."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import REDIS_URL
from tuneforge.app.core import limits
from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import TooManyRequests
from tuneforge.app.core.limits import InFlight, InFlightKind, LocalInFlight, RedisInFlight


def _limiter(kind: str) -> InFlight:
    return RedisInFlight(REDIS_URL) if kind == "redis" else LocalInFlight()


@pytest.mark.parametrize("kind", ["redis", "local"])
def test_the_cap_holds_for_concurrent_takers(kind: str) -> None:
    """Fifty concurrent acquires (one Redis round trip each, interleaved on one loop) get exactly the cap."""

    async def scenario() -> None:
        limiter = _limiter(kind)
        key = f"tuneforge:inflight:test:{kind}-cap"
        slots = await asyncio.gather(*(limiter.acquire(key, 5) for _ in range(50)))
        taken = [s for s in slots if s is not None]
        assert len(taken) == 5
        assert await limiter.acquire(key, 5) is None
        await limiter.release(key, taken[0])
        assert await limiter.acquire(key, 5) is not None  # a released slot is free again
        for slot in taken[1:]:
            await limiter.release(key, slot)

    asyncio.run(scenario())


def test_redis_slots_are_shared_by_separate_clients_and_expire() -> None:
    """Two clients (as two API processes) count against one set; a slot whose holder vanished stops
    counting when its lease runs out, measured by Redis' clock."""

    async def scenario() -> None:
        key = "tuneforge:inflight:test:shared"
        a, b = RedisInFlight(REDIS_URL), RedisInFlight(REDIS_URL)
        assert await a.acquire(key, 2) is not None
        assert await b.acquire(key, 2) is not None
        assert await a.acquire(key, 2) is None and await b.acquire(key, 2) is None
        # A holder that died: its member's score is its expiry; pretend it ran out a moment ago.
        client = redis.Redis.from_url(REDIS_URL)
        entries: Any = client.zrange(key, 0, 0, withscores=True)
        client.zadd(key, {entries[0][0]: 0})
        assert await b.acquire(key, 2) is not None
        assert 0 < client.pttl(key) <= limits.LEASE_SECONDS * 1000  # the set goes away when idle

    asyncio.run(scenario())


def test_local_slots_expire_and_renew(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        limiter = LocalInFlight()
        key = "k"
        slot = await limiter.acquire(key, 1)
        assert slot is not None and await limiter.acquire(key, 1) is None
        monkeypatch.setattr(limits, "LEASE_SECONDS", 0.05)
        await limiter.renew(key, slot)  # renewed with the (now short) lease
        await asyncio.sleep(0.1)
        assert await limiter.acquire(key, 1) is not None  # the unrenewed slot expired
        assert limiter.held(key) == 1

    asyncio.run(scenario())


def test_a_full_share_is_a_429_with_retry_after_and_the_slot_comes_back(tmp_path: Path) -> None:
    """`hold` in process (the embedded broker) and on Redis: inside the block the slot counts, after
    it (also when the block raised) it is free."""

    async def scenario(settings: Settings, org: str) -> None:
        async with limits.hold(settings, org, InFlightKind.INFERENCE):
            with pytest.raises(TooManyRequests) as full:
                async with limits.hold(settings, org, InFlightKind.INFERENCE):
                    pass
            assert full.value.status_code == 429 and full.value.type == "rate_limit_error"
            assert full.value.headers["Retry-After"] in ("1", "2")  # 0.5-1.5 s, jittered, rounded up
            assert 500 <= int(full.value.headers["retry-after-ms"]) <= 1500
            assert "TUNEFORGE_MAX_INFERENCE_REQUESTS_PER_ORG" in full.value.message
            async with limits.hold(settings, org, InFlightKind.STREAM):  # another kind, another share
                pass
        with pytest.raises(RuntimeError):
            async with limits.hold(settings, org, InFlightKind.INFERENCE):
                raise RuntimeError("the request failed")
        async with limits.hold(settings, org, InFlightKind.INFERENCE):
            pass

    embedded = Settings(data_dir=tmp_path, database_url="", broker_url="", max_inference_requests_per_org=1)
    assert isinstance(limits.in_flight(embedded), LocalInFlight)
    asyncio.run(scenario(embedded, "org-embedded"))
    deployed = Settings(data_dir=tmp_path, broker_url=REDIS_URL, max_inference_requests_per_org=1)
    assert isinstance(limits.in_flight(deployed), RedisInFlight)
    asyncio.run(scenario(deployed, "org-deployed"))


def test_an_unreachable_counter_lets_requests_through(tmp_path: Path) -> None:
    """Redis down: the cap is not enforced rather than every stream failing (the chat itself then
    fails when it cannot be published)."""

    async def scenario() -> None:
        settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0", max_streams_per_org=1)
        async with (
            limits.hold(settings, "org-x", InFlightKind.STREAM),
            limits.hold(settings, "org-x", InFlightKind.STREAM),
        ):
            pass

    asyncio.run(scenario())
