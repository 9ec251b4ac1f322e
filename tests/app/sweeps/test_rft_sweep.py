"""A sweep over a reinforcement hyperparameter (`reinforcement.kl_coef`): its trials are RFT jobs with
the values applied, they train (in-process worker, tiny model), the sweep picks the best by the
objective (eval_loss = -reward), and each trial's webhooks and the sweep's are in the outbox."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.helpers import make_key, org_id_of, outbox, subscribe_all, upload_jsonl
from tuneforge.app.core.config import Settings
from tuneforge.app.db.engine import session_scope
from tuneforge.app.sweeps.driver import advance
from tuneforge.worker.runner import execute

SWEEPS = "/v1/fine_tuning/sweeps"
HAS_E = {"type": "string_check", "name": "has_e", "input": "{{sample.output_text}}",
         "reference": "{{item.letter}}", "operation": "ilike"}  # fmt: skip


def prompts(n: int) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": f"Say something, number {i}"}], "letter": "e"} for i in range(n)]


def test_a_sweep_over_kl_coef_trains_rft_trials_and_sends_their_webhooks(
    client: httpx.Client, tiny_model: str, settings: Settings
) -> None:
    name = f"rft-sweep-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {make_key(name)}"}
    hook = subscribe_all(org_id_of(name))
    body: dict[str, Any] = {
        "model": tiny_model,
        "training_file": upload_jsonl(client, prompts(8), headers=headers)["id"],
        "validation_file": upload_jsonl(client, prompts(2), headers=headers)["id"],
        "seed": 3,
        "method": {"type": "reinforcement", "reinforcement": {"grader": HAS_E}},
        "training": {"max_steps": 2, "batch_size": 4},
        "reinforcement": {"generations_per_prompt": 2, "max_new_tokens": 2, "eval_samples": 2},
        "search_space": {"reinforcement.kl_coef": {"values": [0.0, 0.5]}},
        "strategy": "grid",
        "max_parallel": 2,
    }
    bad = {**body, "search_space": {"reinforcement.generations_per_prompt": {"values": [1]}}}
    r = client.post(SWEEPS, json=bad, headers=headers)
    assert r.status_code == 400 and "generations_per_prompt" in r.json()["error"]["param"], r.text

    r = client.post(SWEEPS, json=body, headers=headers)
    assert r.status_code == 200, r.text
    sweep_id = r.json()["id"]
    trials = client.get(f"{SWEEPS}/{sweep_id}/trials", headers=headers).json()["data"]
    assert [t["params"] for t in trials] == [{"reinforcement.kl_coef": 0.0}, {"reinforcement.kl_coef": 0.5}]
    jobs = [t["job_id"] for t in trials]
    for job_id, kl in zip(jobs, (0.0, 0.5), strict=True):
        spec = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=headers).json()["spec"]
        assert spec["method"] == "reinforcement" and spec["reinforcement"]["kl_coef"] == kl
        assert execute(job_id, worker_id="w-rft-sweep") == "succeeded"

    with session_scope() as s:
        advance(s, settings, sweep_id, lambda _: None)
    sweep = client.get(f"{SWEEPS}/{sweep_id}", headers=headers).json()
    assert sweep["status"] == "succeeded", sweep
    finals = {
        j: client.get(f"/v1/fine_tuning/jobs/{j}", headers=headers).json()["final_metrics"]["validation"] for j in jobs
    }
    assert all(f["eval_loss"] == -f["reward"] for f in finals.values())  # the objective is the reward
    assert sweep["best_trial"]["value"] == min(f["eval_loss"] for f in finals.values())
    sent = outbox(hook)
    for job_id in jobs:
        assert ("fine_tuning.job.running", job_id) in sent and ("fine_tuning.job.succeeded", job_id) in sent
    assert ("fine_tuning.sweep.completed", sweep_id) in sent
