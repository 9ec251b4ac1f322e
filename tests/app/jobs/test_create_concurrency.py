"""Job creation under concurrency, against a real `tuneforge api` process on PostgreSQL: the same
Idempotency-Key sent at once makes one job (it was a 500 from the unique index for 32 to 45 of 80),
and the per-organization queue cap holds when 40 POSTs arrive together (12 to 19 jobs were created
under a cap of 5). Paused jobs count against the cap."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.helpers import TMP, free_port, make_key, shakespeare_rows, spawn, stop, upload_jsonl, wait_http
from tuneforge.app.core.config import Settings

CAP = 5
CONCURRENT = 40


@pytest.fixture(scope="module")
def capped_api() -> Iterator[str]:
    """`tuneforge api` with a queue cap of 5 and no background loops (nothing dispatches or
    reconciles the jobs these tests make; they stay queued)."""
    port = free_port()
    proc = spawn(
        ["api", "--port", str(port), "--no-reconciler"],
        env={"TUNEFORGE_MAX_QUEUED_JOBS_PER_ORG": str(CAP)},
        log=TMP / "capped-api.log",
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture
def tenant(capped_api: str, request: pytest.FixtureRequest) -> Iterator[tuple[httpx.Client, str]]:
    """A fresh organization on `capped_api` (its counts start at zero) and a file of its own."""
    headers = {"Authorization": f"Bearer {make_key(f'concurrency-{request.node.name}')}"}
    with httpx.Client(base_url=capped_api, headers=headers, timeout=120) as c:
        yield c, upload_jsonl(c, shakespeare_rows(8))["id"]


def _at_once(n: int, send: Any) -> list[httpx.Response]:
    """`send(i)` from `n` threads released together."""
    gate = threading.Barrier(n)

    def one(i: int) -> httpx.Response:
        gate.wait()
        return send(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def _jobs(c: httpx.Client) -> list[dict[str, Any]]:
    return list(c.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"])


def test_the_same_idempotency_key_at_once_makes_one_job(tenant: tuple[httpx.Client, str], tiny_model: str) -> None:
    c, file_id = tenant
    body = {"model": tiny_model, "training_file": file_id, "training": {"max_steps": 1}}
    key = {"Idempotency-Key": "k"}
    answers = _at_once(CONCURRENT, lambda _: c.post("/v1/fine_tuning/jobs", json=body, headers=key))
    assert Counter(r.status_code for r in answers) == {200: CONCURRENT}, [r.text for r in answers if r.is_error]
    assert len({r.json()["id"] for r in answers}) == 1
    assert len(_jobs(c)) == 1


def test_one_key_with_two_bodies_at_once_is_one_job_and_409s(tenant: tuple[httpx.Client, str], tiny_model: str) -> None:
    c, file_id = tenant
    bodies = [
        {"model": tiny_model, "training_file": file_id, "training": {"max_steps": n}, "suffix": f"s{n}"} for n in (1, 2)
    ]
    answers = _at_once(
        CONCURRENT,
        lambda i: c.post("/v1/fine_tuning/jobs", json=bodies[i % 2], headers={"Idempotency-Key": "shared"}),
    )
    codes = Counter(r.status_code for r in answers)
    assert set(codes) == {200, 409} and codes[200] == CONCURRENT // 2, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers if r.status_code == 200}) == 1
    conflict = next(r for r in answers if r.status_code == 409)
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    assert conflict.headers["x-should-retry"] == "false"
    assert len(_jobs(c)) == 1


def test_the_queue_cap_holds_under_40_simultaneous_creates(tenant: tuple[httpx.Client, str], tiny_model: str) -> None:
    c, file_id = tenant
    body = {"model": tiny_model, "training_file": file_id, "training": {"max_steps": 1}}
    answers = _at_once(CONCURRENT, lambda _: c.post("/v1/fine_tuning/jobs", json=body))
    codes = Counter(r.status_code for r in answers)
    assert codes == {200: CAP, 429: CONCURRENT - CAP}, [r.text for r in answers if r.status_code not in (200, 429)]
    assert all(r.json()["error"]["code"] == "queued_jobs_limit" for r in answers if r.status_code == 429)
    assert len(_jobs(c)) == CAP


def test_paused_jobs_count_against_the_queue_cap(
    client: httpx.Client, settings: Settings, monkeypatch: pytest.MonkeyPatch, tiny_model: str
) -> None:
    """Pausing queued jobs used to make room for more (24 under a cap of 5)."""
    headers = {"Authorization": f"Bearer {make_key('cap-paused')}"}
    file_id = upload_jsonl(client, shakespeare_rows(8), headers=headers)["id"]
    monkeypatch.setattr(settings, "max_queued_jobs_per_org", 3)
    body = {"model": tiny_model, "training_file": file_id, "training": {"max_steps": 1}}
    made = [client.post("/v1/fine_tuning/jobs", headers=headers, json=body).json()["id"] for _ in range(3)]
    for job_id in made[:2]:
        assert client.post(f"/v1/fine_tuning/jobs/{job_id}/pause", headers=headers).json()["status"] == "paused"
    over = client.post("/v1/fine_tuning/jobs", headers=headers, json=body)
    assert over.status_code == 429, over.text
    assert over.json()["error"]["code"] == "queued_jobs_limit" and "paused" in over.json()["error"]["message"]
    # Cancelling a paused job frees its place.
    client.post(f"/v1/fine_tuning/jobs/{made[0]}/cancel", headers=headers)
    assert client.post("/v1/fine_tuning/jobs", headers=headers, json=body).status_code == 200
