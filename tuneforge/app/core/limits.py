"""Fair shares: how many requests of one kind an organization may have in flight at once.

A request takes a slot before it does any work and gives it back when its response has been sent
(or its client went away); over the cap it is a 429 `rate_limit_error` with `Retry-After`, so one
tenant's flood of chats or streams waits in its own line instead of everyone's (docs/security.md).

Where the slots are counted follows the broker, as the reply channel does:

- **Redis** (deployed, any number of API processes): a sorted set per organization and kind, one
  member per slot scored by its expiry. One Lua script drops expired members, counts, and adds, so
  two processes can never both take the last slot. Times come from Redis' own clock.
- **In process** (the embedded default runs one API process): the same bookkeeping in a dict.

Every slot expires `LEASE_SECONDS` after it was last renewed, and a held slot is renewed every
`RENEW_SECONDS`: a slot whose process died (or whose release was lost) frees itself within a minute,
however long the request it belonged to could have lived (a job stream lasts up to an hour).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import anyio
from redis.exceptions import RedisError

from tuneforge.app.core.async_redis import async_redis, is_redis_url
from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import TooManyRequests

log = logging.getLogger("tuneforge.limits")

LEASE_SECONDS = 60.0
RENEW_SECONDS = 20.0


class InFlightKind(StrEnum):
    INFERENCE = "inference"  # POST /v1/chat/completions and /v1/completions
    STREAM = "stream"  # GET /v1/fine_tuning/jobs/{id}/stream
    UPLOAD = "upload"  # POST /v1/files, /v1/uploads/{id}/parts and /complete
    EXPORT = "export"  # GET /v1/fine_tuning/jobs/{id}/adapter?format=merged while it builds


@dataclass(frozen=True)
class Share:
    """A kind's cap, the setting that sets it, and the Retry-After a client over it is told."""

    cap: int
    setting: str
    retry_after: int
    what: str


def share_of(settings: Settings, kind: InFlightKind) -> Share:
    if kind is InFlightKind.INFERENCE:
        # A chat finishes in seconds; a slot is soon free again.
        return Share(
            settings.max_inference_requests_per_org,
            "TUNEFORGE_MAX_INFERENCE_REQUESTS_PER_ORG",
            1,
            "chat/completion requests",
        )
    if kind is InFlightKind.UPLOAD:
        # An upload takes seconds to a minute (its body, then validation).
        return Share(settings.max_uploads_per_org, "TUNEFORGE_MAX_UPLOADS_PER_ORG", 5, "upload requests")
    if kind is InFlightKind.EXPORT:
        # A merge loads the base model: minutes.
        return Share(settings.max_exports_per_org, "TUNEFORGE_MAX_EXPORTS_PER_ORG", 30, "model exports building")
    # A stream ends when its job does or its page closes: minutes, not seconds.
    return Share(settings.max_streams_per_org, "TUNEFORGE_MAX_STREAMS_PER_ORG", 5, "job event streams")


class InFlight(Protocol):
    async def acquire(self, key: str, cap: int) -> str | None:
        """A new slot's id, or None when `cap` slots are already held."""
        ...

    async def renew(self, key: str, slot: str) -> None: ...

    async def release(self, key: str, slot: str) -> None: ...


class LocalInFlight:
    """One process's slots. A lock, because a sync route's thread may take one as well as the loop."""

    def __init__(self) -> None:
        self._slots: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    async def acquire(self, key: str, cap: int) -> str | None:
        now = time.monotonic()
        with self._lock:
            held = self._slots.setdefault(key, {})
            for slot in [s for s, expiry in held.items() if expiry <= now]:
                del held[slot]
            if len(held) >= cap:
                return None
            slot = secrets.token_hex(8)
            held[slot] = now + LEASE_SECONDS
            return slot

    async def renew(self, key: str, slot: str) -> None:
        with self._lock:
            held = self._slots.get(key, {})
            if slot in held:
                held[slot] = time.monotonic() + LEASE_SECONDS

    async def release(self, key: str, slot: str) -> None:
        with self._lock:
            held = self._slots.get(key, {})
            held.pop(slot, None)
            if not held:
                self._slots.pop(key, None)

    def held(self, key: str) -> int:
        with self._lock:
            return len(self._slots.get(key, {}))


