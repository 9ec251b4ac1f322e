"""The causal-LM loss without full-vocabulary logits: same numbers as transformers' loss, less memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import make_spec
from tuneforge.worker.training import lm_loss
from tuneforge.worker.training.data import IGNORE, collate, encode_causal
from tuneforge.worker.training.lm_loss import causal_lm_loss
from tuneforge.worker.training.model import load_tokenizer
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.setup import prepare_model

CPU = torch.device("cpu")


def _model_and_batch(model_dir: Path, dtype: str = "auto") -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    spec = make_spec(training={"max_seq_length": 48}, lora={"dropout": 0.0}, quantization={"compute_dtype": dtype})
    tok = load_tokenizer(model_dir)
    rows = [
        {"prompt": "Who speaks first?", "completion": " The first citizen."},
        {"text": "Now is the winter of our discontent made glorious summer."},
        {"prompt": "And then?", "completion": " All: speak, speak."},
    ]
    batch = collate(encode_causal(rows, tok, spec).examples, tok.pad_token_id)
    model = prepare_model(spec, model_dir, None, CPU, MemoryReporter())
    # LoRA B starts at zero; move it so the adapter changes the logits and every gradient is non-trivial.
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    model.train()
    return model, batch


def _lora_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def test_loss_accuracy_and_gradients_match_transformers(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, batch = _model_and_batch(model_dir)
    assert (batch["labels"] == IGNORE).any() and (batch["labels"] != IGNORE).any()

    out = model(**batch)  # transformers: logits everywhere, its own ForCausalLMLoss
    out.loss.backward()
    reference = _lora_grads(model)
    target = batch["labels"][:, 1:]
    mask = target != IGNORE
    ref_correct = int(((out.logits[:, :-1].argmax(-1) == target) & mask).sum())

    monkeypatch.setattr(lm_loss, "CHUNK_ELEMENTS", 3 * 512)  # several chunks of a few rows
    loss, correct, counted = causal_lm_loss(model, batch)
    loss.backward()
    ours = _lora_grads(model)

    assert float(loss) == pytest.approx(float(out.loss), rel=1e-6)
    assert (int(correct), int(counted)) == (ref_correct, int(mask.sum()))
    assert reference.keys() == ours.keys() and any("lora_A" in n for n in ours)
    for name in reference:
        # Bit-identical on the machines tried; the tolerance only leaves room for fp32 summation order.
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-4, atol=1e-8, msg=name)


def test_the_head_runs_only_where_a_token_is_trained_on(model_dir: Path) -> None:
    """The memory fix: no logits (and no fp32 copy of them) for prompt and padding positions. In bf16,
    where an fp32 copy would be a second, larger one (auto is fp32 on a CPU without native bf16)."""
    model, batch = _model_and_batch(model_dir, "bfloat16")
    head = model.get_output_embeddings()  # type: ignore[operator]
    vocab = head.weight.shape[0]
    seen: list[tuple[int, ...]] = []
    head.register_forward_hook(lambda _m, _a, out: seen.append(tuple(out.shape)))
    saved: list[tuple[torch.dtype, tuple[int, ...]]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append((t.dtype, tuple(t.shape)))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _, counted = causal_lm_loss(model, batch)
    loss.backward()

    assert seen == [(int(counted), vocab)]
    assert int(counted) < batch["labels"][:, 1:].numel()
    vocab_sized = [(dtype, shape) for dtype, shape in saved if shape and shape[-1] == vocab]
    assert vocab_sized and all(dtype == head.weight.dtype == torch.bfloat16 for dtype, _ in vocab_sized)


def test_no_target_tokens_is_a_zero_loss(model_dir: Path) -> None:
    model, batch = _model_and_batch(model_dir)
    batch["labels"] = torch.full_like(batch["labels"], IGNORE)
    loss, correct, counted = causal_lm_loss(model, batch)
    loss.backward()
    assert (float(loss), int(correct), int(counted)) == (0.0, 0, 0)
