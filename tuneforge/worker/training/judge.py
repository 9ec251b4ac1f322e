"""Judge models for `score_model` and `label_model` graders inside a training job, loaded in-process.

Why in-process rather than through the inference queue: a training worker runs one task at a time
(Celery's solo pool, one per GPU), so a judge request it queued could wait on the very worker that
sent it, or on an inference worker that is not running; and a reward is needed for every sampled
completion of every step, where a queue round trip per sample would dominate the step. The judge is
loaded once per run beside the policy, on the same device, and answers greedily with its chat
template. A judge is a base model under the models root (`TUNEFORGE_MODELS_DIR`, else
`$TUNEFORGE_DATA_DIR/models`), or an `ft:` model of the job's organization: the worker's runner
resolves each `ft:` judge of the job to its base model's name and a local copy of its adapter, and hands
them over in `TUNEFORGE_JUDGE_ADAPTERS` (JSON; the environment, so that the processes of a
multi-device run see it too); the judge is that base with the adapter merged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tuneforge.contract.graders.scoring import JudgeError
from tuneforge.contract.graders.shapes import SamplingParams
from tuneforge.worker.training.model import load_tokenizer
from tuneforge.worker.training.rollout import GENERATE

DEFAULT_JUDGE_TOKENS = 32
# {ft: id: {"model": base model name, "adapter": local adapter folder}}, set by the runner per job.
JUDGE_ADAPTERS_ENV = "TUNEFORGE_JUDGE_ADAPTERS"


def models_root() -> Path:
    if root := os.environ.get("TUNEFORGE_MODELS_DIR"):
        return Path(root).expanduser().resolve()
    return (Path(os.environ.get("TUNEFORGE_DATA_DIR", "./data")) / "models").expanduser().resolve()


def judge_dir(name: str, root: Path | None = None) -> Path:
    root = root or models_root()
    path = (root / name).resolve()
    if name.startswith("ft:") or not path.is_relative_to(root) or not (path / "config.json").is_file():
        raise JudgeError(f"{name!r} is not a base model under the models root")
    return path


def judge_source(name: str, root: Path | None = None) -> tuple[Path, Path | None]:
    """(base model folder, adapter folder or None) of a judge."""
    if not name.startswith("ft:"):
        return judge_dir(name, root), None
    adapters = json.loads(os.environ.get(JUDGE_ADAPTERS_ENV) or "{}")
    entry = adapters.get(name)
    if not isinstance(entry, dict) or not (Path(entry["adapter"]) / "adapter_model.safetensors").is_file():
        raise JudgeError(f"{name!r} was not resolved to an adapter for this job")
    return judge_dir(str(entry["model"]), root), Path(entry["adapter"])


class InProcessJudge:
    """`Judge` (contract/graders/scoring.py) over models loaded once each, greedy."""

    def __init__(self, device: torch.device, root: Path | None = None) -> None:
        self.device = device
        self.root = root
        self._loaded: dict[str, tuple[Any, Any]] = {}

    def _load(self, name: str) -> tuple[Any, Any]:
        if name not in self._loaded:
            path, adapter = judge_source(name, self.root)
            tokenizer = load_tokenizer(path)
            model = AutoModelForCausalLM.from_pretrained(
                path, trust_remote_code=False, local_files_only=True, use_safetensors=True
            )
            if adapter is not None:  # merged: the judge answers as the fine-tuned model, at the base's speed
                model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
            torch.nn.Module.to(model, self.device)  # (transformers' own `.to` is typed for its wrapper)
            model.eval()
            self._loaded[name] = (model, tokenizer)
        return self._loaded[name]

    def __call__(self, model_name: str, messages: list[dict[str, str]], params: SamplingParams | None) -> str:
        model, tokenizer = self._load(model_name)
        if not getattr(tokenizer, "chat_template", None):
            raise JudgeError(f"{model_name!r} has no chat template")
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        limit = (params.max_completions_tokens if params else None) or DEFAULT_JUDGE_TOKENS
        eos = int(tokenizer.eos_token_id)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            out = GENERATE(model, [ids], 1, None, limit, eos, int(tokenizer.pad_token_id), self.device)[0]
        return str(tokenizer.decode(out, skip_special_tokens=True))
