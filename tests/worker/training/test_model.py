"""Preparing a 4-bit model: what stays 16-bit, what goes to fp32, and that the numbers match peft's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import prepare_model_for_kbit_training

from tests.helpers import make_spec
from tuneforge.worker.training.data import collate, encode_causal
from tuneforge.worker.training.model import load_model, load_tokenizer, prepare_quantized

CPU = torch.device("cpu")


def _batch(model_dir: Path) -> dict[str, torch.Tensor]:
    spec = make_spec(training={"max_seq_length": 48})
    rows = [{"text": "To be, or not to be, that is the question."}, {"text": "Now is the winter of our discontent."}]
    tok = load_tokenizer(model_dir)
    return collate(encode_causal(rows, tok, spec).examples, tok.pad_token_id)


def test_large_frozen_matrices_stay_16bit_and_small_ones_go_to_fp32(model_dir: Path) -> None:
    spec = make_spec()
    model, _ = load_model(model_dir, spec, CPU)
    model = prepare_quantized(model, torch.bfloat16)

    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert model.get_output_embeddings().weight.dtype == torch.bfloat16
    norms = [p for n, p in model.named_parameters() if "norm" in n]
    assert norms and all(p.dtype == torch.float32 for p in norms)
    quantized = [p for p in model.parameters() if type(p).__name__ == "Params4bit"]
    assert quantized and all(not p.requires_grad for p in model.parameters())

    # The residual stream is fp32, as in the reference recipe: the embedding output is upcast.
    seen: list[torch.dtype] = []
    model.model.layers[0].register_forward_hook(lambda _m, _a, out: seen.append(out[0].dtype))
    model(**_batch(model_dir))
    assert seen == [torch.float32]


def test_loss_matches_peft_prepare_within_bf16_rounding(model_dir: Path) -> None:
    """Keeping the embeddings and head in bf16 changes only the head's matmul precision."""
    spec = make_spec()
    batch = _batch(model_dir)

    ours, _ = load_model(model_dir, spec, CPU)
    ours = prepare_quantized(ours, torch.bfloat16)
    reference, _ = load_model(model_dir, spec, CPU)
    reference = prepare_model_for_kbit_training(reference, use_gradient_checkpointing=False)
    assert reference.get_input_embeddings().weight.dtype == torch.float32  # what peft does

    with torch.no_grad():
        loss, ref_loss = float(ours(**batch).loss), float(reference(**batch).loss)
    assert loss == pytest.approx(ref_loss, rel=1e-2)
