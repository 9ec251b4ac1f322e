"""Row shapes of training data, detected and converted to OpenAI chat messages.

Pure Python (json only): upload validation (`tuneforge/app/files/parsing.py`) and the engine
(`tuneforge/worker/training/data.py`) both import it, so a row the API accepts is a row the engine can train on.

Shapes:
- `messages`: OpenAI chat rows, with function calling (`tools` / legacy `functions`, assistant
  `tool_calls` with null content, `tool` messages with `tool_call_id`, legacy `function_call` and the
  `function` role) and a per-assistant-message `weight` of 0 or 1;
- `alpaca`: `instruction`, `input`, `output`, optional `system` and `history` ([[user, assistant], ...]);
- `sharegpt`: `conversations: [{from, value}]` with from human/gpt/system/function_call/observation,
  optional top-level `system` and `tools`;
- `prompt_completion` and `text`.

`to_chat()` turns the first three into one `Chat`: OpenAI-shaped messages (legacy forms rewritten to
`tool_calls` / `tool`), the tools, and which messages carry loss. A row that cannot be trained on raises
`RowError` naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Shape = Literal["messages", "alpaca", "sharegpt", "prompt_completion", "text"]
CHAT_SHAPES: tuple[Shape, ...] = ("messages", "alpaca", "sharegpt")
SHAPES: tuple[Shape, ...] = ("messages", "alpaca", "sharegpt", "prompt_completion", "text")
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "function_call",
    "observation": "observation",
    "tool": "observation",
}


class RowError(ValueError):
    """A row that cannot be trained on; the message names the field."""


@dataclass(frozen=True)
class Fields:
    """The column names a job spec (or, at upload, the defaults) gives the shapes."""

    messages: str = "messages"
    prompt: str = "prompt"
    completion: str = "completion"
    text: str = "text"


@dataclass
class Chat:
    """A conversation ready for a chat template: OpenAI-shaped messages (`weight` removed), the tools
    (OpenAI's `[{"type": "function", "function": {...}}]`, or None), and per message whether it
    carries loss (assistant turns whose weight is not 0)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    trainable: list[bool] = field(default_factory=list)

    def as_row(self, messages_field: str = "messages") -> dict[str, Any]:
        """Back to an OpenAI chat row (with weights), e.g. after augmentation."""
        msgs = []
        for m, t in zip(self.messages, self.trainable, strict=True):
            msgs.append({**m, "weight": 1 if t else 0} if m["role"] == "assistant" else dict(m))
        row: dict[str, Any] = {messages_field: msgs}
        if self.tools:
            row["tools"] = self.tools
        return row


def detect(row: Mapping[str, Any], fields: Fields = Fields()) -> Shape | None:
    """The shape of one row, from the keys it has; None when it has none of them."""
    if fields.messages in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if fields.prompt in row and fields.completion in row:
        return "prompt_completion"
    if fields.text in row:
        return "text"
    return None


def detect_columns(columns: Mapping[str, Any], fields: Fields = Fields()) -> Shape | None:
    """The shape of a file from its recorded column names (the same rule as `detect`)."""
    return detect(dict.fromkeys(columns), fields)


def shapes_of(columns: Mapping[str, Any], fields: Fields = Fields()) -> set[Shape]:
    """Every shape whose columns are all present (a row named with `data.format` is read as that shape)."""
    found: set[Shape] = set()
    if fields.messages in columns:
        found.add("messages")
    if "conversations" in columns:
        found.add("sharegpt")
    if "instruction" in columns and "output" in columns:
        found.add("alpaca")
    if fields.prompt in columns and fields.completion in columns:
        found.add("prompt_completion")
    if fields.text in columns:
        found.add("text")
    return found


def to_chat(row: Mapping[str, Any], shape: Shape, fields: Fields = Fields()) -> Chat:
    if shape == "messages":
        return from_openai(row.get(fields.messages), row.get("tools"), row.get("functions"), fields.messages)
    if shape == "alpaca":
        return from_alpaca(row)
    if shape == "sharegpt":
        return from_sharegpt(row)
    raise RowError(f"a {shape} row is not a conversation")


# --------------------------------------------------------------------------- OpenAI chat


def _text(value: Any, where: str, *, nullable: bool = False) -> str | None:
    """OpenAI content: a string, or a list of text parts (joined)."""
    if value is None and nullable:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        parts = [p.get("text") for p in value]
        if all(isinstance(p, str) for p in parts):
            return "".join(str(p) for p in parts)
    raise RowError(f"{where} must be a string{' or null' if nullable else ''} (or a list of text parts)")


def _tools(tools: Any, functions: Any) -> list[dict[str, Any]] | None:
    out: list[dict[str, Any]] = []
    if tools is not None:
        if not isinstance(tools, list):
            raise RowError("`tools` must be a list of {type: 'function', function: {name, ...}}")
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(t, dict) or t.get("type", "function") != "function" or not isinstance(fn, dict):
                raise RowError(f"tools[{i}] must be {{type: 'function', function: {{name, ...}}}}")
            if not isinstance(fn.get("name"), str) or not fn["name"]:
                raise RowError(f"tools[{i}].function.name must be a non-empty string")
            out.append({"type": "function", "function": fn})
    if functions is not None:
        if not isinstance(functions, list):
            raise RowError("`functions` must be a list of {name, description, parameters}")
        for i, fn in enumerate(functions):
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise RowError(f"functions[{i}].name must be a non-empty string")
            out.append({"type": "function", "function": fn})
    return out or None


def _arguments(value: Any, where: str) -> str:
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    if not isinstance(value, str):
        raise RowError(f"{where} must be a JSON string")
    return value


def _tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise RowError(f"{where} must be a non-empty list")
    calls = []
    for k, c in enumerate(value):
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(c, dict) or not isinstance(fn, dict):
            raise RowError(f"{where}[{k}] must be {{id, type: 'function', function: {{name, arguments}}}}")
        if not isinstance(c.get("id"), str) or not c["id"]:
            raise RowError(f"{where}[{k}].id must be a non-empty string")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise RowError(f"{where}[{k}].function.name must be a non-empty string")
        args = _arguments(fn.get("arguments", "{}"), f"{where}[{k}].function.arguments")
        calls.append({"id": c["id"], "type": "function", "function": {"name": fn["name"], "arguments": args}})
    return calls


def from_openai(value: Any, tools: Any = None, functions: Any = None, name: str = "messages") -> Chat:
    """Validate an OpenAI chat row and rewrite its legacy forms: `function_call` becomes `tool_calls`
    (ids `call_<n>`), a `function` message becomes a `tool` message answering it, `developer` becomes
    `system`. Each `tool` message must answer an earlier, not yet answered, tool call."""
    if not isinstance(value, list) or not value:
        raise RowError(f"`{name}` must be a non-empty list")
    chat = Chat(messages=[], tools=_tools(tools, functions))
    pending: dict[str, str] = {}  # tool_call_id -> function name, of calls not yet answered
    for i, m in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(m, dict):
            raise RowError(f"{where} must be an object")
        role = m.get("role")
        if role not in ROLES:
            raise RowError(f"{where}.role must be one of {', '.join(ROLES)}")
        weight = m.get("weight")
        if weight is not None:
            if role != "assistant":
                raise RowError(f"{where}.weight applies to assistant messages only")
            if isinstance(weight, bool) or weight not in (0, 1):
                raise RowError(f"{where}.weight must be 0 or 1, not {weight!r}")
        out: dict[str, Any] = {"role": "system" if role == "developer" else role}
        # Exports often carry `"tool_calls": null` (or []) on plain answers: those are no calls.
        if role == "assistant" and (m.get("tool_calls") or m.get("function_call") is not None):
            content = _text(m.get("content"), f"{where}.content", nullable=True)
            if m.get("tool_calls"):
                calls = _tool_calls(m["tool_calls"], f"{where}.tool_calls")
            else:
                fc = m["function_call"]
                if not isinstance(fc, dict) or not isinstance(fc.get("name"), str) or not fc["name"]:
                    raise RowError(f"{where}.function_call must be {{name, arguments}}")
                args = _arguments(fc.get("arguments", "{}"), f"{where}.function_call.arguments")
                calls = [{"id": f"call_{i}", "type": "function", "function": {"name": fc["name"], "arguments": args}}]
            if content:
                out["content"] = content
            out["tool_calls"] = calls
            for c in calls:
                pending[c["id"]] = c["function"]["name"]
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in pending:
                raise RowError(f"{where}.tool_call_id {call_id!r} matches no earlier assistant tool call")
            out.update(tool_call_id=call_id, name=pending.pop(call_id), content=_text(m.get("content"), where))
        elif role == "function":
            fname = m.get("name")
            call_id = next((k for k, v in pending.items() if v == fname), None)
            if call_id is None:
                raise RowError(f"{where} (role function, name {fname!r}) answers no earlier function_call")
            del pending[call_id]
            out.update(role="tool", tool_call_id=call_id, name=fname, content=_text(m.get("content"), where))
        else:
            out["content"] = _text(m.get("content"), f"{where}.content")
            if isinstance(m.get("name"), str) and role != "assistant":
                out["name"] = m["name"]
        chat.messages.append(out)
        chat.trainable.append(role == "assistant" and weight != 0)
    if not any(chat.trainable):
        raise RowError(f"`{name}` has no assistant turn to learn from (or every one has weight 0)")
    return chat


# --------------------------------------------------------------------------- alpaca and ShareGPT


def _string(row: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = row.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise RowError(f"`{key}` must be a string")
    return value


def from_alpaca(row: Mapping[str, Any]) -> Chat:
    """instruction + input -> a user turn, output -> the assistant turn; `system` and `history`
    ([[user, assistant], ...]) come before them."""
    instruction = _string(row, "instruction", required=True)
    extra = _string(row, "input", required=False)
    output = _string(row, "output", required=True)
    if not output.strip():
        raise RowError("`output` is empty: an alpaca row needs an answer to learn from")
    if not instruction.strip() and not extra.strip():
        raise RowError("`instruction` and `input` are both empty")
    messages: list[dict[str, Any]] = []
    system = _string(row, "system", required=False)
    if system:
        messages.append({"role": "system", "content": system})
    history = row.get("history") or []
    if not isinstance(history, list):
        raise RowError("`history` must be a list of [instruction, response] pairs")
    for k, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RowError(f"history[{k}] must be a pair of strings [instruction, response]")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    user = "\n\n".join(x for x in (instruction, extra) if x.strip())
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return Chat(messages=messages, trainable=[m["role"] == "assistant" for m in messages])


def _sharegpt_tools(value: Any) -> Any:
    if isinstance(value, str):  # LLaMA-Factory stores tools as a JSON string
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError as exc:
            raise RowError("`tools` is a string but not JSON") from exc
    if isinstance(value, list):  # bare function schemas, or OpenAI's {type, function}
        value = [t if isinstance(t, dict) and "function" in t else {"type": "function", "function": t} for t in value]
    return value


def from_sharegpt(row: Mapping[str, Any]) -> Chat:
    """`from`: human -> user, gpt -> assistant, system, function_call (a JSON `{name, arguments}` in
    `value`) -> an assistant tool call, observation -> the tool's answer to the latest call."""
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RowError("`conversations` must be a non-empty list of {from, value}")
    messages: list[dict[str, Any]] = []
    system = row.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    for i, t in enumerate(turns):
        where = f"conversations[{i}]"
        if not isinstance(t, dict):
            raise RowError(f"{where} must be an object {{from, value}}")
        role = SHAREGPT_ROLES.get(str(t.get("from")))
        if role is None:
            raise RowError(f"{where}.from must be human, gpt, system, function_call or observation")
        value = t.get("value")
        if not isinstance(value, str):
            raise RowError(f"{where}.value must be a string")
        if role == "function_call":
            try:
                call = json.loads(value)
            except json.JSONDecodeError as exc:
                raise RowError(f"{where}.value must be a JSON object {{name, arguments}}") from exc
            if not isinstance(call, dict):
                raise RowError(f"{where}.value must be a JSON object {{name, arguments}}")
            messages.append({"role": "assistant", "content": None, "function_call": call})
        elif role == "observation":
            prev = next((m for m in reversed(messages) if "function_call" in m), None)
            name = prev["function_call"].get("name") if prev else None
            messages.append({"role": "function", "name": name, "content": value})
        else:
            messages.append({"role": role, "content": value})
    return from_openai(messages, tools=_sharegpt_tools(row.get("tools")), name="conversations")