# KEYS[1]: the set; ARGV: cap, lease in ms, the new slot. Expired slots are dropped first, so a slot
# whose process died stops counting once its lease runs out. The key itself expires with its newest
# lease, so an organization that stops sending leaves nothing behind.
_ACQUIRE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
# KEYS[1]: the set; ARGV: lease in ms, the slot. Only a slot still held is renewed.
_RENEW = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


class RedisInFlight:
    """Slots shared by every API process on one Redis."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def acquire(self, key: str, cap: int) -> str | None:
        redis = async_redis(self._url)
        slot = secrets.token_hex(8)
        taken = await redis.eval(_ACQUIRE, 1, key, cap, int(LEASE_SECONDS * 1000), slot)
        return slot if int(taken) == 1 else None

    async def renew(self, key: str, slot: str) -> None:
        await async_redis(self._url).eval(_RENEW, 1, key, int(LEASE_SECONDS * 1000), slot)

    async def release(self, key: str, slot: str) -> None:
        await async_redis(self._url).zrem(key, slot)


_local = LocalInFlight()


def too_many(share: Share) -> TooManyRequests:
    """The 429. The wait is jittered (0.5x-1.5x, in `retry-after-ms`, which the openai SDK prefers, and
    rounded up in `Retry-After`): clients turned away in the same instant would otherwise all come back
    in the same instant, and a burst of refusals delays every other tenant's requests in that moment."""
    wait_ms = int(share.retry_after * 1000 * random.uniform(0.5, 1.5))
    exc = TooManyRequests(
        f"Your organization already has {share.cap} {share.what} in flight, the most this server "
        f"allows at once ({share.setting}). Retry after one of them finishes.",
        retry_after=math.ceil(wait_ms / 1000),
        code="too_many_requests_in_flight",
    )
    exc.headers["retry-after-ms"] = str(wait_ms)
    return exc


def in_flight(settings: Settings) -> InFlight:
    """Redis when the broker is Redis (several API processes may share it), else this process."""
    return RedisInFlight(settings.broker_url) if is_redis_url(settings.broker_url) else _local


def slot_key(kind: InFlightKind, org_id: str) -> str:
    return f"tuneforge:inflight:{kind}:{org_id}"


async def _renew_forever(limiter: InFlight, key: str, slot: str) -> None:
    while True:
        await asyncio.sleep(RENEW_SECONDS)
        try:
            await limiter.renew(key, slot)
        except (RedisError, OSError) as exc:  # Redis away for a moment: the next renewal may succeed
            log.warning("could not renew an in-flight slot (%s): %s", key, exc)


@contextlib.asynccontextmanager
async def hold(settings: Settings, org_id: str, kind: InFlightKind) -> AsyncIterator[None]:
    """Hold one of the organization's slots of `kind` for the body of the block, or raise the 429.

    If the counter cannot be reached (Redis down), the request goes ahead uncounted: the cap is a
    fairness measure, and turning a Redis outage into failed streams would be worse than an
    unfair minute (a chat fails anyway then, when it cannot be published)."""
    share = share_of(settings, kind)
    limiter = in_flight(settings)
    key = slot_key(kind, org_id)
    try:
        slot = await limiter.acquire(key, share.cap)
    except (RedisError, OSError) as exc:
        log.warning("in-flight counter unavailable, %s not counted: %s", kind, exc)
        slot = ""
    if slot == "":
        yield
        return
    if slot is None:
        raise too_many(share)
    renewer = asyncio.create_task(_renew_forever(limiter, key, slot))
    try:
        yield
    finally:
        renewer.cancel()
        # Shielded: a client that went away cancels this request, and the slot must still come back.
        with anyio.CancelScope(shield=True):
            try:
                await limiter.release(key, slot)
            except (RedisError, OSError) as exc:  # its lease frees it within LEASE_SECONDS
                log.warning("could not release an in-flight slot (%s): %s", key, exc)
