"""Sweeps end to end: the real `tuneforge api` (whose sweep driver starts trials and prunes) and a
real `tuneforge worker` training tiny-llama trials."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.helpers import TMP, shakespeare_rows, spawn, stop, upload_jsonl, worker_log

SWEEPS = "/v1/fine_tuning/sweeps"


@pytest.fixture
def api(live_api: str, api_key: str, live_worker: subprocess.Popen[bytes]) -> httpx.Client:
    return httpx.Client(base_url=live_api, headers={"Authorization": f"Bearer {api_key}"}, timeout=30)


@pytest.fixture
def training_file(api: httpx.Client) -> str:
    return upload_jsonl(api, shakespeare_rows(48))["id"]


def until(
    api: httpx.Client, sweep_id: str, done: Callable[[dict[str, Any]], bool], stall: float = 90
) -> dict[str, Any]:
    """Poll until `done(sweep)`. The deadline follows progress: it only fails after `stall` seconds
    in which no trial's step moved and no trial was created."""
    last, last_change = None, time.monotonic()
    while True:
        sweep = api.get(f"{SWEEPS}/{sweep_id}").json()
        if done(sweep):
            return sweep
        trials = api.get(f"{SWEEPS}/{sweep_id}/trials").json()["data"]
        progress = [(t["job_id"], t["status"], t["step"]) for t in trials]
        if progress != last:
            last, last_change = progress, time.monotonic()
        elif time.monotonic() - last_change > stall:
            raise AssertionError(f"sweep stalled: {sweep}\n{trials}\n{worker_log()}")
        time.sleep(0.5)


def finished(sweep: dict[str, Any]) -> bool:
    return sweep["status"] != "running"


def test_a_grid_of_three_picks_the_best_trial_by_its_own_final_metrics(
    api: httpx.Client, tiny_model: str, training_file: str
) -> None:
    body = {
        "model": tiny_model,
        "training_file": training_file,
        "seed": 3,
        "training": {"max_steps": 6, "batch_size": 8},
        "lora": {"r": 4, "alpha": 8},
        "search_space": {"training.learning_rate": {"values": [1e-6, 3e-3, 2e-2]}},
        "strategy": "grid",
        "max_parallel": 2,
    }
    r = api.post(SWEEPS, json=body)
    assert r.status_code == 200, r.text
    sweep = until(api, r.json()["id"], finished)
    assert sweep["status"] == "succeeded", sweep
    assert sweep["trial_counts"]["succeeded"] == 3 and sweep["trials_created"] == 3

    trials = api.get(f"{SWEEPS}/{sweep['id']}/trials").json()["data"]
    finals = {}
    for t in trials:
        job = api.get(f"/v1/fine_tuning/jobs/{t['job_id']}").json()
        assert job["status"] == "succeeded" and job["metadata"]["sweep_id"] == sweep["id"]
        finals[job["id"]] = job["final_metrics"]["validation"]["eval_loss"]
        assert t["value"] == finals[job["id"]]
    best_job = min(finals, key=lambda j: finals[j])
    assert sweep["best_trial"]["job_id"] == best_job
    assert sweep["best_trial"]["value"] == finals[best_job]
    assert sweep["best_trial"]["params"] == next(t["params"] for t in trials if t["job_id"] == best_job)
    assert finals[best_job] < finals[trials[0]["job_id"]]  # lr 1e-6 barely moves: not the best
    adapter = api.get(sweep["best_trial"]["adapter_url"])
    assert adapter.status_code == 200 and adapter.headers["content-type"] == "application/gzip"


def test_the_median_pruner_stops_a_hopeless_trial_and_keeps_its_checkpoints(
    api: httpx.Client, tiny_model: str, training_file: str
) -> None:
    body = {
        "model": tiny_model,
        "training_file": training_file,
        "seed": 3,
        "training": {"max_steps": 24, "batch_size": 8, "eval_every": 4, "save_every": 4},
        "lora": {"r": 4, "alpha": 8},
        # Trial 0 learns; trial 1 (lr 1e-9) cannot: its first evaluation is worse than trial 0's at that
        # step, and the driver stops it long before its 24 steps (within a heartbeat and a driver round).
        "search_space": {"training.learning_rate": {"values": [2e-2, 1e-9]}},
        "strategy": "grid",
        "max_parallel": 1,
        "pruner": {"type": "median", "n_startup_trials": 1},
    }
    r = api.post(SWEEPS, json=body)
    assert r.status_code == 200, r.text
    sweep = until(api, r.json()["id"], finished)
    assert sweep["status"] == "succeeded", sweep
    trials = api.get(f"{SWEEPS}/{sweep['id']}/trials").json()["data"]
    good, bad = trials
    assert good["status"] == "succeeded" and not good["pruned"]
    assert bad["status"] == "cancelled" and bad["pruned"], bad
    assert bad["value"] is None and bad["last_reported"] > good["value"]
    assert sweep["best_trial"]["job_id"] == good["job_id"]
    assert sweep["trial_counts"]["pruned"] == 1

    job = api.get(f"/v1/fine_tuning/jobs/{bad['job_id']}").json()
    assert job["stop_reason"] == "pruned"
    events = [e["message"] for e in api.get(f"/v1/fine_tuning/jobs/{job['id']}/events?limit=100").json()["data"]]
    assert events[0] == "Trial pruned by its sweep; its checkpoints are kept"
    assert any(m.startswith(f"Pruned by sweep {sweep['id']}") for m in events)
    checkpoints = api.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    assert checkpoints, "the pruned trial's checkpoints are kept"
    assert max(c["step_number"] for c in checkpoints) <= job["progress"]["step"] < 24


