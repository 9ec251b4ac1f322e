"""The inference engine in-process: sampling options, stop sequences, limits, and the LRU cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from tuneforge.worker.inference.cache import Loaded, ModelCache, load
from tuneforge.worker.inference.generate import (
    Outcome,
    PromptError,
    Sampling,
    check_length,
    context_length,
    encode_chat,
    encode_prompt,
    generate,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model_dir(tiny_model: str) -> Path:
    return Path(os.environ["TUNEFORGE_MODELS_DIR"]) / tiny_model


@pytest.fixture(scope="module")
def loaded(model_dir: Path) -> Loaded:
    return load(model_dir, None, CPU)


def _run(loaded: Loaded, s: Sampling, prompt: str = "To be, or not") -> tuple[str, Outcome]:
    out = Outcome()
    ids = encode_prompt(loaded.tokenizer, prompt)
    return "".join(generate(loaded.model, loaded.tokenizer, ids, s, outcome=out)), out


def test_greedy_is_deterministic_and_max_tokens_bounds_the_length(loaded: Loaded) -> None:
    a, out = _run(loaded, Sampling(max_tokens=6, temperature=0))
    b, _ = _run(loaded, Sampling(max_tokens=6, temperature=0))
    assert a == b
    assert out.finish_reason in ("length", "stop") and 1 <= out.completion_tokens <= 6


def test_seed_makes_sampling_repeatable(loaded: Loaded) -> None:
    a, _ = _run(loaded, Sampling(max_tokens=8, temperature=1.5, seed=7))
    b, _ = _run(loaded, Sampling(max_tokens=8, temperature=1.5, seed=7))
    c, _ = _run(loaded, Sampling(max_tokens=8, temperature=1.5, top_p=1e-6, seed=8))
    d, _ = _run(loaded, Sampling(max_tokens=8, temperature=0))
    assert a == b
    assert c == d  # a tiny top_p keeps only the most likely token: greedy


def test_a_stop_sequence_cuts_the_text_and_is_not_returned(loaded: Loaded) -> None:
    full, _ = _run(loaded, Sampling(max_tokens=12, temperature=0))
    assert len(full) >= 3
    stop = full[2:4]
    cut, out = _run(loaded, Sampling(max_tokens=12, temperature=0, stop=[stop]))
    assert cut == full[: full.index(stop)]
    assert out.finish_reason == "stop"


def test_should_stop_ends_generation_between_tokens(loaded: Loaded) -> None:
    out = Outcome()
    ids = encode_prompt(loaded.tokenizer, "To be")
    pieces = list(
        generate(loaded.model, loaded.tokenizer, ids, Sampling(max_tokens=50), should_stop=lambda: True, outcome=out)
    )
    assert pieces == [] and out.finish_reason == "cancelled"


def test_prompt_longer_than_the_context_is_refused(loaded: Loaded) -> None:
    ids = encode_prompt(loaded.tokenizer, "word " * 2000)
    with pytest.raises(PromptError) as err:
        check_length(ids, context_length(loaded.model), "prompt")
    assert err.value.param == "prompt" and "context is 512 tokens" in err.value.message


def test_chat_needs_a_chat_template(model_dir: Path, tmp_path: Path, loaded: Loaded) -> None:
    assert encode_chat(loaded.tokenizer, [{"role": "user", "content": "hi"}])
    plain = tmp_path / "plain"
    shutil.copytree(model_dir, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = load(plain, None, CPU).tokenizer
    with pytest.raises(PromptError) as err:
        encode_chat(tokenizer, [{"role": "user", "content": "hi"}])
    assert err.value.param == "model" and "no chat template" in err.value.message


def test_cache_is_bounded_and_a_failed_load_leaves_nothing(model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    adapters = []
    for i in range(2):
        base = load(model_dir, None, CPU).model
        torch.manual_seed(i)
        peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
        peft_model.save_pretrained(tmp_path / f"a{i}")  # type: ignore[arg-type]  # typed str, takes any path
        adapters.append(tmp_path / f"a{i}")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")

    loads: list[tuple[Path, Path | None]] = []

    def loader(base: Path, adapter: Path | None) -> Loaded:
        loads.append((base, adapter))
        return load(base, adapter, CPU)

    cache = ModelCache(2, loader)
    first = cache.get(model_dir, adapters[0])
    assert cache.get(model_dir, adapters[0]) is first  # a hit loads nothing
    cache.get(model_dir, None)
    cache.get(model_dir, adapters[1])
    assert cache.loaded() == [(model_dir, None), (model_dir, adapters[1])]  # LRU dropped adapter 0
    with pytest.raises(Exception):  # noqa: B017 - whatever peft raises, nothing may stay cached
        cache.get(model_dir, broken)
    assert len(cache.loaded()) <= 2 and all(key[1] != broken for key in cache.loaded())
    assert len(loads) == 4


def test_the_cache_drops_a_model_whose_adapter_was_deleted(tmp_path: Path) -> None:
    """DELETE /v1/models removes the adapter folder; the next request a worker serves drops it from memory."""
    kept, deleted = tmp_path / "kept", tmp_path / "deleted"
    for folder in (kept, deleted):
        folder.mkdir()
        (folder / "adapter_config.json").write_text("{}")
    base = tmp_path / "base"
    cache = ModelCache(3, lambda b, a: Loaded(model=object(), tokenizer=None))
    for adapter in (kept, deleted, None):
        cache.get(base, adapter)
    assert cache.drop_missing() == []
    shutil.rmtree(deleted)
    assert cache.drop_missing() == [(base, deleted)]
    assert cache.loaded() == [(base, kept), (base, None)]
