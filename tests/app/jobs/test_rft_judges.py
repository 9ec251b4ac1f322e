"""`score_model` / `label_model` judges inside reinforcement jobs: a base model under the models root or
an `ft:` model of the job's own organization is accepted and answers in the worker (base + adapter,
merged); another organization's `ft:` id, an unknown one, or one trained for another task is a 400
naming the grader field."""

from __future__ import annotations

from typing import Any

import httpx

from tests.helpers import shakespeare_rows, upload_jsonl
from tuneforge.worker.runner import execute

JOBS = "/v1/fine_tuning/jobs"


def judge(model: str) -> dict[str, Any]:
    return {
        "type": "score_model",
        "name": "judge",
        "model": model,
        "input": [{"role": "user", "content": "Score 0 to 1: {{sample.output_text}}"}],
        "sampling_params": {"max_completions_tokens": 2},
    }


def rft_body(model: str, file_id: str, grader: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": model,
        "training_file": file_id,
        "method": {"type": "reinforcement", "reinforcement": {"grader": grader}},
        "training": {"max_steps": 1, "batch_size": 2},
        "reinforcement": {"generations_per_prompt": 2, "max_new_tokens": 2, "eval_samples": 1},
        "data": {"validation_split": 0.0},
        "samples": {"from_validation": 0, "prompts": []},
    }


def prompts(n: int) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": f"Say something, number {i}"}], "topic": "x"} for i in range(n)]


def test_own_ft_judge_answers_in_the_worker_and_others_are_400(
    client: httpx.Client, tiny_model: str, other_key: str
) -> None:
    sft = {"model": tiny_model, "training_file": upload_jsonl(client, shakespeare_rows(16))["id"],
           "training": {"max_steps": 1, "batch_size": 8}}  # fmt: skip
    first = client.post(JOBS, json=sft).json()
    assert execute(first["id"], worker_id="w-judge") == "succeeded"
    ft = client.get(f"{JOBS}/{first['id']}").json()["fine_tuned_model"]

    file_id = upload_jsonl(client, prompts(4))["id"]
    r = client.post(JOBS, json=rft_body(tiny_model, file_id, judge(ft)))
    assert r.status_code == 200, r.text
    assert execute(r.json()["id"], worker_id="w-judge") == "succeeded"
    events = client.get(f"{JOBS}/{r.json()['id']}/events", params={"limit": 200}).json()["data"]
    # The tiny judge writes noise (a parse error scores 0); what must not happen is a judge that could
    # not be loaded (a server error): the ft: judge was resolved to its base and adapter in the worker.
    errors = [e["data"].get("errors", {}) for e in events if (e.get("data") or {}).get("grader") == "judge"]
    assert not any(x.get("model_grader_server_error") for x in errors), errors

    # Another organization's ft: id, an unknown one, a malformed one: 400 naming the grader field.
    other = {"Authorization": f"Bearer {other_key}"}
    other_file = upload_jsonl(client, prompts(4), headers=other)["id"]
    for model, headers, fid in ((ft, other, other_file), (ft + "x", None, file_id), ("ft:nope", None, file_id)):
        r = client.post(JOBS, json=rft_body(tiny_model, fid, judge(model)), headers=headers)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "method.reinforcement.grader.model", r.json()
    # Nested in a multi grader, the path names the sub-grader.
    multi = {"type": "multi", "name": "m", "graders": {"j": judge(ft)}, "calculate_output": "j"}
    r = client.post(JOBS, json=rft_body(tiny_model, other_file, multi), headers=other)
    assert (r.status_code, r.json()["error"]["param"]) == (400, "method.reinforcement.grader.graders.j.model")
