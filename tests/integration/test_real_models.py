"""A GGUF in, a job trained on it, its before -> after, and both models listed by the official SDK.

Over real processes: `tuneforge models import` (CLI), `tuneforge api` and `tuneforge worker` on
PostgreSQL + Redis, driven with the `openai` package."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.helpers import ROOT, shakespeare_rows, wait_sdk_job, worker_log
from tests.tinymodels import build_tiny_gguf

MODEL = "gguf-tiny"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> str:
    gguf = build_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    out = subprocess.run(
        [
            sys.executable,
            "-P",
            "-m",
            "tuneforge.app.cli",
            "models",
            "import",
            str(gguf),
            "--name",
            MODEL,
            "--replace",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["id"] == MODEL and info["source"] == "gguf"
    return MODEL


def _upload(client: OpenAI, rows: list[dict[str, Any]], path: Path) -> str:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with path.open("rb") as fh:
        return client.files.create(file=fh, purpose="fine-tune").id


def test_imported_gguf_trains_reports_before_after_and_lists_via_sdk(
    live_api: str,
    api_key: str,
    other_key: str,
    live_worker: subprocess.Popen[bytes],
    imported: str,
    tmp_path: Path,
) -> None:
    sdk = OpenAI(base_url=f"{live_api}/v1", api_key=api_key, max_retries=0)
    rows = shakespeare_rows(60)
    train = _upload(sdk, rows[:48], tmp_path / "train.jsonl")
    valid = _upload(sdk, rows[48:], tmp_path / "valid.jsonl")
    job = sdk.fine_tuning.jobs.create(
        model=imported,
        training_file=train,
        validation_file=valid,
        suffix="gguf",
        seed=5,
        extra_body={
            "training": {"max_steps": 6, "eval_every": 3, "save_every": 3, "batch_size": 8, "learning_rate": 1e-2}
        },
    )
    done = wait_sdk_job(sdk, job.id)
    assert done.status == "succeeded", (done.error, worker_log())

    # Before -> after: eval_loss at step 0 in the series, the change in final metrics and events.
    headers = {"Authorization": f"Bearer {api_key}"}
    series = httpx.get(f"{live_api}/v1/fine_tuning/jobs/{job.id}/metrics", headers=headers).json()["data"]
    evals = {p["step"]: p for p in series if p["eval_loss"] is not None}
    assert sorted(evals) == [0, 3, 6]
    assert 0.0 <= evals[0]["extra"]["valid_mean_token_accuracy"] <= 1.0
    step3 = next(p for p in series if p["step"] == 3)
    assert step3["loss"] is not None and "train_mean_token_accuracy" in step3["extra"]  # train + eval extras merged
    final = httpx.get(f"{live_api}/v1/fine_tuning/jobs/{job.id}", headers=headers).json()["final_metrics"]
    assert final["validation_loss_change"]["before"] == pytest.approx(evals[0]["eval_loss"])
    assert final["validation_loss_change"]["after"] == pytest.approx(evals[6]["eval_loss"])
    messages = [e.message for e in sdk.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any(m.startswith("Validation loss ") and "→" in m for m in messages)
    ckpts = sdk.fine_tuning.jobs.checkpoints.list(job.id).data
    assert ckpts[0].metrics.valid_mean_token_accuracy is not None
    assert ckpts[0].metrics.train_mean_token_accuracy is not None

    # The official SDK lists the imported base model and the organization's fine-tuned model.
    listed = {m.id: m for m in sdk.models.list().data}
    assert listed[imported].owned_by == "system"
    base = listed[imported].model_dump()
    assert base["kind"] == "base" and base["architecture"] == "LlamaForCausalLM" and base["chat_template"] is True
    ft = done.fine_tuned_model
    assert ft in listed and listed[ft].model_dump()["kind"] == "fine_tuned"
    assert sdk.models.retrieve(ft).model_dump()["base_model"] == imported
    ckpt_id = ckpts[-1].fine_tuned_model_checkpoint
    assert sdk.models.retrieve(ckpt_id).model_dump()["step_number"] == ckpts[-1].step_number

    # Another organization sees neither the fine-tuned model nor its checkpoints.
    other = OpenAI(base_url=f"{live_api}/v1", api_key=other_key, max_retries=0)
    assert ft not in {m.id for m in other.models.list().data}
    for model_id in (ft, ckpt_id):
        with pytest.raises(openai.NotFoundError):
            other.models.retrieve(model_id)

    # The merged export: a full model folder over HTTP that transformers loads alone, in a fresh process.
    r = httpx.get(
        f"{live_api}/v1/fine_tuning/jobs/{job.id}/adapter", params={"format": "merged"}, headers=headers, timeout=600
    )
    assert r.status_code == 200, r.text
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        tar.extractall(tmp_path / "export", filter="data")
    folder = tmp_path / "export" / f"{job.id}-adapter-merged"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    script = (
        "import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer;"
        f"m = AutoModelForCausalLM.from_pretrained({str(folder)!r});"
        f"t = AutoTokenizer.from_pretrained({str(folder)!r});"
        "assert 'peft' not in sys.modules; print(m(**t('To be', return_tensors='pt')).logits.shape[-1])"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
