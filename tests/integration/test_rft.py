"""Reinforcement fine-tuning over real processes, driven by the official openai SDK: graders validated and
run (`client.fine_tuning.alpha.graders`), a `reinforcement` job created, its events and checkpoints
listed, and the result chatted with; a grader that reads a field the file lacks is refused at POST."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.helpers import wait_sdk_job

HAS_E: Any = {
    "type": "string_check",
    "name": "has_e",
    "input": "{{sample.output_text}}",
    "reference": "{{item.letter}}",
    "operation": "ilike",
}


def prompt_rows(n: int) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": f"Say something, number {i}"}], "letter": "e"} for i in range(n)]


def upload(sdk: OpenAI, tmp_path: Path, rows: list[dict[str, Any]]) -> str:
    data = tmp_path / "prompts.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with data.open("rb") as fh:
        return sdk.files.create(file=fh, purpose="fine-tune").id


def test_sdk_validates_and_runs_graders(sdk: OpenAI) -> None:
    valid = sdk.fine_tuning.alpha.graders.validate(grader=HAS_E)
    assert valid.grader is not None and valid.grader.type == "string_check"
    run = sdk.fine_tuning.alpha.graders.run(grader=HAS_E, model_sample="Hello there", item={"letter": "e"})
    assert run.reward == 1.0 and run.metadata.errors.invalid_variable_error is False
    similar: Any = {"type": "text_similarity", "name": "sim", "input": "{{sample.output_text}}",
               "reference": "{{item.answer}}", "evaluation_metric": "bleu"}  # fmt: skip
    multi: Any = {
        "type": "multi",
        "name": "both",
        "graders": {"e": HAS_E, "sim": similar},
        "calculate_output": "0.5 * e + 0.5 * sim",
    }
    run = sdk.fine_tuning.alpha.graders.run(
        grader=multi, model_sample="the cat sat", item={"letter": "e", "answer": "the cat sat"}
    )
    assert run.reward == pytest.approx(1.0) and run.sub_rewards == {"e": 1.0, "sim": pytest.approx(1.0)}
    missing = sdk.fine_tuning.alpha.graders.run(grader=HAS_E, model_sample="x", item={})
    assert missing.reward == 0.0 and missing.metadata.errors.invalid_variable_error is True
    python: Any = {"type": "python", "name": "py", "source": "def grade(sample, item):\n    return 1.0\n"}
    with pytest.raises(openai.BadRequestError, match="python graders are turned off"):
        sdk.fine_tuning.alpha.graders.validate(grader=python)
    with pytest.raises(openai.BadRequestError):
        bad_formula: Any = {**multi, "calculate_output": "__import__('os')"}
        sdk.fine_tuning.alpha.graders.validate(grader=bad_formula)


def test_sdk_score_model_grader_through_the_inference_path(
    sdk: OpenAI, inference_worker: subprocess.Popen[bytes], tiny_model: str
) -> None:
    judge: Any = {"type": "score_model", "name": "judge", "model": tiny_model,
             "input": [{"role": "user", "content": "Score 0 to 1: {{sample.output_text}}"}]}  # fmt: skip
    run = sdk.fine_tuning.alpha.graders.run(grader=judge, model_sample="hello", item={})
    # The tiny judge writes noise: a number in [0, 1] if it wrote one, else a parse error; never a server error.
    assert run.metadata.errors.api_model_grader_server_error is False
    assert 0.0 <= run.reward <= 1.0
    label: Any = {"type": "label_model", "name": "lab", "model": "no-such-model", "labels": ["good", "bad"],
             "passing_labels": ["good"], "input": [{"role": "user", "content": "{{sample.output_text}}"}]}  # fmt: skip
    run = sdk.fine_tuning.alpha.graders.run(grader=label, model_sample="hello", item={})
    assert run.reward == 0.0 and run.metadata.errors.api_model_grader_server_error is True


def test_sdk_reinforcement_job_events_checkpoints_and_chat(
    sdk: OpenAI, inference_worker: subprocess.Popen[bytes], tiny_model: str, tmp_path: Path
) -> None:
    file_id = upload(sdk, tmp_path, prompt_rows(16))
    unknown_field: Any = {"type": "reinforcement", "reinforcement": {"grader": {**HAS_E, "reference": "{{item.nope}}"}}}
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.fine_tuning.jobs.create(
            model=tiny_model,
            training_file=file_id,
            method=unknown_field,
        )
    assert "method.reinforcement.grader.reference" in str(refused.value) and file_id in str(refused.value)
    with pytest.raises(openai.BadRequestError, match="reasoning_effort"):
        sdk.fine_tuning.jobs.create(
            model=tiny_model,
            training_file=file_id,
            method={
                "type": "reinforcement",
                "reinforcement": {"grader": HAS_E, "hyperparameters": {"reasoning_effort": "high"}},
            },
        )

    job = sdk.fine_tuning.jobs.create(
        model=tiny_model,
        training_file=file_id,
        method={
            "type": "reinforcement",
            "reinforcement": {
                "grader": HAS_E,
                "hyperparameters": {
                    "batch_size": 4,
                    "eval_interval": 2,
                    "eval_samples": 2,
                    "learning_rate_multiplier": 250,
                },
            },
        },
        extra_body={
            "training": {"max_steps": 4, "save_every": 2},
            "reinforcement": {"generations_per_prompt": 4, "max_new_tokens": 2},
            "lora": {"target_modules": ["q_proj", "v_proj", "lm_head"]},
            "data": {"validation_split": 0.25},
        },
    )
    assert job.method is not None and job.method.type == "reinforcement"
    assert job.method.reinforcement is not None and job.method.reinforcement.grader.type == "string_check"
    done = wait_sdk_job(sdk, job.id)
    assert done.status == "succeeded", done.error
    final = (done.model_extra or {})["final_metrics"]
    assert "reward" in final["validation"] and "reward" in final["baseline"]
    events = [e.message for e in sdk.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any(m.startswith("Evaluation samples (greedy), with their rewards") for m in events)
    checkpoints = sdk.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and all(c.fine_tuned_model_checkpoint for c in checkpoints)
    assert done.fine_tuned_model is not None
    reply = sdk.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "Say something"}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None
