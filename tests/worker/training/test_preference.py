"""DPO/IPO on the tiny model: the reference is the adapter switched off, the rewards and accuracy
are reported per step and at evaluation, and training on pairs raises held-out preference accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import make_spec, preference_rows
from tuneforge.contract.status import StopReason
from tuneforge.worker.training.data import collate
from tuneforge.worker.training.errors import StopTraining
from tuneforge.worker.training.methods.dpo import (
    _answer_logps,
    collate_pairs,
    encode_preference,
    evaluate_preference,
    pair_terms,
)
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run
from tuneforge.worker.training.setup import prepare_data, prepare_model

DPO = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.5}}}
PAIR_KEYS = [("input_ids", "labels"), ("rejected_ids", "rejected_labels")]


def test_reference_is_the_base_with_the_adapter_off(model_dir: Path) -> None:
    spec = make_spec(method=DPO, training={"batch_size": 4}, data={"validation_split": 0.0})
    data = prepare_data(spec, model_dir, preference_rows(8), None, MemoryReporter())
    ex = data.train.examples[0]
    assert ex["input_ids"][: ex["labels"].count(-100)] == ex["rejected_ids"][: ex["rejected_labels"].count(-100)]
    model = prepare_model(spec, model_dir, None, torch.device("cpu"), MemoryReporter())
    batch = collate_pairs(data.train.examples[:4], data.pad_id)
    assert batch["input_ids"].shape[0] == 8
    # A fresh LoRA adapter is a no-op (B = 0): policy equals reference, so every reward is 0 and the
    # DPO loss is log 2.
    t = pair_terms(model, batch, spec)
    torch.testing.assert_close(t["chosen"], torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(t["loss"], torch.full((4,), 0.6931), atol=1e-3, rtol=0)


@pytest.mark.parametrize("normalize", [False, True])
def test_answer_logits_only_match_the_full_computation(model_dir: Path, normalize: bool) -> None:
    """The pair batch's labels cover only the columns from the earliest answer token, and only those
    positions get logits; the answers' log-probabilities are those of a full forward pass."""
    spec = make_spec(method=DPO, data={"validation_split": 0.0})
    rows = preference_rows(6, seed=1)
    rows[0]["input"]["messages"][0]["content"] += " and then some more words to make this prompt longer"
    data = prepare_data(spec, model_dir, rows, None, MemoryReporter())
    model = prepare_model(spec, model_dir, None, torch.device("cpu"), MemoryReporter())
    model.eval()
    examples = data.train.examples
    batch = collate_pairs(examples, data.pad_id)
    full = collate([{"input_ids": ex[k], "labels": ex[lk]} for k, lk in PAIR_KEYS for ex in examples], data.pad_id)
    assert batch["labels"].shape[1] < full["labels"].shape[1]  # the prompt columns are gone
    torch.testing.assert_close(batch["labels"], full["labels"][:, -batch["labels"].shape[1] :])
    with torch.no_grad():
        logits = model(input_ids=full["input_ids"], attention_mask=full["attention_mask"]).logits[:, :-1].float()
        labels = full["labels"][:, 1:]
        mask = labels != -100
        token = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
        expected = token.sum(-1) / (mask.sum(-1) if normalize else 1)
        torch.testing.assert_close(_answer_logps(model, batch, normalize), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("preference", [{}, {"loss": "ipo", "length_normalization": True}])
def test_dpo_trains_and_raises_held_out_preference_accuracy(
    model_dir: Path, tmp_path: Path, preference: dict[str, Any]
) -> None:
    spec = make_spec(
        method=DPO,
        preference=preference,
        training={"max_steps": 8, "batch_size": 8, "learning_rate": 5e-2, "eval_every": 8},
        data={"validation_split": 0.25},
    )
    rep = MemoryReporter()
    result = run(spec, model_dir, preference_rows(64), None, tmp_path, rep)
    logged = [p for p in rep.points if "loss" in p]
    assert {"rewards_chosen", "rewards_rejected", "reward_margin", "preference_accuracy"} <= set(logged[-1]["extra"])
    assert logged[-1]["extra"]["reward_margin"] > logged[0]["extra"]["reward_margin"]
    held_out, before = result.final_metrics["validation"], result.final_metrics["baseline"]
    assert held_out["preference_accuracy"] >= 0.9, held_out
    assert before["preference_accuracy"] == 0.0 and before["reward_margin"] == 0.0  # policy == reference
    # The model's own log-probability gap moves towards the chosen answers (whether it crosses zero,
    # choice_accuracy, depends on how far apart the base put them: here the rude answer is shorter).
    assert held_out["logps_chosen"] - held_out["logps_rejected"] > before["logps_chosen"] - before["logps_rejected"]
    assert 0.0 <= held_out["choice_accuracy"] <= 1.0


def test_step_0_evaluation_reports_the_base_models_own_choice(model_dir: Path) -> None:
    """At step 0 every reward is 0 (the policy is the reference), so preference_accuracy says nothing
    about the base model; choice_accuracy is how often the base itself ranks the chosen answer first."""
    spec = make_spec(method=DPO, training={"batch_size": 4}, data={"validation_split": 0.0})
    data = prepare_data(spec, model_dir, preference_rows(12, seed=3), None, MemoryReporter())
    model = prepare_model(spec, model_dir, None, torch.device("cpu"), MemoryReporter())
    got = evaluate_preference(model, data.train, spec, data.pad_id, torch.device("cpu"))
    batch = collate_pairs(data.train.examples, data.pad_id)
    with torch.no_grad(), model.disable_adapter():  # type: ignore[operator]
        base = _answer_logps(model, batch, normalize=False)
    chosen, rejected = base[:12], base[12:]
    assert got["preference_accuracy"] == 0.0 and got["reward_margin"] == 0.0
    assert got["choice_accuracy"] == pytest.approx(float((chosen > rejected).float().mean()))
    assert got["logps_chosen"] == pytest.approx(float(chosen.mean()), rel=1e-4)
    assert got["logps_rejected"] == pytest.approx(float(rejected.mean()), rel=1e-4)


def test_dpo_pauses_and_resumes(model_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(method=DPO, training={"max_steps": 4, "batch_size": 8}, data={"validation_split": 0.0})
    with pytest.raises(StopTraining):
        run(
            spec,
            model_dir,
            preference_rows(32),
            None,
            tmp_path,
            MemoryReporter(stop_at_step=2, stop_reason=StopReason.PAUSED),
        )
    rep = MemoryReporter()
    run(spec, model_dir, preference_rows(32), None, tmp_path, rep)
    assert [p["step"] for p in rep.points if "loss" in p] == [3, 4]


def test_encoding_needs_a_chat_template(model_dir: Path) -> None:
    from tuneforge.worker.training.errors import TrainingError
    from tuneforge.worker.training.model import load_tokenizer

    tok = load_tokenizer(model_dir)
    tok.chat_template = None
    with pytest.raises(TrainingError) as info:
        encode_preference(preference_rows(1), tok, make_spec(method=DPO))
    assert info.value.code == "invalid_spec"
