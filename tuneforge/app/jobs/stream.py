"""Server-Sent Events for one job: status/progress changes, new events and new metric points.

Each poll opens a short session, so a stream holds no connection while it waits. The stream ends
when the job reaches a terminal state, when the client goes away, or after `max_seconds`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from tuneforge.app.core.limits import InFlightKind, hold
from tuneforge.app.db.engine import get_sessionmaker
from tuneforge.app.deps import PrincipalDep, SettingsDep
from tuneforge.app.jobs import repository
from tuneforge.app.jobs.schemas import FineTuningJob, JobEventObject, MetricPoint
from tuneforge.contract.status import TERMINAL


async def stream_slot(settings: SettingsDep, principal: PrincipalDep) -> AsyncIterator[None]:
    """One of the organization's stream slots, held until the stream ends (tuneforge/app/core/limits.py):
    each open stream polls the database every second, so one tenant cannot open thousands."""
    async with hold(settings, principal.organization_id, InFlightKind.STREAM):
        yield


StreamSlot = Annotated[None, Depends(stream_slot)]


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _poll(job_id: str, last_seq: int, last_step: int) -> tuple[dict[str, Any], list[Any], list[Any]]:
    with get_sessionmaker()() as session:
        job = repository.get(session, None, job_id)
        assert job is not None
        events = repository.events_after_seq(session, job_id, last_seq)
        points = list(repository.metrics(session, job_id, since_step=last_step))
        return (
            FineTuningJob.of(job).model_dump(mode="json"),
            [(e.seq, JobEventObject.of(e).model_dump(mode="json")) for e in events],
            [MetricPoint.of(m).model_dump(mode="json", exclude_none=True) for m in points],
        )


async def job_stream(
    request: Request,
    job_id: str,
    *,
    since_step: int = -1,
    after_seq: int = 0,
    interval: float = 1.0,
    max_seconds: float = 3600.0,
) -> AsyncIterator[str]:
    """`since_step` and `after_seq` skip the history a client already read (the dashboard reads a
    downsampled series and the last events first, so that a 100k-point job does not stream every point)."""
    last_seq, last_step, last_status = after_seq, since_step, None
    deadline = time.monotonic() + max_seconds
    yield "retry: 2000\n\n"
    while True:
        job, events, points = await run_in_threadpool(_poll, job_id, last_seq, last_step)
        status = (job["detailed_status"], job["progress"]["step"])
        if status != last_status:
            frame = {k: job[k] for k in ("id", "status", "detailed_status", "progress", "allowed_actions")}
            yield _sse("status", frame)
            last_status = status
        for seq, event in events:
            yield _sse("event", event)
            last_seq = seq
        if points:
            yield _sse("metrics", {"points": points})
            last_step = points[-1]["step"]
        if job["status"] in TERMINAL:
            yield _sse("done", {"status": job["status"], "error": job["error"]})
            return
        if time.monotonic() > deadline or await request.is_disconnected():
            return
        # Jittered: streams opened together (a page of jobs, or one tenant's flood) would otherwise
        # poll the database together every second, a burst that every other request waits behind.
        await asyncio.sleep(interval * random.uniform(0.5, 1.5))