def test_cancelling_a_sweep_cancels_its_trials_and_starts_no_more(
    api: httpx.Client, tiny_model: str, training_file: str
) -> None:
    body = {
        "model": tiny_model,
        "training_file": training_file,
        "training": {"max_steps": 5000, "batch_size": 8},
        "lora": {"r": 4, "alpha": 8},
        "search_space": {"training.learning_rate": {"log_uniform": [1e-4, 1e-2]}},
        "strategy": "tpe",
        "max_trials": 4,
        "max_parallel": 2,
        "seed": 1,
    }
    r = api.post(SWEEPS, json=body)
    assert r.status_code == 200, r.text
    sweep_id = r.json()["id"]
    until(api, sweep_id, lambda s: s["trial_counts"]["running"] >= 1)
    cancelled = api.post(f"{SWEEPS}/{sweep_id}/cancel").json()
    assert cancelled["status"] == "cancelled"

    def all_stopped(sweep: dict[str, Any]) -> bool:
        return sweep["trial_counts"]["cancelled"] == 2

    sweep = until(api, sweep_id, all_stopped)
    assert sweep["trials_created"] == 2 and sweep["trial_counts"]["pruned"] == 0
    for t in api.get(f"{SWEEPS}/{sweep_id}/trials").json()["data"]:
        job = api.get(f"/v1/fine_tuning/jobs/{t['job_id']}").json()
        assert job["status"] == "cancelled" and job["stop_reason"] is None and not t["pruned"]


def test_a_trial_whose_worker_is_killed_resumes_and_its_sweep_completes(
    api: httpx.Client,
    tiny_model: str,
    training_file: str,
    live_worker: subprocess.Popen[bytes],
) -> None:
    """Last in this module: it kills the module's worker (SIGKILL, no hand-back) and starts another.
    The reconciler re-queues the trial when its lease expires; the new worker resumes it from its
    checkpoint, and the sweep driver goes on to the next trial."""
    body = {
        "model": tiny_model,
        "training_file": training_file,
        "seed": 3,
        "training": {"max_steps": 16, "batch_size": 8, "save_every": 4, "eval_every": 8},
        "lora": {"r": 4, "alpha": 8},
        "search_space": {"training.learning_rate": {"values": [1e-2, 3e-3]}},
        "strategy": "grid",
        "max_parallel": 1,
    }
    r = api.post(SWEEPS, json=body)
    assert r.status_code == 200, r.text
    sweep_id = r.json()["id"]

    def trial0_checkpointed(_: dict[str, Any]) -> bool:
        trial = api.get(f"{SWEEPS}/{sweep_id}/trials").json()["data"][0]
        return trial["status"] == "running" and trial["step"] >= 5

    until(api, sweep_id, trial0_checkpointed)
    os.killpg(live_worker.pid, signal.SIGKILL)
    live_worker.wait()
    replacement = spawn(["worker", "--hostname", f"test-r-{os.getpid()}@%h"], log=TMP / "worker-replacement.log")
    try:
        sweep = until(api, sweep_id, finished, stall=150)
    finally:
        stop(replacement, timeout=30)
    trials = api.get(f"{SWEEPS}/{sweep_id}/trials").json()["data"]
    jobs = [api.get(f"/v1/fine_tuning/jobs/{t['job_id']}").json() for t in trials]
    why = [(j["status"], j["attempt"], j["error"]) for j in jobs]
    assert sweep["status"] == "succeeded", (sweep, why)
    assert sweep["trial_counts"]["succeeded"] == 2, why
    first = trials[0]
    job = api.get(f"/v1/fine_tuning/jobs/{first['job_id']}").json()
    assert job["attempt"] == 2
    events = [e["message"] for e in api.get(f"/v1/fine_tuning/jobs/{job['id']}/events?limit=100").json()["data"]]
    assert any(m.startswith("Resumed from step") for m in events), events
