"""Series that the API process measures itself (not derived from the database), with the helpers
that code elsewhere calls to feed them.

These live in this process's memory: call the helpers from the process that serves /metrics (the API,
where `/v1/chat/completions` and webhook delivery run), and each API replica reports its own share,
which Prometheus sums. Anything a worker measures reaches /metrics through the database instead
(tuneforge/app/ops/service.py), so no multiprocess mode is needed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_resident_memory_bytes, process_cpu_seconds_total, ...

INFERENCE_LATENCY = Histogram(
    "tuneforge_inference_latency_seconds",
    "Wall time of one inference request, from the request to its last token, by endpoint and whether "
    "the model is a base or a fine-tuned one.",
    ["endpoint", "model_kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
WEBHOOK_FAILURES = Counter(
    "tuneforge_webhook_failures",
    "Webhook deliveries that failed, by reason (timeout, connection, http_4xx, http_5xx, gave_up).",
    ["reason"],
    registry=REGISTRY,
)


def observe_inference(seconds: float, *, endpoint: str = "chat_completions", model_kind: str = "fine_tuned") -> None:
    """Record one inference request's latency. `model_kind` is "base" or "fine_tuned" (never the
    model's name: one series per fine-tuned model would grow without bound)."""
    INFERENCE_LATENCY.labels(endpoint=endpoint, model_kind=model_kind).observe(max(0.0, seconds))


@contextmanager
def time_inference(*, endpoint: str = "chat_completions", model_kind: str = "fine_tuned") -> Iterator[None]:
    """`with time_inference(...):` around a request's work records its latency, even when it raises."""
    start = time.perf_counter()
    try:
        yield
    finally:
        observe_inference(time.perf_counter() - start, endpoint=endpoint, model_kind=model_kind)


def record_webhook_failure(reason: str) -> None:
    """Count one failed webhook delivery attempt."""
    WEBHOOK_FAILURES.labels(reason=reason).inc()
