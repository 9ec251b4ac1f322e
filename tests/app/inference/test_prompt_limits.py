"""The byte bound on prompts (tuneforge/app/inference/prompt_limits.py) against real tokenizers: a prompt
it refuses really is at least the model's context in tokens, tokenizers that can drop text get no
bound, and the context is the one the worker reads. Lone surrogates are found by field."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from tests.tinymodels import corpus
from tuneforge.app.core.config import Settings
from tuneforge.app.inference.prompt_limits import (
    bound_for,
    lone_surrogate_field,
    longest_token_bytes,
    prompt_bytes,
)
from tuneforge.app.inference.schemas import ChatCompletionRequest, CompletionRequest


def _samples() -> list[str]:
    rng = random.Random(7)
    alphabet = "ab ,.\n\t€😀汉ÿ\u0301"
    return [
        corpus()[:4000],
        " " * 3000,
        "a" * 3000,
        "😀" * 700,
        "汉字" * 500,
        "".join(rng.choice(alphabet) for _ in range(3000)),
        "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(2000)),
    ]


def _assert_bound_holds(tokenizer: Tokenizer, longest: int) -> None:
    for text in _samples():
        tokens = len(tokenizer.encode(text, add_special_tokens=False).ids)
        size = len(text.encode())
        assert tokens >= math.ceil(size / longest), (text[:40], tokens, size, longest)


def test_the_bound_holds_for_the_tiny_models_byte_level_tokenizer(settings: Settings, tiny_model: str) -> None:
    bound = bound_for(settings, tiny_model)
    assert bound is not None
    model_dir = settings.models_dir / tiny_model
    assert bound.context == json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]
    assert 1 < bound.longest_token < 64
    _assert_bound_holds(Tokenizer.from_file(str(model_dir / "tokenizer.json")), bound.longest_token)


def test_the_bound_holds_through_the_chat_template(settings: Settings, tiny_model: str) -> None:
    """What the worker tokenizes (the template applied) is never fewer tokens than the bound says."""
    from transformers import AutoTokenizer

    bound = bound_for(settings, tiny_model)
    assert bound is not None
    tokenizer = AutoTokenizer.from_pretrained(settings.models_dir / tiny_model)
    for text in _samples():
        body = ChatCompletionRequest.model_validate(
            {"model": tiny_model, "messages": [{"role": "system", "content": " x "}, {"role": "user", "content": text}]}
        )
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert tokens >= math.ceil(prompt_bytes(body) / bound.longest_token)


def test_the_context_is_the_one_the_worker_reads(settings: Settings, tiny_model: str) -> None:
    from transformers import AutoConfig

    from tuneforge.worker.inference.generate import context_length

    bound = bound_for(settings, tiny_model)
    config = AutoConfig.from_pretrained(settings.models_dir / tiny_model)
    assert bound is not None and bound.context == context_length(SimpleNamespace(config=config))


def _trained(model: models.Model, **parts: object) -> Tokenizer:
    tokenizer = Tokenizer(model)
    for name, part in parts.items():
        setattr(tokenizer, name, part)
    trainer = (
        trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[UNK]"])
        if isinstance(model, models.WordPiece)
        else trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"])
    )
    tokenizer.train_from_iterator([corpus()], trainer)
    return tokenizer


def test_a_sentencepiece_style_tokenizer_with_byte_fallback_is_bounded() -> None:
    """Llama 2's layout: `▁` for spaces (a normalizer that only grows text) and byte fallback."""
    tokenizer = _trained(
        models.BPE(byte_fallback=True, unk_token="<unk>"),
        normalizer=normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]),
    )
    tokenizer.add_tokens([f"<0x{b:02X}>" for b in range(256)])  # the byte pieces byte fallback emits
    longest = longest_token_bytes(json.loads(tokenizer.to_str()))
    assert longest is not None
    _assert_bound_holds(tokenizer, longest)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        (
            "whitespace pre-tokenizer drops spaces",
            lambda: _trained(models.BPE(), pre_tokenizer=pre_tokenizers.Whitespace()),
        ),
        ("NFKC shrinks text", lambda: _trained(models.BPE(byte_fallback=True), normalizer=normalizers.NFKC())),
        ("WordPiece: one [UNK] per unknown word", lambda: _trained(models.WordPiece(unk_token="[UNK]"))),
        ("BPE without byte fallback", lambda: _trained(models.BPE(unk_token="<unk>", fuse_unk=True))),
    ],
)
def test_tokenizers_that_can_shrink_text_get_no_bound(name: str, make: object) -> None:
    tokenizer = make()  # type: ignore[operator]
    assert longest_token_bytes(json.loads(tokenizer.to_str())) is None, name


def test_a_model_without_a_bound_is_left_to_the_worker(settings: Settings, tmp_path: Path) -> None:
    assert bound_for(settings, "no-such-model") is None
    assert bound_for(settings, "a" * 300) is None


def test_lone_surrogates_are_found_by_field() -> None:
    ok = {"role": "user", "content": "ok"}
    chat = {"model": "m", "messages": [ok]}
    cases = [
        ({**chat, "messages": [{"role": "user", "content": "a\udfff"}]}, "messages[0].content"),
        (
            {
                **chat,
                "messages": [chat["messages"][0], {"role": "user", "content": [{"type": "text", "text": "\ud800"}]}],
            },
            "messages[1].content[0].text",
        ),
        ({**chat, "stop": ["x", "\udc00"]}, "stop[1]"),
        ({**chat, "user": "\udfff"}, "user"),
        ({**chat, "messages": [{"role": "user", "content": "fine 😀 \u00e9"}]}, None),
    ]
    for body, field in cases:
        assert lone_surrogate_field(ChatCompletionRequest.model_validate(body)) == field
    assert lone_surrogate_field(CompletionRequest.model_validate({"model": "m", "prompt": "\udfff"})) == "prompt"
    assert lone_surrogate_field(CompletionRequest.model_validate({"model": "m", "prompt": ["\udfff"]})) == "prompt[0]"
