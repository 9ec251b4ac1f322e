"""`tuneforge api --workers 2`: two uvicorn processes, each running the reconciler and the webhook
deliverer (beside the session's `live_api`, a third). Every step is a conditional update or claim,
so racing them must apply each change exactly once."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import func, select, update

from tests.helpers import (
    TMP,
    WebhookReceiver,
    free_port,
    make_key,
    shakespeare_rows,
    spawn,
    stop,
    upload_jsonl,
    wait_http,
)
from tuneforge.app.core.config import Settings
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.models import Job, JobEvent
from tuneforge.app.db.types import utcnow


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_two_api_processes_reconcile_and_deliver_each_job_once(tiny_model: str, settings: Settings) -> None:
    key = make_key("replicas-co")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = spawn(
        ["api", "--port", str(port), "--workers", "2"],
        # The default attempt limit (3), as the session's live_api has: its reconciler races these two
        # (every 2 s), and with a limit of its own it would re-queue what these fail.
        env={"TUNEFORGE_RECONCILE_SECONDS": "0.3"},
        log=TMP / "api-replicas.log",
    )
    try:
        wait_http(f"{base}/healthz", proc)
        assert len(_children(proc.pid)) >= 2, "uvicorn should run 2 worker processes"
        with (
            WebhookReceiver() as receiver,
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as c,
        ):
            hook = c.post("/v1/webhooks", json={"url": receiver.url, "events": ["fine_tuning.job.failed"]}).json()
            file_id = upload_jsonl(c, shakespeare_rows(5))["id"]
            ids = [
                c.post("/v1/fine_tuning/jobs", json={"model": tiny_model, "training_file": file_id}).json()["id"]
                for _ in range(30)
            ]
            requeue, fail = ids[:20], ids[20:]
            # Every job's worker "died" at once: 20 on attempt 1 (re-queued), 10 on the last attempt, 3 (failed).
            past = utcnow() - dt.timedelta(minutes=5)
            with session_scope() as s:
                s.execute(
                    update(Job).where(Job.id.in_(ids)).values(status="running", worker_id="dead", lease_expires_at=past)
                )
                s.execute(update(Job).where(Job.id.in_(fail)).values(attempt=3))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with session_scope() as s:
                    left = s.scalar(
                        select(func.count()).select_from(Job).where(Job.id.in_(ids), Job.status == "running")
                    )
                if not left:
                    break
                time.sleep(0.2)
            receiver.wait(len(fail))
            time.sleep(1.5)  # a double delivery would arrive within a few deliverer rounds
            received = list(receiver.received)
            c.delete(f"/v1/webhooks/{hook['id']}")
        with session_scope() as s:
            jobs = {j.id: (j.status, j.attempt) for j in s.scalars(select(Job).where(Job.id.in_(ids)))}
            lost = Counter(
                s.scalars(
                    select(JobEvent.job_id).where(
                        JobEvent.job_id.in_(ids),
                        JobEvent.message.like("Worker lost%") | JobEvent.message.like("The worker stopped answering%"),
                    )
                )
            )
            # What the live tests left behind is theirs; these jobs are done being raced over.
            s.execute(update(Job).where(Job.id.in_(ids), Job.status == "queued").values(status="cancelled"))
    finally:
        stop(proc)
    assert all(jobs[j] == ("queued", 2) for j in requeue), jobs
    assert all(jobs[j][0] == "failed" for j in fail), jobs
    assert lost == Counter({j: 1 for j in ids}), "each job is reconciled exactly once"
    bodies = [json.loads(b) for b, _ in received]
    assert sorted(b["data"]["id"] for b in bodies) == sorted(fail), "one failed event per job"
    assert len({h["webhook-id"] for _, h in received}) == len(fail) == len(received), "no event sent twice"
