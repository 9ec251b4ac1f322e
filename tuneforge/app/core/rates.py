"""Request rates: how many requests of one kind an organization may start a minute.

The in-flight caps (core/limits.py) bound how much one tenant's requests hold at once; they do not
bound how fast a tenant starts new ones. Small uploads finish in milliseconds, so a tenant posting them
back to back from eight clients kept four in flight and started about 130 a second: 70% of the API
process's CPU, and another tenant's p99 went from 5 to 25 ms on two cores (tests/app/test_fairness.py).
A rate, as OpenAI's requests-per-minute limits, bounds that share: past it the request is a 429
`rate_limit_exceeded` with Retry-After, before its body is read.

The bucket is GCRA (the generic cell rate algorithm): one timestamp per organization and kind, the
"theoretical arrival time" of its next request. `per_minute` requests a minute, up to a sixth of them
(ten seconds' worth) at once after a quiet spell, then one each `60 / per_minute` seconds.

Where the timestamps live follows the broker, as the in-flight slots do: Redis (one Lua script, Redis'
own clock, so any number of API processes share one bucket) or this process.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from redis.exceptions import RedisError

from tuneforge.app.core.async_redis import async_redis, is_redis_url
from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import TooManyRequests

log = logging.getLogger("tuneforge.rates")

BURST_SHARE = 6  # a sixth of a minute's requests may come at once


class RateKind(StrEnum):
    UPLOAD = "upload"  # POST /v1/files, /v1/uploads/{id}/parts and /complete


@dataclass(frozen=True)
class Rate:
    per_minute: int
    setting: str
    what: str

    @property
    def interval_ms(self) -> float:
        return 60_000 / self.per_minute

    @property
    def burst(self) -> int:
        return max(1, self.per_minute // BURST_SHARE)


def rate_of(settings: Settings, kind: RateKind) -> Rate:
    return Rate(settings.upload_requests_per_minute_per_org, "TUNEFORGE_UPLOAD_REQUESTS_PER_MINUTE_PER_ORG", "uploads")


class Bucket(Protocol):
    async def take(self, key: str, rate: Rate) -> float:
        """0 when the request may go now (and it is counted), else the milliseconds until it may."""
        ...


class LocalBucket:
    """One process's buckets. A lock, because a sync route's thread may take from one as well as the loop."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    async def take(self, key: str, rate: Rate) -> float:
        now = time.monotonic() * 1000
        with self._lock:
            tat = max(self._tat.get(key, now), now)
            wait = tat + rate.interval_ms - now - rate.burst * rate.interval_ms
            if wait > 0:
                return wait
            self._tat[key] = tat + rate.interval_ms
            if len(self._tat) > 10_000:  # buckets back at full are forgotten: only organizations sending now
                self._tat = {k: t for k, t in self._tat.items() if t >= now}
            return 0.0


# KEYS[1]: the organization's timestamp; ARGV: interval and burst window (ms). Returns the wait in ms
# (0: taken). The key expires when the bucket is full again, so idle organizations leave nothing.
_TAKE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local interval, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local wait = tat + interval - now - window
if wait > 0 then
  return tostring(wait)
end
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil(tat + interval - now) + 1)
return '0'
"""


class RedisBucket:
    """Buckets shared by every API process on one Redis."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def take(self, key: str, rate: Rate) -> float:
        window = rate.burst * rate.interval_ms
        wait = await async_redis(self._url).eval(_TAKE, 1, key, rate.interval_ms, window)
        return float(wait)


_local = LocalBucket()


def bucket(settings: Settings) -> Bucket:
    return RedisBucket(settings.broker_url) if is_redis_url(settings.broker_url) else _local


def rate_key(kind: RateKind, org_id: str) -> str:
    return f"tuneforge:rate:{kind}:{org_id}"


def too_fast(rate: Rate, wait_ms: float) -> TooManyRequests:
    exc = TooManyRequests(
        f"Your organization started more than {rate.per_minute} {rate.what} in the last minute, the rate this "
        f"server allows ({rate.setting}). Retry after the time in Retry-After.",
        retry_after=max(1, math.ceil(wait_ms / 1000)),
        code="rate_limit_exceeded",
    )
    # What the openai SDK reads first; also OpenAI's own headers for a requests-per-minute limit.
    exc.headers["retry-after-ms"] = str(math.ceil(wait_ms))
    exc.headers["x-ratelimit-limit-requests"] = str(rate.per_minute)
    exc.headers["x-ratelimit-remaining-requests"] = "0"
    exc.headers["x-ratelimit-reset-requests"] = f"{wait_ms / 1000:.3f}s"
    return exc


async def take(settings: Settings, org_id: str, kind: RateKind) -> None:
    """Count one request of `kind` against the organization's rate, or raise the 429.

    With the counter unreachable (Redis down) the request goes ahead uncounted, as for the in-flight
    caps: the rate is a fairness measure, not a reason to fail uploads while Redis restarts."""
    rate = rate_of(settings, kind)
    try:
        wait = await bucket(settings).take(rate_key(kind, org_id), rate)
    except (RedisError, OSError) as exc:
        log.warning("rate counter unavailable, %s not counted: %s", kind, exc)
        return
    if wait > 0:
        raise too_fast(rate, wait)
