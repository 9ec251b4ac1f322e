"""Encoding of each data shape: which tokens carry loss (assistant turns and their tool calls, never a
weight-0 turn, a user turn or a tool's answer), and templates that cannot render tools refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import alpaca_row, make_spec, sharegpt_row, weather_chat
from tuneforge.app.demo.tiny_model import PLAIN_CHAT_TEMPLATE
from tuneforge.contract.status import ErrorCode
from tuneforge.worker.training.data import IGNORE, Encoded, encode_causal, normalize_rows
from tuneforge.worker.training.errors import TrainingError
from tuneforge.worker.training.model import load_tokenizer


@pytest.fixture
def tok(model_dir: Path) -> Any:
    return load_tokenizer(model_dir)


def loss_text(tok: Any, enc: Encoded, k: int = 0) -> str:
    ex = enc.examples[k]
    return str(tok.decode([t for t in ex["labels"] if t != IGNORE], skip_special_tokens=False))


def encode(rows: list[dict[str, Any]], tok: Any, **data: Any) -> Encoded:
    spec = make_spec(data=data)
    return encode_causal(normalize_rows(rows, spec), tok, spec)


def test_tool_calls_carry_loss_and_weight_zero_turns_do_not(tok: Any) -> None:
    enc = encode([weather_chat()], tok)
    text = loss_text(tok, enc)
    assert '<call>get_weather {"city": "Rome"}</call>' in text
    assert "It is warm and sunny." in text
    for not_trained in ("Hold on a moment", "Is it warm", "Please check", "warm and sunny<", 'get_weather"'):
        assert not_trained not in text, (not_trained, text)
    full = tok.decode(enc.examples[0]["input_ids"], skip_special_tokens=False)
    assert '"name": "get_weather"' in full and "Hold on a moment." in full  # the tools and the turn are there
    assert enc.loss_tokens == sum(1 for t in enc.examples[0]["labels"][1:] if t != IGNORE)
    assert 0 < enc.loss_tokens < enc.real_tokens


def test_weight_one_and_absent_weights_both_train(tok: Any) -> None:
    row = weather_chat()
    row["messages"][1]["weight"] = 1
    assert "Hold on a moment." in loss_text(tok, encode([row], tok))


def test_legacy_function_call_rows_train(tok: Any) -> None:
    row = {
        "functions": [{"name": "lookup", "parameters": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Find it."},
            {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": "{}"}},
            {"role": "function", "name": "lookup", "content": "found"},
            {"role": "assistant", "content": "Found it."},
        ],
    }
    text = loss_text(tok, encode([row], tok))
    assert "<call>lookup {}</call>" in text and "Found it." in text and "found<" not in text


def test_alpaca_and_sharegpt_train_on_the_answer_only(tok: Any) -> None:
    for row in (alpaca_row(), sharegpt_row()):
        enc = encode([row], tok)
        text = loss_text(tok, enc)
        assert text.strip().startswith("The citizen speaks.") and "Name the speaker" not in text, text
        assert "Line 0" not in text and "briefly" not in text


def test_format_named_in_the_spec(tok: Any) -> None:
    enc = encode([alpaca_row()], tok, format="alpaca")
    assert "The citizen speaks." in loss_text(tok, enc)
    with pytest.raises(TrainingError) as info:
        encode([{"text": "no instruction here"}], tok, format="alpaca")
    assert info.value.code == ErrorCode.INVALID_FILE and "Row 1 (alpaca)" in info.value.message


def test_template_that_ignores_tools_is_invalid_spec(tok: Any) -> None:
    tok.chat_template = PLAIN_CHAT_TEMPLATE
    with pytest.raises(TrainingError) as info:
        encode([weather_chat()], tok)
    assert info.value.code == ErrorCode.INVALID_SPEC
    assert "does not render `tools`" in info.value.message
    row = weather_chat()
    del row["tools"]
    with pytest.raises(TrainingError, match="does not render assistant `tool_calls`"):
        encode([row], tok)
    # Plain chat still works with that template.
    assert encode([sharegpt_row()], tok).examples
