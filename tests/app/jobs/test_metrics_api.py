"""The metrics series is downsampled in SQL: every k-th point plus the last, at most max_points."""

from __future__ import annotations

import itertools

import httpx
import pytest

from tests.helpers import shakespeare_rows, upload_jsonl


@pytest.fixture(scope="module")
def long_job(api_key: str, tiny_model: str) -> str:
    from fastapi.testclient import TestClient

    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.jobs import repository
    from tuneforge.app.main import create_app

    with TestClient(create_app(), headers={"Authorization": f"Bearer {api_key}"}) as c:
        file_id = upload_jsonl(c, shakespeare_rows(4))["id"]
        job = c.post("/v1/fine_tuning/jobs", json={"model": tiny_model, "training_file": file_id}).json()
    with session_scope() as s:
        repository.upsert_metrics(s, job["id"], [{"step": i, "loss": 10 / i} for i in range(1, 1001)])
    return job["id"]


@pytest.mark.parametrize(
    ("max_points", "since"), [(7, None), (500, None), (2, None), (1000, None), (9, 990), (50, 400)]
)
def test_downsampled_series_keeps_shape_and_end(
    client: httpx.Client, long_job: str, max_points: int, since: int | None
) -> None:
    params = {"max_points": max_points} | ({"since_step": since} if since is not None else {})
    body = client.get(f"/v1/fine_tuning/jobs/{long_job}/metrics", params=params).json()
    total = 1000 - (since or 0)
    steps = [p["step"] for p in body["data"]]
    assert body["total_points"] == total
    assert len(steps) <= max_points and steps == sorted(steps)
    assert steps[0] == (since or 0) + 1 and steps[-1] == 1000
    if total > max_points:
        stride = -(-total // max_points)
        assert all(b - a == stride for a, b in itertools.pairwise(steps[:-1]))
    else:
        assert len(steps) == total
    assert body["data"][-1]["loss"] == pytest.approx(0.01)
