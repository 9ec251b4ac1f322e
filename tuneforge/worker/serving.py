"""The inference task's glue: path rules and settings from `app/`, the engine from tuneforge/worker/inference/.

One request per call. Each outcome is reported on the request's reply channel (tuneforge/app/inference/
replies.py): `start` once the prompt is accepted, `delta`s, then `done`, or one `error`. A request
whose deadline passed, or that the API cancelled, stops between tokens; nothing else is kept.
"""

from __future__ import annotations

import logging
import shutil
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from tuneforge.app.core.config import Settings, get_settings
from tuneforge.app.inference.replies import ReplyChannel, reply_channel
from tuneforge.app.jobs.model_path import resolve_model
from tuneforge.contract.spec import SpecError
from tuneforge.storage import StoreMissing
from tuneforge.worker.artifact_sync import ArtifactSync
from tuneforge.worker.inference.cache import Loaded, ModelCache, load
from tuneforge.worker.inference.generate import (
    Outcome,
    PromptError,
    Sampling,
    check_length,
    context_length,
    encode_chat,
    encode_prompt,
    generate,
)
from tuneforge.worker.training.errors import TrainingError

log = logging.getLogger("tuneforge.serving")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
CANCEL_CHECK_SECONDS = 0.2


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@lru_cache(maxsize=1)
def model_cache() -> ModelCache:
    device = _device()

    def loader(base: Path, adapter: Path | None) -> Loaded:
        return load(base, adapter, device)

    return ModelCache(get_settings().inference_cache_size, loader)


class RequestFailed(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.event = {"type": "error", "status": status, "message": message, "param": param, "code": code}


def resolve_paths(settings: Settings, base: str, adapter: str | None) -> tuple[Path, Path | None]:
    """The same rules as training: the base inside the models root (safetensors, no remote code),
    and an adapter only from a directory a worker wrote under the artifacts dir."""
    try:
        base_dir = resolve_model(settings, base, fetch=True)
    except SpecError as exc:
        raise RequestFailed(404, exc.message, "model", "model_not_found") from exc
    assert base_dir is not None  # fetch=True always returns a directory or raises
    if adapter is None:
        return base_dir, None
    gone = RequestFailed(404, "The model's adapter files are missing on this server.", "model", "model_not_found")
    try:
        # A recorded store key (artifacts/<job>/adapter): local on the default store, downloaded from S3.
        adapter_dir = ArtifactSync(settings).local_folder(adapter).resolve()
    except (StoreMissing, TrainingError) as exc:
        _forget(settings, adapter)
        raise gone from exc
    roots = (settings.artifacts_dir.resolve(), settings.cache_dir.resolve())
    if not any(root in adapter_dir.parents for root in roots):
        raise gone
    if not all((adapter_dir / f).is_file() for f in ADAPTER_FILES):
        raise gone
    return base_dir, adapter_dir


def _forget(settings: Settings, adapter: str) -> None:
    """The adapter is gone from the store (its model was deleted): remove this host's downloaded copy,
    so the cache below lets go of the loaded model too."""
    copy = (settings.cache_dir / "folders" / adapter).resolve()
    if settings.cache_dir.resolve() in copy.parents:
        shutil.rmtree(copy, ignore_errors=True)


def _encode(loaded: Loaded, request: dict[str, Any]) -> list[int]:
    if request["kind"] == "chat":
        ids, param = encode_chat(loaded.tokenizer, request["messages"]), "messages"
    else:
        ids, param = encode_prompt(loaded.tokenizer, request["prompt"]), "prompt"
    check_length(ids, context_length(loaded.model), param)
    return ids


def _stopper(channel: ReplyChannel, request_id: str, deadline: float) -> Any:
    last = 0.0

    def should_stop() -> bool:
        nonlocal last
        now = time.time()
        if now > deadline:
            return True
        if now - last < CANCEL_CHECK_SECONDS:
            return False
        last = now
        return channel.cancelled(request_id)

    return should_stop


def execute(request: dict[str, Any]) -> str:
    settings = get_settings()
    channel = reply_channel(settings)
    request_id = str(request["id"])
    deadline = float(request["deadline"])
    if time.time() > deadline or channel.cancelled(request_id):
        return "expired"
    try:
        dropped = model_cache().drop_missing()  # models deleted since they loaded
        if dropped:
            log.info("dropped %d cached model(s) whose adapter was deleted", len(dropped))
        base_dir, adapter_dir = resolve_paths(settings, request["base"], request.get("adapter"))
        loaded = model_cache().get(base_dir, adapter_dir)
        prompt_ids = _encode(loaded, request)
        channel.push(request_id, {"type": "start", "prompt_tokens": len(prompt_ids)})
        sampling = Sampling(
            max_tokens=int(request["max_tokens"]),
            temperature=float(request["temperature"]),
            top_p=float(request["top_p"]),
            stop=list(request.get("stop") or []),
            seed=request.get("seed"),
        )
        outcome = Outcome()
        stop = _stopper(channel, request_id, deadline)
        for piece in generate(loaded.model, loaded.tokenizer, prompt_ids, sampling, should_stop=stop, outcome=outcome):
            channel.push(request_id, {"type": "delta", "text": piece})
        if outcome.finish_reason == "cancelled":
            return "cancelled"
        usage = {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": outcome.completion_tokens,
            "total_tokens": len(prompt_ids) + outcome.completion_tokens,
        }
        channel.push(request_id, {"type": "done", "finish_reason": outcome.finish_reason, "usage": usage})
        log.info(
            "served %s: %d+%d tokens, %s; %d/%d models loaded",
            request_id,
            usage["prompt_tokens"],
            usage["completion_tokens"],
            outcome.finish_reason,
            len(model_cache().loaded()),
            model_cache().size,
        )
        return outcome.finish_reason
    except PromptError as exc:
        code = "chat_template_missing" if exc.param == "model" else "context_length_exceeded"
        channel.push(request_id, RequestFailed(400, exc.message, exc.param, code).event)
        return "invalid"
    except RequestFailed as exc:
        channel.push(request_id, exc.event)
        return "invalid"
    except Exception as exc:  # the client gets a clear error, the log the traceback
        log.exception("inference request %s failed", request_id)
        message = f"The inference worker failed on this request ({type(exc).__name__})."
        channel.push(request_id, RequestFailed(500, message, None, "inference_failed").event)
        return "failed"
