"""Estimate a job's peak GPU memory from the model config and the spec, before it is queued.

The API never imports torch, so this is arithmetic on `config.json` for decoder-style models
(hidden_size, intermediate_size, num_hidden_layers, attention heads, vocab). It targets
`torch.cuda.max_memory_allocated` during training, and the admission check adds a fixed allowance
for the CUDA context and allocator fragmentation on top. The terms:

- base weights: the targeted linear layers at 4 bits (0.5 B/param, plus fp32 absmax per 64 weights,
  or 8-bit absmax with fp32 per 256 blocks under double quantization), 8 bits, or 16;
  embeddings, norms and an untied head in 16-bit;
- LoRA: fp32 parameters and gradients plus the optimizer's state (8 B/param for Adam, 2 B for 8-bit);
- activations: ~34 bytes per hidden unit per token per layer (Korthikanti et al. 2022, with SDPA so
  no stored attention matrix), or a layer input per layer plus one recomputed layer with gradient
  checkpointing;
- logits: fp32 logits and their gradient for every position of the batch (causal LM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.contract.spec import JobSpec

GB = 1024**3
# CUDA context, cuBLAS workspaces and allocator fragmentation: outside max_memory_allocated.
RUNTIME_ALLOWANCE_GB = 1.0


@dataclass(frozen=True)
class MemoryEstimate:
    base_weights: float
    lora_and_optimizer: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.base_weights + self.lora_and_optimizer + self.activations + self.logits

    def describe(self) -> str:
        return (
            f"{self.total / GB:.1f} GB (base weights {self.base_weights / GB:.1f}, LoRA + optimizer "
            f"{self.lora_and_optimizer / GB:.2f}, activations {self.activations / GB:.1f}, "
            f"logits {self.logits / GB:.1f})"
        )


def _shape(config: dict[str, Any]) -> tuple[int, int, int, int, int, int] | None:
    """(hidden, intermediate, layers, heads, kv_heads, vocab), or None for configs it cannot read."""
    text_config = config.get("text_config")
    cfg: dict[str, Any] = text_config if isinstance(text_config, dict) else config
    try:
        h = int(cfg["hidden_size"])
        layers = int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
        inter = int(cfg.get("intermediate_size") or 4 * h)
        kv = int(cfg.get("num_key_value_heads") or heads)
        vocab = int(cfg["vocab_size"])
    except (KeyError, TypeError, ValueError):
        return None
    return h, inter, layers, heads, kv, vocab


def estimate(config: dict[str, Any], spec: JobSpec, devices: int = 1) -> MemoryEstimate | None:
    """Peak memory of one device. With `devices` > 1 (data parallel), every device holds the whole
    model, adapter and optimizer state, and 1/devices of each micro-batch's activations."""
    shape = _shape(config)
    if shape is None:
        return None
    h, inter, layers, heads, kv_heads, vocab = shape
    kv_dim = h // heads * kv_heads
    gated = str(config.get("hidden_act", "silu")) in ("silu", "swiglu") or "llama" in str(config.get("model_type"))
    # (in, out) of each linear layer in one block: q, k, v, o and the MLP.
    linears = [(h, h), (h, kv_dim), (h, kv_dim), (h, h)]
    linears += [(h, inter), (h, inter), (inter, h)] if gated else [(h, inter), (inter, h)]
    linear_params = layers * sum(i * o for i, o in linears)
    tied = bool(config.get("tie_word_embeddings", False))
    other_params = vocab * h * (1 if tied or spec.task != "causal_lm" else 2) + layers * 2 * h

    q = spec.quantization
    if q.bits == 4:
        per_param = 0.5 + (1 / 64 + 4 / (64 * 256) if q.double_quant else 4 / 64)
    elif q.bits == 8:
        per_param = 1.0 + 4 / 64
    else:
        per_param = 2.0
    base = linear_params * per_param + other_params * 2

    targets = spec.lora.target_modules
    n_targeted = len(linears) if targets == "all-linear" else min(len(linears), len(targets))
    per_layer_lora = sum(i + o for i, o in linears[:n_targeted]) * spec.lora.r
    lora_params = layers * per_layer_lora
    state = 2 if "8bit" in spec.optimizer.name else 0 if spec.optimizer.name == "sgd" else 8
    lora = lora_params * (4 + 4 + state)

    t = spec.training
    tokens = -(-t.batch_size // devices) * t.max_seq_length  # the per-device micro-batch
    # Checkpointing keeps each layer's input and recomputes one layer at a time.
    per_layer = 2 if t.gradient_checkpointing else 34
    activations = tokens * h * per_layer * layers + (tokens * h * 34 if t.gradient_checkpointing else 0)
    logits = tokens * vocab * 4 * 2 if spec.task == "causal_lm" else 0
    return MemoryEstimate(float(base), float(lora), float(activations), float(logits))
