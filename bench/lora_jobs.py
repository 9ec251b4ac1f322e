"""Fine-tuned models without training: a LoRA adapter of random weights on a base, recorded as a succeeded
job of an organization, so that `ft:` names resolve as they do for a trained job. For the serving
benchmark (bench/serving.py) and the vLLM backend's tests, which need several different adapters on
SmolLM2 and nothing of training itself.

The adapter is a standard PEFT folder (`adapter_config.json`, `adapter_model.safetensors`) on q_proj
and v_proj of every layer; its weights are drawn from `seed`, large enough that each adapter's greedy
answers differ from the base's and from each other's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


def write_lora_adapter(dest: Path, base_dir: Path, seed: int, *, r: int = 8, scale: float = 0.08) -> Path:
    """A random LoRA for the Llama-shaped model at `base_dir`, written to `dest`."""
    cfg = json.loads((base_dir / "config.json").read_text())
    hidden = int(cfg["hidden_size"])
    head_dim = int(cfg.get("head_dim") or hidden // int(cfg["num_attention_heads"]))
    outs = {"q_proj": int(cfg["num_attention_heads"]) * head_dim, "v_proj": int(cfg["num_key_value_heads"]) * head_dim}
    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(int(cfg["num_hidden_layers"])):
        for module, out in outs.items():
            name = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{name}.lora_A.weight"] = torch.randn(r, hidden, generator=g) * scale
            tensors[f"{name}.lora_B.weight"] = torch.randn(out, r, generator=g) * scale
    dest.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dest / "adapter_model.safetensors"))
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base_dir),
        "r": r,
        "lora_alpha": 2 * r,
        "lora_dropout": 0.0,
        "target_modules": sorted(outs),
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }
    (dest / "adapter_config.json").write_text(json.dumps(config, indent=1))
    return dest


def publish_adapter_job(
    org_id: str, base: str, base_dir: Path, seed: int, *, checkpoint_step: int | None = None
) -> str:
    """A succeeded job of `org_id` on `base` whose adapter is a random one (and, with `checkpoint_step`,
    one checkpoint with another). Uses the configured database and artifacts dir. Returns its `ft:` id."""
    from tuneforge.app.core.config import get_settings
    from tuneforge.app.core.ids import new_id
    from tuneforge.app.core.storage import job_prefix
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.db.models import Checkpoint, Job
    from tuneforge.contract.spec import JobSpec

    settings = get_settings()
    job_id = new_id("ftjob")
    prefix = job_prefix(job_id)
    write_lora_adapter(settings.data_dir / prefix / "adapter", base_dir, seed)
    ft_id = f"ft:{base}:{org_id}:r{seed}:{job_id}"
    job = Job(
        id=job_id,
        organization_id=org_id,
        status="succeeded",
        model=base,
        # A whole spec, as the API stores one: job lists and retrieves read it back as a JobSpec.
        spec=JobSpec.model_validate({"seed": seed}).model_dump(mode="json"),
        training_file="file-none",
        seed=seed,
        result_files=[],
        fine_tuned_model=ft_id,
        adapter_path=f"{prefix}/adapter",
    )
    with session_scope() as s:
        s.add(job)
        s.flush()
        if checkpoint_step is not None:
            step_key = f"{prefix}/checkpoints/step-{checkpoint_step:06d}"
            write_lora_adapter(settings.data_dir / step_key / "adapter", base_dir, seed + 1000)
            s.add(Checkpoint(id=new_id("ftckpt"), job_id=job_id, step_number=checkpoint_step, path=step_key))
    return ft_id
