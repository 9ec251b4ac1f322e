"""The GPU memory admission check: arithmetic on config.json, refused at submission with the estimate."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import shakespeare_rows, upload_jsonl
from tuneforge.app.core.config import Settings
from tuneforge.app.jobs.memory_estimate import GB, estimate
from tuneforge.contract.spec import JobSpec

LLAMA_7B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "hidden_act": "silu",
}


def spec(**over: object) -> JobSpec:
    base: dict[str, object] = {"seed": 0}
    return JobSpec.model_validate(base | over)


def test_7b_base_weights_match_the_4bit_arithmetic() -> None:
    nf4 = estimate(LLAMA_7B, spec())
    bf16 = estimate(LLAMA_7B, spec(quantization={"bits": None}))
    assert nf4 is not None and bf16 is not None
    # 6.48e9 linear weights at ~0.516 B plus 16-bit embeddings and head: ~3.6 GiB; 16-bit: ~12.5 GiB.
    assert 3.3 < nf4.base_weights / GB < 3.9
    assert 12 < bf16.base_weights / GB < 13
    # LoRA r=16 on every linear layer: ~40M params at 16 B each (fp32 weight, grad, two Adam moments).
    assert 0.5 < nf4.lora_and_optimizer / GB < 0.7


def test_the_estimate_follows_batch_length_and_checkpointing() -> None:
    small = estimate(LLAMA_7B, spec(training={"batch_size": 1, "max_seq_length": 512}))
    big = estimate(LLAMA_7B, spec(training={"batch_size": 8, "max_seq_length": 512}))
    ckpt = estimate(LLAMA_7B, spec(training={"batch_size": 8, "max_seq_length": 512, "gradient_checkpointing": True}))
    assert small and big and ckpt
    assert big.activations == pytest.approx(8 * small.activations)
    assert ckpt.activations < big.activations / 8
    assert estimate({"architectures": ["Mystery"]}, spec()) is None  # unreadable configs are not guessed


def test_a_job_that_cannot_fit_the_largest_gpu_is_refused_with_the_estimate(
    client: httpx.Client,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model: str,
) -> None:
    file_id = upload_jsonl(client, shakespeare_rows(4))["id"]
    body = {
        "model": tiny_model,
        "training_file": file_id,
        "training": {"max_steps": 1, "batch_size": 256, "max_seq_length": 4096},
    }
    monkeypatch.setattr(settings, "worker_gpu_memory_gb", 2.0)
    r = client.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"]) == ("training.batch_size", "insufficient_gpu_memory")
    assert "estimated" in err["message"] and "largest worker GPU (2 GB)" in err["message"]
    monkeypatch.setattr(settings, "worker_gpu_memory_gb", 80.0)
    assert client.post("/v1/fine_tuning/jobs", json=body).status_code == 200
