"""data.augmentation: seeded, originals kept, inputs changed and targets not (unless asked), real
WordNet synonyms, and a clear invalid_spec when WordNet is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_spec
from tuneforge.contract.status import ErrorCode
from tuneforge.worker.training.augment import augment
from tuneforge.worker.training.errors import TrainingError

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank"
NO_DATA_OPS = [
    {"name": "random_swap", "p": 0.2},
    {"name": "random_deletion", "p": 0.2},
    {"name": "char_noise", "p": 0.1},
]


def spec(ops: list[dict[str, Any]] = NO_DATA_OPS, task: str = "causal_lm", **aug: Any) -> Any:
    return make_spec(task=task, data={"augmentation": {"copies": 2, "seed": 0, "operations": ops, **aug}})


def test_seeded_and_originals_kept() -> None:
    rows = [{"prompt": f"{SENTENCE} {i}", "completion": "yes"} for i in range(5)]
    out, added = augment(rows, spec())
    assert added == 10 and len(out) == 15 and out[:5] == rows
    assert augment(rows, spec())[0] == out  # reproducible
    assert augment(rows, spec(seed=1))[0] != out
    assert all(r["completion"] == "yes" for r in out)  # the target is untouched
    assert sum(r["prompt"] != rows[i % 5]["prompt"] for i, r in enumerate(out[5:])) >= 8


def test_targets_change_only_when_asked() -> None:
    row = {"messages": [{"role": "user", "content": SENTENCE}, {"role": "assistant", "content": SENTENCE}]}
    out, _ = augment([row], spec())
    assert [m["content"] for m in out[1]["messages"]][1] == SENTENCE
    assert out[1]["messages"][0]["content"] != SENTENCE
    out, _ = augment([row], spec(augment_targets=True))
    assert out[1]["messages"][1]["content"] != SENTENCE


def test_plain_text_needs_augment_targets() -> None:
    with pytest.raises(TrainingError) as info:
        augment([{"text": SENTENCE}], spec())
    assert info.value.code == ErrorCode.INVALID_SPEC and info.value.param == "data.augmentation.augment_targets"
    assert len(augment([{"text": SENTENCE}], spec(augment_targets=True))[0]) == 3


def test_classification_text_is_augmented_label_kept() -> None:
    out, _ = augment([{"text": SENTENCE, "label": "ham"}], spec(task="sequence_classification"))
    assert [r["label"] for r in out] == ["ham"] * 3 and out[1]["text"] != SENTENCE


def test_synonyms_come_from_wordnet() -> None:
    out, _ = augment(
        [{"prompt": "quick happy car", "completion": "x"}], spec([{"name": "synonym_replacement", "p": 1}])
    )
    words = out[1]["prompt"].split(" ")
    assert words != ["quick", "happy", "car"]
    assert out[1]["prompt"] != "quick happy car"
    inserted, _ = augment([{"prompt": "happy car", "completion": "x"}], spec([{"name": "random_insertion", "p": 1}]))
    assert len(inserted[1]["prompt"].split()) > 2


def test_missing_wordnet_is_invalid_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEFORGE_WORDNET_DIR", str(tmp_path))
    with pytest.raises(TrainingError) as info:
        augment([{"prompt": SENTENCE, "completion": "x"}], spec([{"name": "synonym_replacement", "p": 0.1}]))
    assert info.value.code == ErrorCode.INVALID_SPEC
    assert "wordnet-base" in info.value.message and info.value.param == "data.augmentation.operations"
    augment([{"prompt": SENTENCE, "completion": "x"}], spec())  # operations without data still run
