"""A small per-process TTL cache of key hash -> Principal, so that polling a job costs one query,
not two. Revoking a key clears its entries in this process at once; other API processes notice
within TUNEFORGE_AUTH_CACHE_SECONDS (default 5 s; 0 turns the cache off). Only keys that
authenticated are cached, so a flood of bad keys cannot grow it."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuneforge.app.auth.service import Principal

MAX_ENTRIES = 10_000


class PrincipalCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> Principal | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._entries.pop(key_hash, None)
            return None
        return entry[1]

    def put(self, key_hash: str, principal: Principal, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key_hash] = (time.monotonic() + ttl, principal)

    def forget_key(self, key_id: str) -> None:
        with self._lock:
            for h in [h for h, (_, p) in self._entries.items() if p.key_id == key_id]:
                del self._entries[h]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


principals = PrincipalCache()
