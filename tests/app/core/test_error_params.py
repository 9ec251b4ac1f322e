"""`error.param` names a field the client wrote: never a character offset, never a type pydantic tried."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tuneforge.app.core.errors import describe_validation
from tuneforge.app.inference.schemas import ChatCompletionRequest, CompletionRequest


def _described(model: Any, body: dict[str, Any]) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return describe_validation(info.value.errors())


def test_a_body_that_is_not_json_names_no_field_and_says_where() -> None:
    # FastAPI's error for an undecodable body: its location is the character offset.
    error = {"type": "json_invalid", "loc": ("body", 1), "msg": "JSON decode error", "ctx": {"error": "Expecting"}}
    message, param = describe_validation([error])
    assert param is None
    assert "not valid JSON (Expecting at character 1)" in message


def test_union_members_are_not_fields() -> None:
    assert _described(CompletionRequest, {"model": "m", "prompt": [1, 2, 3]})[1] == "prompt"
    assert _described(CompletionRequest, {"model": "m", "prompt": [[1, 2]]})[1] == "prompt"
    chat = {"model": "m", "messages": [{"role": "user", "content": 5}]}
    assert _described(ChatCompletionRequest, chat)[1] == "messages.0.content"
    # Ordinary paths are unchanged.
    assert _described(ChatCompletionRequest, {"model": "m", "messages": [{"role": "robot", "content": "x"}]})[1] == (
        "messages.0.role"
    )
