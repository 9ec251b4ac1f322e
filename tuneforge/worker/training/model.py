"""Loading a base model safely: local safetensors only, never remote code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)

from tuneforge.contract.spec import JobSpec
from tuneforge.contract.status import ErrorCode
from tuneforge.worker.training.configs import HEAD_NAMES, compute_dtype, get_quantization_config
from tuneforge.worker.training.errors import TrainingError


def load_tokenizer(model_dir: Path) -> Any:
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
    if tok.pad_token_id is None:
        # Padding positions are masked out of attention and loss, so reusing EOS is safe.
        tok.pad_token = tok.eos_token
    return tok


def head_modules(model_dir: Path, task: str) -> list[str]:
    """Names of the task head that must stay unquantized and be trained in full."""
    if task == "causal_lm":
        return []
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
    probe = AutoModelForSequenceClassification.from_config(config)
    names = [n for n in HEAD_NAMES if hasattr(probe, n)]
    del probe
    return names


def load_model(
    model_dir: Path, spec: JobSpec, device: torch.device, *, num_labels: int | None = None
) -> tuple[PreTrainedModel, list[str]]:
    heads = head_modules(model_dir, spec.task)
    quant = get_quantization_config(spec.quantization, device, skip_modules=heads or None)
    dtype = compute_dtype(spec.quantization, device)
    kwargs: dict[str, Any] = {
        "trust_remote_code": False,
        # Pickle weights reach here only when the operator allowed them (tuneforge/app/jobs/model_path.py);
        # a directory with safetensors never falls back to its .bin files.
        "use_safetensors": any(Path(model_dir).glob("*.safetensors")),
        "local_files_only": True,
        "low_cpu_mem_usage": True,
    }
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": device.index if device.type == "cuda" and device.index is not None else device.type}
    # Loaded in the compute dtype; prepare_quantized() then moves the small parameters to fp32.
    # Loading a 16-bit checkpoint as fp32 would double the host memory that loading needs.
    kwargs["dtype"] = dtype
    if spec.task == "causal_lm":
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    else:
        kwargs["num_labels"] = num_labels or 1
        if spec.task == "regression":
            kwargs["problem_type"] = "regression"
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, **kwargs)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = model.config.eos_token_id
    if quant is None:
        nn.Module.to(model, device)  # (transformers' own `.to` is typed for its wrapper)
    # Training never reuses keys/values, and a KV cache would also switch off the block-diagonal
    # masking that packed rows rely on (transformers skips it when past_key_values is set).
    model.config.use_cache = False
    _keep_4bit_weights_trainable(model)
    return model, heads


def prepare_quantized(model: PreTrainedModel, dtype: torch.dtype) -> PreTrainedModel:
    """peft's `prepare_model_for_kbit_training`, less its costliest step.

    peft casts every parameter that is not quantized to fp32, the frozen input embeddings and output
    head included. Those two are the largest matrices left: 0.5 GB more for a 7B model with a 32k
    vocabulary, 2.1 GB for an 8B one with 128k, more than the whole LoRA state. Here they stay in the
    compute dtype. Norms, biases and trained heads go to fp32 as in QLoRA, and the embedding output is
    upcast so the residual stream stays fp32 too: the arithmetic is the reference recipe's except the
    output head's matmul, which runs in the compute dtype as in any 16-bit training (the loss upcasts
    the logits).
    """
    for param in model.parameters():
        param.requires_grad = False
    embeddings = model.get_input_embeddings()
    head = model.get_output_embeddings()
    large = {id(m.weight) for m in (embeddings, head) if m is not None and hasattr(m, "weight")}
    for param in model.parameters():
        if not param.is_floating_point():  # the quantized weights
            continue
        target = dtype if id(param) in large else torch.float32
        if param.dtype != target:
            param.data = param.data.to(target)
        elif param.device.type == "cpu":
            # Still a view into the checkpoint's memory map, which keeps the whole 16-bit file
            # resident in a CPU worker for the job's lifetime: copy it out so the map can close.
            param.data = param.data.clone()

    embeddings.register_forward_hook(lambda _m, _args, out: out.float())
    if head is not None:
        head.register_forward_pre_hook(lambda m, args: (args[0].to(m.weight.dtype), *args[1:]))
    return model


def _keep_4bit_weights_trainable(model: nn.Module) -> None:
    """On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit layer's weights into an inference-only
    layout the first time the layer runs in eval mode without grad (our evaluations), and keeps that
    layout when training resumes. Training then goes through a kernel with no backward, which cuts
    the gradient through every base layer (and crashes outright on layers with a bias). Evaluation
    is a small share of a run, so the repacking is switched off."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            setattr(module, "support_avx512bf16_for_cpu", False)  # noqa: B010 - a bitsandbytes flag, not ours


def linear_module_names(model: nn.Module) -> set[str]:
    """Leaf names of every linear layer, quantized or not (what `target_modules` may name)."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt"):
            names.add(name.rsplit(".", 1)[-1])
    return names


def check_target_modules(model: nn.Module, target_modules: list[str] | str) -> None:
    if isinstance(target_modules, str):
        return
    available = linear_module_names(model)
    missing = [m for m in target_modules if m not in available]
    if missing:
        raise TrainingError(
            ErrorCode.INVALID_SPEC,
            f"lora.target_modules names {missing}, which this model lacks; its linear layers are "
            f"{sorted(available)} (or use 'all-linear').",
            "lora.target_modules",
        )
