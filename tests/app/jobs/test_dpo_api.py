"""DPO through the API: preference rows checked at upload, the job shows `method` back in OpenAI's
shape, bad combinations are 400s naming the field, and the runner trains it (real database)."""

from __future__ import annotations

import json

import httpx

from tests.helpers import preference_rows, shakespeare_rows, upload_jsonl
from tuneforge.worker.runner import execute

DPO = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "batch_size": 8}}}


def test_a_row_missing_non_preferred_output_is_refused_naming_its_line(client: httpx.Client) -> None:
    rows = preference_rows(3)
    del rows[1]["non_preferred_output"]
    body = "\n".join(json.dumps(r) for r in rows).encode()
    r = client.post("/v1/files", files={"file": ("p.jsonl", body)}, data={"purpose": "fine-tune"})
    assert r.status_code == 400, r.text
    assert "line 2" in r.json()["error"]["message"]
    assert "non_preferred_output" in r.json()["error"]["message"]


def test_bad_dpo_requests_are_400s_naming_the_field(client: httpx.Client, tiny_model: str) -> None:
    prefs = upload_jsonl(client, preference_rows(4))["id"]
    plain = upload_jsonl(client, shakespeare_rows(4))["id"]
    cases = [
        ({"training_file": plain, "method": DPO}, "training_file"),
        ({"training_file": prefs, "method": {"type": "dpo", "supervised": {}}}, "method.supervised"),
        ({"training_file": prefs, "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}}, "beta"),
        ({"training_file": prefs, "preference": {"loss": "ipo"}}, "preference"),
        ({"training_file": prefs, "method": DPO, "training": {"packing": True}}, "training.packing"),
        ({"training_file": prefs, "method": DPO, "preference": {"beta": 0.5}}, "beta"),
    ]
    for body, param in cases:
        r = client.post("/v1/fine_tuning/jobs", json={"model": tiny_model, **body})
        assert r.status_code == 400, (body, r.text)
        assert param in (r.json()["error"]["param"] or ""), (body, r.json())


def test_dpo_job_trains_and_reports_preference_metrics(client: httpx.Client, tiny_model: str) -> None:
    file_id = upload_jsonl(client, preference_rows(40))["id"]
    body = {
        "model": tiny_model,
        "training_file": file_id,
        "seed": 2,
        "method": DPO,
        "preference": {"loss": "ipo"},
        "training": {"max_steps": 4, "learning_rate": 5e-2, "save_every": 2},
    }
    r = client.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["method"]["type"] == "dpo"
    assert job["method"]["dpo"]["hyperparameters"]["beta"] == 0.25
    assert job["spec"]["preference"] == {"beta": 0.25, "loss": "ipo", "length_normalization": False}

    assert execute(job["id"], worker_id="w-dpo") == "succeeded"
    done = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done["error"]
    assert "preference_accuracy" in done["final_metrics"]["validation"]
    points = client.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics").json()["data"]
    last = points[-1]
    assert {"reward_margin", "preference_accuracy", "rewards_chosen", "rewards_rejected"} <= set(last["extra"])
    assert "eval_loss" in last["extra"]  # the step's train and eval extras are merged
