"""Data prepared once (prepare.py, tokenstore.py): the store's examples are exactly the per-row
encoder's (data.encode_causal, then data.pack) on varied rows, splits by row position are make_splits',
a second preparation of the same inputs is a cache hit and of different ones a miss, the parallel
build equals the serial one, progress is reported with an ETA, and a file is read without holding it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import alpaca_row, make_spec, sharegpt_row, weather_chat
from tuneforge.worker.file_rows import FileRows
from tuneforge.worker.training import prepare
from tuneforge.worker.training.data import encode_causal, make_splits, normalize_rows, split_indices
from tuneforge.worker.training.model import load_tokenizer
from tuneforge.worker.training.prepare import ListRows, build_store, prepared_store
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.samples import sample_prompts
from tuneforge.worker.training.setup import prepare_data
from tuneforge.worker.training.tokenstore import TOKENS, TokenStore, TokenView


def varied_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Every causal shape: multi-turn chats with weights and system prompts, tools and tool calls,
    alpaca, ShareGPT, prompt/completion (some with empty completions) and text of every length."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        k = i % 6
        if k == 0:
            rows.append(weather_chat(i))
        elif k == 1:
            rows.append(alpaca_row(i))
        elif k == 2:
            rows.append(sharegpt_row(i))
        elif k == 3:
            rows.append({"prompt": f"p {i} " * rng.randint(1, 30), "completion": f"c {i}" * rng.randint(0, 5)})
        elif k == 4:
            rows.append({"text": "word " * rng.randint(1, 200)})
        else:
            messages: list[dict[str, Any]] = [{"role": "system", "content": "be brief"}]
            for t in range(rng.randint(1, 5)):
                messages.append({"role": "user", "content": f"q{t} " * rng.randint(1, 40)})
                answer: dict[str, Any] = {"role": "assistant", "content": f"a{t} " * rng.randint(1, 40)}
                if t > 0 and rng.random() < 0.4:
                    answer["weight"] = rng.choice([0, 1])
                messages.append(answer)
            rows.append({"messages": messages})
    return rows


@pytest.fixture(scope="module")
def tok(model_dir: Path) -> Any:
    return load_tokenizer(model_dir)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return varied_rows(240)


@pytest.mark.parametrize(
    "training",
    [
        {"max_seq_length": 64},  # many truncated, some dropped (nothing left to learn from)
        {"max_seq_length": 512},
        {"max_seq_length": 128, "train_on_inputs": True},
        {"max_seq_length": 96, "packing": True},
    ],
)
def test_store_examples_equal_the_row_encoder(
    tok: Any, model_dir: Path, rows: list[dict[str, Any]], tmp_path: Path, training: dict[str, Any]
) -> None:
    spec = make_spec(training=training)
    old = encode_causal(normalize_rows(rows, spec), tok, spec)
    store = build_store(ListRows(rows), model_dir, tok, spec, tmp_path / "s", MemoryReporter())
    new = store.view(range(len(rows)), spec.training.max_seq_length if spec.training.packing else None)
    assert isinstance(new.examples, TokenView)
    assert list(new.examples) == old.examples
    assert (new.truncated, new.dropped, new.real_tokens, new.loss_tokens) == (
        old.truncated,
        old.dropped,
        old.real_tokens,
        old.loss_tokens,
    )
    assert new.truncated > 0 or training["max_seq_length"] > 64
    assert [len(ex["input_ids"]) for ex in old.examples] == new.examples.lengths()
    # 4 bytes a token on disk, memory-mapped rather than read in.
    assert (tmp_path / "s" / TOKENS).stat().st_size == 4 * int(store.offsets[-1])
    assert isinstance(store.tokens, np.memmap)


def test_splits_by_position_are_make_splits() -> None:
    rows = [{"text": str(i)} for i in range(101)]
    for data in ({"validation_split": 0.2, "test_split": 0.1}, {"validation_split": 0.0}, {"shuffle_seed": 9}):
        spec = make_spec(data=data, seed=3)
        want = make_splits(rows, None, spec)
        got = split_indices(len(rows), False, spec)
        assert [rows[i] for i in got.train] == want.train
        assert [rows[i] for i in got.validation] == want.validation
        assert [rows[i] for i in got.test] == want.test
    spec = make_spec(data={"test_split": 0.1})
    with_file = make_splits(rows, rows[:5], spec)
    got = split_indices(len(rows), True, spec)
    assert [rows[i] for i in got.train] == with_file.train and got.validation == []


def test_prepare_data_equals_the_per_split_encoding(model_dir: Path, tok: Any, tmp_path: Path) -> None:
    """What training reads is what it read before: the same examples in the same order per split."""
    rows = varied_rows(120, seed=1)
    spec = make_spec(
        data={"validation_split": 0.2},
        training={"max_seq_length": 128, "packing": True},
        samples={"from_validation": 3},
    )
    data = prepare_data(spec, model_dir, rows, None, MemoryReporter(), scratch=tmp_path)
    splits = make_splits(normalize_rows(rows, spec), None, spec)
    for got, part in ((data.train, splits.train), (data.validation, splits.validation)):
        assert list(got.examples) == encode_causal(part, tok, spec).examples
    # Sample prompts come from the validation rows, read back from the file by position.
    assert len(data.sample_prompts) == 3
    assert data.sample_prompts == sample_prompts(spec, tok, splits.validation)


class DictCache:
    def __init__(self) -> None:
        self.kept: dict[str, Path] = {}

    def get(self, key: str) -> Path | None:
        return self.kept.get(key)

    def put(self, key: str, folder: Path) -> Path:
        self.kept[key] = folder
        return folder


def test_same_inputs_hit_the_cache_and_other_settings_miss(model_dir: Path, tok: Any, tmp_path: Path) -> None:
    rows = varied_rows(60)
    cache = DictCache()
    spec = make_spec(training={"max_seq_length": 128})
    source = ListRows(rows, fingerprint="sha-a")
    first, reused, key = prepared_store(source, model_dir, tok, spec, tmp_path, MemoryReporter(), cache)
    assert not reused and key in cache.kept
    # Another seed, split or packing is a view over the same store: a hit.
    other_split = make_spec(seed=7, data={"validation_split": 0.3}, training={"max_seq_length": 128, "packing": True})
    again, reused, key2 = prepared_store(source, model_dir, tok, other_split, tmp_path, MemoryReporter(), cache)
    assert reused and key2 == key and again.folder == first.folder
    # What changes the tokens is a miss: the length, the loss mask, the file's content.
    for spec_b, fingerprint in (
        (make_spec(training={"max_seq_length": 64}), "sha-a"),
        (make_spec(training={"max_seq_length": 128, "train_on_inputs": True}), "sha-a"),
        (spec, "sha-b"),
    ):
        _, reused, other = prepared_store(
            ListRows(rows, fingerprint=fingerprint), model_dir, tok, spec_b, tmp_path, MemoryReporter(), cache
        )
        assert not reused and other != key
    # The "Data ready" event says which it was.
    reporter = MemoryReporter()
    prepare_data(spec, model_dir, source, None, reporter, cache=cache, scratch=tmp_path / "x")
    ready = next(d for _, m, d in reporter.events if m.startswith("Data ready"))
    assert ready is not None and ready["prepared_data"] == "reused" and ready["prepared_key"] == key


def test_parallel_build_equals_serial_and_reports_progress(
    model_dir: Path, tok: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = varied_rows(600, seed=2)
    spec = make_spec(training={"max_seq_length": 128})
    serial = build_store(ListRows(rows), model_dir, tok, spec, tmp_path / "serial", MemoryReporter(), workers=1)
    monkeypatch.setattr(prepare, "PARALLEL_MIN_ROWS", 100)
    monkeypatch.setattr(prepare, "CHUNK_ROWS", 100)
    monkeypatch.setattr(prepare, "PROGRESS_EVERY_S", 0.0)
    reporter = MemoryReporter()
    parallel = build_store(ListRows(rows), model_dir, tok, spec, tmp_path / "parallel", reporter, workers=2)
    assert parallel.meta["workers"] == 2
    for name in ("offsets", "flags", "loss", "tokens"):
        assert np.array_equal(getattr(serial, name), getattr(parallel, name)), name
    progress = [d for _, m, d in reporter.events if m.startswith("Preparing")]
    assert progress, reporter.events
    assert all(d is not None and d["rows_total"] == 600 for d in progress)
    assert [d["rows_done"] for d in progress if d] == sorted(d["rows_done"] for d in progress if d)
    assert all(d["eta_seconds"] is not None and d["rows_per_second"] > 0 for d in progress if d)


def test_file_rows_read_in_batches_and_by_position(tmp_path: Path) -> None:
    rows = [{"text": f"row {i}"} for i in range(25)]
    path = tmp_path / "f.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, "   ")  # blank lines are not rows
    path.write_bytes(("\ufeff" + "\n".join(lines) + "\n\n").encode())
    source = FileRows(path, "jsonl", "sha")
    assert source.count() == 25
    assert [r for b in source.batches(7) for r in source.decoder(b)] == rows
    assert source.rows_at([20, 0, 4]) == [rows[20], rows[0], rows[4]]
    csv = tmp_path / "f.csv"
    csv.write_text("text\n" + "".join(f"row {i}\n" for i in range(10)))
    source = FileRows(csv, "csv", "sha")
    assert source.count() == 10 and source.rows_at([9]) == [{"text": "row 9"}]
    assert [r for b in source.batches(4) for r in source.decoder(b)] == [{"text": f"row {i}"} for i in range(10)]


def test_an_empty_store_opens(model_dir: Path, tok: Any, tmp_path: Path) -> None:
    spec = make_spec(training={"max_seq_length": 128})
    store = build_store(ListRows([]), model_dir, tok, spec, tmp_path / "e", MemoryReporter())
    assert TokenStore(store.folder).n_rows == 0 and len(store.view([], None).examples) == 0
