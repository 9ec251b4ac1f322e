"""`result_files`: the CSV of a finished job's step metrics, written once by the transition that
finishes it (tuneforge/app/jobs/results.py through lifecycle.py), and read as an ordinary file."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
from sqlalchemy import func, select

from tests.helpers import insert_job, make_spec, org_id_of
from tuneforge.app.db.engine import session_scope
from tuneforge.app.db.models import File, JobMetric
from tuneforge.app.jobs import lifecycle, results

WORKER = "w-results"


def _job(status: str, **values: Any) -> str:
    return insert_job(org_id_of("acme"), status, spec=make_spec().model_dump(mode="json"), **values)


def _running_job_with_metrics(points: list[dict[str, Any]]) -> str:
    job_id = _job("running", worker_id=WORKER)
    with session_scope() as s:
        for p in points:
            s.add(JobMetric(job_id=job_id, **p))
    return job_id


POINTS: list[dict[str, Any]] = [
    {"step": 0, "eval_loss": 3.5, "extra": {"valid_mean_token_accuracy": 0.1}},
    {"step": 1, "loss": 3.25, "extra": {"train_mean_token_accuracy": 0.125}},
    {
        "step": 2,
        "loss": 2.5,
        "eval_loss": 2.75,
        "extra": {"train_mean_token_accuracy": 0.25, "valid_mean_token_accuracy": 0.5},
    },
    {"step": 3, "loss": float("nan")},
]


def test_a_succeeded_job_lists_one_results_csv_its_org_can_read(client: httpx.Client, other_key: str) -> None:
    job_id = _running_job_with_metrics(POINTS)
    with session_scope() as s:
        assert lifecycle.succeed(s, job_id, WORKER, fine_tuned_model="ft:tiny:acme::x")
    with session_scope() as s:  # a second report of the end applies nothing and writes no second file
        assert not lifecycle.succeed(s, job_id, WORKER, fine_tuned_model="ft:tiny:acme::x")
        assert not lifecycle.fail(s, job_id, WORKER, error={"code": "internal", "message": "x", "param": None})

    job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert len(job["result_files"]) == 1
    file_id = job["result_files"][0]
    meta = client.get(f"/v1/files/{file_id}").json()
    assert meta["purpose"] == "fine-tune-results" and meta["filename"] == "step_metrics.csv"
    body = client.get(f"/v1/files/{file_id}/content")
    assert body.status_code == 200 and body.headers["content-type"].startswith("text/csv")
    assert meta["bytes"] == len(body.content)
    rows = list(csv.reader(io.StringIO(body.text)))
    assert rows == [
        ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"],
        ["0", "", "", "3.5", "0.1"],
        ["1", "3.25", "0.125", "", ""],
        ["2", "2.5", "0.25", "2.75", "0.5"],
        ["3", "", "", "", ""],  # a NaN loss is an empty cell, never "nan"
    ]
    listed = client.get("/v1/files", params={"purpose": "fine-tune-results"}).json()["data"]
    assert file_id in [f["id"] for f in listed]

    other = {"Authorization": f"Bearer {other_key}"}
    for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
        r = client.get(path, headers=other)
        assert r.status_code == 404, r.text


def test_failed_and_cancelled_jobs_get_one_only_when_they_logged_metrics(client: httpx.Client) -> None:
    error = {"code": "internal", "message": "boom", "param": None}
    bare = _job("running", worker_id=WORKER)
    with session_scope() as s:
        assert lifecycle.fail(s, bare, WORKER, error=error)
    assert client.get(f"/v1/fine_tuning/jobs/{bare}").json()["result_files"] == []

    cancelled = _running_job_with_metrics(POINTS[1:2])
    with session_scope() as s:
        assert lifecycle.request_cancel(s, cancelled)
        assert lifecycle.complete_cancel(s, cancelled, WORKER)
    (file_id,) = client.get(f"/v1/fine_tuning/jobs/{cancelled}").json()["result_files"]
    assert client.get(f"/v1/files/{file_id}/content").text.splitlines()[1] == "1,3.25,0.125,,"

    never_ran = _job("queued")
    with session_scope() as s:
        before = s.scalar(select(func.count()).select_from(File).where(File.filename == results.FILENAME))
        assert lifecycle.cancel(s, never_ran)
        after = s.scalar(select(func.count()).select_from(File).where(File.filename == results.FILENAME))
        assert before == after  # nothing trained, nothing written
    assert client.get(f"/v1/fine_tuning/jobs/{never_ran}").json()["result_files"] == []
