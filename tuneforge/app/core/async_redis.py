"""redis.asyncio clients for the API's event loop.

A redis.asyncio client's connections belong to the event loop that opened them, so clients are kept
per running loop: one per uvicorn process in production, and a fresh one for each loop a test client
starts. Only the API uses these; the worker talks to Redis synchronously.
"""

from __future__ import annotations

import asyncio
from weakref import WeakKeyDictionary

from redis.asyncio import BlockingConnectionPool, Redis

# Every chat in flight waits in a BLPOP that holds a connection, and a burst of requests takes one
# each for a moment: redis-py's default pool (100, then MaxConnectionsError) is too small for that.
# The in-flight caps bound the waiters (their sum over organizations); past this many, a request
# waits for a connection to come back instead of failing.
MAX_CONNECTIONS = 1000
POOL_WAIT_SECONDS = 30

_clients: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Redis]] = WeakKeyDictionary()


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://"))


def async_redis(url: str) -> Redis:
    """This loop's client for `url` (made on first use; its pool opens connections as needed)."""
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get(url)
    if client is None:
        pool = BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_SECONDS)
        client = per_loop[url] = Redis.from_pool(pool)
    return client
