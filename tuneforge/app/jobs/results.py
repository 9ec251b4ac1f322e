"""A finished job's results file: its step metrics as a CSV, the file OpenAI lists in `result_files`.

Written by tuneforge/app/jobs/lifecycle.py in the transaction of the transition that finishes the job
(succeeded, failed, cancelled), so it is written once: a transition applies at most once, and a job
that already lists a results file gets no second one. A failed or cancelled job gets one only if it
logged metrics. The file is an ordinary file of the job's organization (purpose `fine-tune-results`),
read through `/v1/files/{id}/content`; it counts toward the organization's storage like any other.

Columns, as OpenAI's: step, train_loss, train_accuracy (token accuracy of the step's last
micro-batch), valid_loss and valid_mean_token_accuracy (at the steps that evaluated); a value a step
did not log is an empty cell.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tuneforge.app.core.config import get_settings
from tuneforge.app.core.ids import new_id
from tuneforge.app.core.storage import file_key, get_store
from tuneforge.app.db.models import File, Job, JobMetric
from tuneforge.app.jobs import repository
from tuneforge.contract.status import JobStatus
from tuneforge.storage import StoreError

log = logging.getLogger("tuneforge.jobs")

PURPOSE = "fine-tune-results"
FILENAME = "step_metrics.csv"
HEADER = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


def to_csv(points: Sequence[JobMetric]) -> bytes:
    """The CSV of a job's step series (sorted by step), one row per logged step."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for p in points:
        extra: dict[str, Any] = p.extra if isinstance(p.extra, dict) else {}
        writer.writerow(
            (
                p.step,
                _cell(p.loss),
                _cell(extra.get("train_mean_token_accuracy")),
                _cell(p.eval_loss),
                _cell(extra.get("valid_mean_token_accuracy")),
            )
        )
    return out.getvalue().encode()


def _cell(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return ""
    return repr(float(value))


def attach(session: Session, job_id: str) -> str | None:
    """Write the job's results file and list it in `result_files`; returns its id, or None when
    there is nothing to write (no metrics on a failed or cancelled job) or it already has one.

    An unreachable artifact store never blocks the transition that calls this: the job finishes
    without a results file and its events say so."""
    job = session.execute(
        select(Job.organization_id, Job.status, Job.result_files).where(Job.id == job_id)
    ).one_or_none()
    if job is None or job.result_files:
        return None
    points = repository.metrics(session, job_id, since_step=None)
    if not points and job.status != JobStatus.SUCCEEDED:
        return None
    data = to_csv(points)
    file_id = new_id("file")
    key = file_key(file_id)
    try:
        get_store(get_settings()).put_bytes(key, data)
    except StoreError as exc:
        log.warning("job %s: results file not written: %s", job_id, exc)
        repository.add_event(
            session, job_id, "The results file could not be written: the artifact store was unreachable", level="warn"
        )
        return None
    session.add(
        File(
            id=file_id,
            organization_id=job.organization_id,
            filename=FILENAME,
            purpose=PURPOSE,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            format="csv",
            n_rows=len(points),
            columns={name: {"type": "number"} for name in HEADER},
            status="processed",
            storage_path=key,
        )
    )
    session.flush()
    session.execute(update(Job).where(Job.id == job_id).values(result_files=[file_id]))
    return file_id
