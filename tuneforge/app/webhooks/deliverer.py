"""Posts the outbox: a loop in each API process (tuneforge/app/core/loops.py, `webhooks`).

Each round it claims due deliveries with a conditional update (`claimed_until`), so several API
processes share the work without sending one delivery twice at once; a process that dies holding a
claim loses it when `claimed_until` passes, and another sends it. A slow or failing receiver costs
only this thread's time: requests and training never wait on it. Retries back off exponentially
from TUNEFORGE_WEBHOOK_BACKOFF_SECONDS, up to TUNEFORGE_WEBHOOK_MAX_ATTEMPTS.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx

from tuneforge.app.core.config import Settings
from tuneforge.app.core.loops import Loop, LoopName
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.types import utcnow
from tuneforge.app.webhooks import repository
from tuneforge.app.webhooks.signing import headers as signed_headers
from tuneforge.app.webhooks.ssrf import UnsafeURL, check_url

log = logging.getLogger("tuneforge.webhooks")

BATCH = 32
MAX_BACKOFF_SECONDS = 3600.0


def backoff(settings: Settings, attempts_done: int) -> float:
    return float(min(settings.webhook_backoff_seconds * 2 ** (attempts_done - 1), MAX_BACKOFF_SECONDS))


def deliver_one(delivery_id: str, settings: Settings, client: httpx.Client) -> bool:
    """POST one claimed delivery and record the attempt. Returns whether the receiver took it."""
    with session_scope() as s:
        found = repository.delivery_with_endpoint(s, delivery_id)
        if found is None:
            return False  # the endpoint was deleted meanwhile
        delivery, endpoint = found
        url, secret, event_id, attempts = endpoint.url, endpoint.secret, delivery.event_id, delivery.attempts
        body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    status: int | None = None
    error: str | None = None
    started = time.monotonic()
    try:
        check_url(url, allow_private=settings.webhooks_allow_private)
        response = client.post(url, content=body, headers=signed_headers(secret, event_id, int(time.time()), body))
        status = response.status_code
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except UnsafeURL as exc:
        error = str(exc)
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    duration_ms = int((time.monotonic() - started) * 1000)
    done = attempts + 1
    now = utcnow()
    retry_at = None if done >= settings.webhook_max_attempts else now + dt.timedelta(seconds=backoff(settings, done))
    with session_scope() as s:
        repository.record_attempt(
            s, delivery_id, status_code=status, error=error, duration_ms=duration_ms, next_attempt_at=retry_at, now=now
        )
    ok = error is None
    if not ok:
        log.info("webhook %s to %s: attempt %d failed (%s)", event_id, url, done, error)
    return ok


def deliver_due(settings: Settings, client: httpx.Client, pool: ThreadPoolExecutor | None = None) -> int:
    """One round: claim what is due and post it. Returns how many deliveries this process claimed."""
    now = utcnow()
    until = now + dt.timedelta(seconds=settings.webhook_timeout_seconds * 2 + 30)
    with session_scope() as s:
        claimed = [d for d in repository.due(s, now, BATCH) if repository.claim(s, d, now, until)]
    if pool is None:
        for d in claimed:
            deliver_one(d, settings, client)
    else:
        list(pool.map(lambda d: deliver_one(d, settings, client), claimed))
    return len(claimed)


class Deliverer(Loop):
    def __init__(self, settings: Settings) -> None:
        super().__init__(LoopName.WEBHOOKS, settings.webhook_poll_seconds, log=log)
        self.settings = settings
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None

    @contextmanager
    def lifetime(self) -> Iterator[None]:
        """One HTTP client and one pool of posting threads for the loop's life."""
        timeout = httpx.Timeout(self.settings.webhook_timeout_seconds)
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as self._client,
            ThreadPoolExecutor(4, thread_name_prefix="tuneforge-webhook-post") as self._pool,
        ):
            yield

    def round(self) -> None:
        assert self._client is not None, "a round runs inside lifetime()"
        # A full batch means more are due: keep going until the outbox is drained (or asked to stop).
        while deliver_due(self.settings, self._client, self._pool) == BATCH and not self.stopping:
            pass
