"""Chat and completions end to end: `tuneforge api` + a training worker + `tuneforge worker --queue
inference`, on PostgreSQL and Redis, through the official openai SDK, with a tiny adapter trained here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam
from openai.types.fine_tuning import FineTuningJob

from tests.helpers import TMP, shakespeare_rows, wait_sdk_job, worker_log

PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Speak, friend."}]


@pytest.fixture(scope="module")
def trained(
    sdk: OpenAI, tiny_model: str, live_worker: subprocess.Popen[bytes], tmp_path_factory: pytest.TempPathFactory
) -> FineTuningJob:
    """A succeeded job with a checkpoint: 4 steps of QLoRA on the tiny Llama."""
    data = tmp_path_factory.mktemp("inference") / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in shakespeare_rows(16)) + "\n")
    with data.open("rb") as fh:
        file = sdk.files.create(file=fh, purpose="fine-tune")
    job = sdk.fine_tuning.jobs.create(
        model=tiny_model,
        training_file=file.id,
        suffix="chat",
        extra_body={"lora": {"r": 4}, "training": {"max_steps": 4, "save_every": 2, "batch_size": 4}},
    )
    job = wait_sdk_job(sdk, job.id)
    assert job.status == "succeeded", (job.error, worker_log())
    return job


def _log() -> str:
    p = TMP / "inference-worker.log"
    return p.read_text()[-4000:] if p.exists() else ""


def test_sdk_chat_with_a_fine_tuned_model_streaming_and_not(
    sdk: OpenAI,
    trained: FineTuningJob,
    inference_worker: subprocess.Popen[bytes],
) -> None:
    model: str = trained.fine_tuned_model  # type: ignore[assignment]  # set on every succeeded job
    done = sdk.chat.completions.create(model=model, messages=PROMPT, max_tokens=6, temperature=0)
    assert done.object == "chat.completion" and done.model == model, _log()
    choice = done.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert done.usage is not None and done.usage.prompt_tokens > 0
    assert 1 <= done.usage.completion_tokens <= 6
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens

    chunks = list(
        sdk.chat.completions.create(
            model=model,
            messages=PROMPT,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == choice.message.content  # greedy: the same text either way
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == done.usage.total_tokens

    # seed makes sampling repeatable
    a, b = (
        sdk.chat.completions.create(model=model, messages=PROMPT, max_tokens=5, temperature=1.0, seed=5)
        for _ in range(2)
    )
    assert a.choices[0].message.content == b.choices[0].message.content


def test_completions_and_checkpoints(
    sdk: OpenAI,
    tiny_model: str,
    trained: FineTuningJob,
    inference_worker: subprocess.Popen[bytes],
) -> None:
    done = sdk.completions.create(model=tiny_model, prompt="To be, or not", max_tokens=4, temperature=0)
    assert done.object == "text_completion" and done.choices[0].finish_reason in ("stop", "length"), _log()
    assert done.usage is not None and done.usage.completion_tokens <= 4
    streamed = list(
        sdk.completions.create(model=tiny_model, prompt="To be, or not", max_tokens=4, temperature=0, stream=True)
    )
    assert "".join(c.choices[0].text for c in streamed) == done.choices[0].text

    ckpt = sdk.fine_tuning.jobs.checkpoints.list(trained.id).data[-1]
    assert ckpt.fine_tuned_model_checkpoint.endswith(":ckpt-step-2")
    chat = sdk.chat.completions.create(model=ckpt.fine_tuned_model_checkpoint, messages=PROMPT, max_tokens=3)
    assert chat.model == ckpt.fine_tuned_model_checkpoint and chat.choices[0].message.content is not None


def test_bad_requests_are_clear_4xx(
    sdk: OpenAI,
    live_api: str,
    other_key: str,
    tiny_model: str,
    trained: FineTuningJob,
    inference_worker: subprocess.Popen[bytes],
) -> None:
    model: str = trained.fine_tuned_model  # type: ignore[assignment]  # set on every succeeded job
    other = OpenAI(base_url=f"{live_api}/v1", api_key=other_key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as nf:
        other.chat.completions.create(model=model, messages=PROMPT)
    assert nf.value.body["param"] == "model" and nf.value.body["code"] == "model_not_found"  # type: ignore[index]  # .body is typed object
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model=model + ":ckpt-step-999", messages=PROMPT)
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="../etc", messages=PROMPT)

    with pytest.raises(openai.BadRequestError) as big:
        sdk.chat.completions.create(model=model, messages=PROMPT, max_tokens=10**6)
    assert big.value.body["param"] == "max_tokens"  # type: ignore[index]

    with pytest.raises(openai.BadRequestError) as long:
        sdk.completions.create(model=tiny_model, prompt="word " * 2000, max_tokens=2)
    assert long.value.body["param"] == "prompt" and "context" in long.value.body["message"], _log()  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as long_stream:
        sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "word " * 2000}], stream=True)
    assert long_stream.value.body["param"] == "messages"  # type: ignore[index]

    # A base model without a chat template: completions work, chat is a 400 naming `model`.
    models_root = Path(os.environ["TUNEFORGE_MODELS_DIR"])
    plain = models_root / "tiny-plain"
    if not plain.exists():
        shutil.copytree(models_root / tiny_model, plain)
        (plain / "chat_template.jinja").unlink(missing_ok=True)
        config = json.loads((plain / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        (plain / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(openai.BadRequestError) as no_template:
        sdk.chat.completions.create(model="tiny-plain", messages=PROMPT, max_tokens=2)
    assert no_template.value.body["param"] == "model" and "chat template" in no_template.value.body["message"]  # type: ignore[index]

    r = httpx.post(
        f"{live_api}/v1/chat/completions",
        headers={"Authorization": f"Bearer {sdk.api_key}"},
        json={"model": model, "messages": PROMPT, "logit_bias": {"1": 5}},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "logit_bias"

    # The worker is still serving after all of that, and never held more models than its cache size.
    ok = sdk.completions.create(model=tiny_model, prompt="To be", max_tokens=2, temperature=0)
    assert ok.choices[0].finish_reason in ("stop", "length")
    held = [int(n) for n in re.findall(r"(\d+)/2 models loaded", _log())]
    assert held and max(held) <= 2


def test_the_documented_example_runs(
    live_api: str,
    api_key: str,
    trained: FineTuningJob,
    inference_worker: subprocess.Popen[bytes],
) -> None:
    import sys

    from tests.helpers import ROOT

    env = {**os.environ, "TUNEFORGE_URL": f"{live_api}/v1", "TUNEFORGE_API_KEY": api_key}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "chat.py"), trained.fine_tuned_model],  # type: ignore[list-item]  # set on every succeeded job
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "reply:" in out.stdout and "usage:" in out.stdout and "stream:" in out.stdout
