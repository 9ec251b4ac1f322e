"""Row shapes: detection, conversion to OpenAI chat messages, and every bad row named."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tuneforge.contract import formats
from tuneforge.contract.formats import Fields, RowError, detect, from_alpaca, from_openai, from_sharegpt

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}


def tool_chat() -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
        {"role": "assistant", "content": "3 degrees."},
    ]


@pytest.mark.parametrize(
    ("row", "shape"),
    [
        ({"messages": []}, "messages"),
        ({"conversations": []}, "sharegpt"),
        ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
        ({"prompt": "a", "completion": "b"}, "prompt_completion"),
        ({"text": "a"}, "text"),
        ({"label": 1}, None),
    ],
)
def test_detect(row: dict[str, Any], shape: str | None) -> None:
    assert detect(row) == shape
    assert formats.detect_columns(dict.fromkeys(row)) == shape


def test_detect_honours_renamed_fields() -> None:
    assert detect({"chat": []}, Fields(messages="chat")) == "messages"


def test_openai_tool_calls_and_weights() -> None:
    msgs = tool_chat()
    msgs.insert(1, {"role": "assistant", "content": "Let me look.", "weight": 0})
    msgs.insert(2, {"role": "user", "content": "Go on."})
    chat = from_openai(msgs, tools=[WEATHER])
    assert chat.tools == [WEATHER]
    assert chat.trainable == [False, False, False, True, False, True]
    assert chat.messages[3] == {"role": "assistant", "tool_calls": [CALL]}  # null content dropped
    assert chat.messages[4]["name"] == "get_weather"
    # as_row round-trips, with the weights written out
    again = from_openai(chat.as_row()["messages"], chat.as_row()["tools"])
    assert again.trainable == chat.trainable


def test_null_tool_calls_on_a_plain_answer_are_no_calls() -> None:
    chat = from_openai([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "tool_calls": None}])
    assert chat.messages[1] == {"role": "assistant", "content": "b"}
    with pytest.raises(RowError, match=r"messages\[1\]\.content must be a string"):
        from_openai([{"role": "user", "content": "a"}, {"role": "assistant", "content": None, "tool_calls": []}])


def test_legacy_functions_and_function_call_become_tools() -> None:
    chat = from_openai(
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": "{}"}},
            {"role": "function", "name": "get_weather", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ],
        functions=[WEATHER["function"]],
    )
    assert chat.tools == [WEATHER]
    call = chat.messages[1]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": "{}"}
    assert chat.messages[2] == {"role": "tool", "tool_call_id": call["id"], "name": "get_weather", "content": "sunny"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m[3].update(weight=2), r"messages\[3\]\.weight must be 0 or 1, not 2"),
        (lambda m: m[3].update(weight=0.5), r"messages\[3\]\.weight must be 0 or 1"),
        (lambda m: m[3].update(weight=True), r"messages\[3\]\.weight must be 0 or 1"),
        (lambda m: m[0].update(weight=1), r"messages\[0\]\.weight applies to assistant messages only"),
        (lambda m: m[2].update(tool_call_id="call_9"), r"messages\[2\]\.tool_call_id 'call_9' matches no earlier"),
        (lambda m: m.insert(3, dict(m[2])), r"messages\[3\]\.tool_call_id 'call_1' matches no earlier"),
        (lambda m: m[1].update(tool_calls=[{"id": "c"}]), r"messages\[1\]\.tool_calls\[0\] must be"),
        (lambda m: m[0].update(content=None), r"messages\[0\]\.content must be a string"),
        (lambda m: m[0].update(role="robot"), r"messages\[0\]\.role must be one of"),
        (lambda m: [x.update(weight=0) for x in m if x["role"] == "assistant"], "no assistant turn to learn from"),
    ],
)
def test_bad_chat_rows_name_the_field(mutate: Any, message: str) -> None:
    msgs = tool_chat()
    mutate(msgs)
    with pytest.raises(RowError, match=message):
        from_openai(msgs, tools=[WEATHER])


def test_function_message_without_a_call_is_refused() -> None:
    with pytest.raises(RowError, match="answers no earlier function_call"):
        from_openai([{"role": "function", "name": "f", "content": "x"}, {"role": "assistant", "content": "y"}])


def test_alpaca() -> None:
    chat = from_alpaca(
        {
            "instruction": "Translate",
            "input": "chat",
            "output": "cat",
            "system": "Be brief.",
            "history": [["hi", "hello"]],
        }
    )
    assert [m["role"] for m in chat.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert chat.messages[3]["content"] == "Translate\n\nchat"
    assert chat.trainable == [False, False, True, False, True]
    assert from_alpaca({"instruction": "Say hi", "output": "hi"}).messages[0] == {"role": "user", "content": "Say hi"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"instruction": "a", "input": "", "output": ""}, "`output` is empty"),
        ({"instruction": "a", "output": "   "}, "`output` is empty"),
        ({"instruction": "a", "output": 3}, "`output` must be a string"),
        ({"instruction": "", "input": "", "output": "b"}, "both empty"),
        ({"instruction": "a", "output": "b", "history": [["x"]]}, r"history\[0\]"),
    ],
)
def test_bad_alpaca_rows(row: dict[str, Any], message: str) -> None:
    with pytest.raises(RowError, match=message):
        from_alpaca(row)


def test_sharegpt_with_function_call_and_observation() -> None:
    chat = from_sharegpt(
        {
            "conversations": [
                {"from": "system", "value": "You help."},
                {"from": "human", "value": "Weather?"},
                {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}})},
                {"from": "observation", "value": "sunny"},
                {"from": "gpt", "value": "Sunny."},
            ],
            "tools": json.dumps([WEATHER["function"]]),
        }
    )
    assert [m["role"] for m in chat.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert chat.messages[2]["tool_calls"][0]["function"]["arguments"] == '{"city": "Oslo"}'
    assert chat.tools == [WEATHER]
    assert chat.trainable == [False, False, True, False, True]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"conversations": [{"from": "alien", "value": "x"}]}, r"conversations\[0\]\.from must be"),
        ({"conversations": [{"from": "human", "value": 1}]}, r"conversations\[0\]\.value must be a string"),
        ({"conversations": [{"from": "human", "value": "x"}]}, "no assistant turn"),
        ({"conversations": [{"from": "observation", "value": "x"}, {"from": "gpt", "value": "y"}]}, "no earlier"),
    ],
)
def test_bad_sharegpt_rows(row: dict[str, Any], message: str) -> None:
    with pytest.raises(RowError, match=message):
        from_sharegpt(row)
