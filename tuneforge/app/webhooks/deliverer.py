"""Posts the outbox: a loop in each API process (tuneforge/app/core/loops.py, `webhooks`).

It claims due deliveries with a conditional update (`claimed_until`), so several API processes
share the work without sending one delivery twice at once; a process that dies holding a claim
loses it when `claimed_until` passes, and another sends it. Retries back off exponentially from
TUNEFORGE_WEBHOOK_BACKOFF_SECONDS, up to TUNEFORGE_WEBHOOK_MAX_ATTEMPTS.

Endpoints are isolated from each other (docs/security.md):

- A delivery that cannot be made at all (a URL httpx refuses, a host that vanished, anything the
  attempt raises) is recorded as a failed attempt and backs off like a receiver's 500; it never
  stays claimed and first in line.
- Posts run on `POST_THREADS` threads, and one organization holds at most `THREADS_PER_ORG` of
  them at once; due deliveries are taken in turns across organizations. A tenant whose endpoints
  hang until the timeout, or who has thousands due, delays only its own deliveries.
- The loop never waits for a post: a thread that finishes is refilled at once, the others keep going.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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

POST_THREADS = 8
THREADS_PER_ORG = 2
MAX_BACKOFF_SECONDS = 3600.0


def backoff(settings: Settings, attempts_done: int) -> float:
    return float(min(settings.webhook_backoff_seconds * 2 ** (attempts_done - 1), MAX_BACKOFF_SECONDS))


def _post(url: str, body: bytes, secret: str, event_id: str, settings: Settings, client: httpx.Client) -> int:
    check_url(url, allow_private=settings.webhooks_allow_private)
    response = client.post(url, content=body, headers=signed_headers(secret, event_id, int(time.time()), body))
    return response.status_code


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
        status = _post(url, body, secret, event_id, settings, client)
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except UnsafeURL as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - httpx.InvalidURL is no HTTPError; any failure is a failed attempt
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
        log.info("webhook %s to %r: attempt %d failed (%s)", event_id, url, done, error)
    return ok


class Deliverer(Loop):
    def __init__(self, settings: Settings) -> None:
        super().__init__(LoopName.WEBHOOKS, settings.webhook_poll_seconds, log=log)
        self.settings = settings
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._posting: dict[str, str] = {}  # delivery id -> its organization, while a thread posts it
        self._lock = threading.Lock()
        self._freed = threading.Event()

    @contextmanager
    def lifetime(self) -> Iterator[None]:
        """One HTTP client and one pool of posting threads for the loop's life."""
        timeout = httpx.Timeout(self.settings.webhook_timeout_seconds)
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as self._client,
            ThreadPoolExecutor(POST_THREADS, thread_name_prefix="tuneforge-webhook-post") as self._pool,
        ):
            yield

    def _fill(self) -> int:
        """Claim due deliveries for the free threads, in turns across organizations, each organization
        up to its share of threads, and start posting them. Returns how many were claimed."""
        assert self._client is not None and self._pool is not None, "a round runs inside lifetime()"
        with self._lock:
            held = Counter(self._posting.values())
        free = POST_THREADS - sum(held.values())
        if free <= 0:
            return 0
        busy = frozenset(org for org, n in held.items() if n >= THREADS_PER_ORG)
        now = utcnow()
        until = now + dt.timedelta(seconds=self.settings.webhook_timeout_seconds * 2 + 30)
        claimed: list[tuple[str, str]] = []
        with session_scope() as s:
            due = repository.due(s, now, free * THREADS_PER_ORG, max_turn=THREADS_PER_ORG, skip_orgs=busy)
            for delivery_id, org in due:
                if len(claimed) == free:
                    break
                if held[org] >= THREADS_PER_ORG or not repository.claim(s, delivery_id, now, until):
                    continue
                held[org] += 1
                claimed.append((delivery_id, org))
        # Posted once the claims are committed (the session above), never before.
        for delivery_id, org in claimed:
            with self._lock:
                self._posting[delivery_id] = org
            future = self._pool.submit(deliver_one, delivery_id, self.settings, self._client)
            future.add_done_callback(functools.partial(self._done, delivery_id))
        return len(claimed)

    def _done(self, delivery_id: str, future: Future[bool]) -> None:
        with self._lock:
            self._posting.pop(delivery_id, None)
        if future.exception() is not None:  # the database failed while recording: the claim expires
            log.warning("webhook delivery %s: %s", delivery_id, future.exception())
        self._freed.set()

    def round(self) -> None:
        # Keep the threads busy while anything is due or being posted: refill as soon as a post ends.
        while not self.stopping:
            claimed = self._fill()
            with self._lock:
                posting = bool(self._posting)
            if claimed == 0 and not posting:
                return
            self._freed.wait(self.interval)
            self._freed.clear()
