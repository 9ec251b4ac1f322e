"""OpenAI's preference rows (DPO), checked at upload:
`{"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", "content": ...}],
"non_preferred_output": [...]}`."""

from __future__ import annotations

from typing import Any

PREFERENCE_FIELDS = ("input", "preferred_output", "non_preferred_output")
_INPUT_ROLES = ("system", "developer", "user", "assistant", "tool")


def is_preference_row(row: dict[str, Any]) -> bool:
    return "preferred_output" in row or "non_preferred_output" in row


def _check_turns(value: Any, where: str, roles: tuple[str, ...]) -> str | None:
    if not isinstance(value, list) or not value:
        return f"`{where}` must be a non-empty list of messages"
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            return f"{where}[{i}] must be an object"
        if m.get("role") not in roles:
            return f"{where}[{i}].role must be {' or '.join(roles)}"
        if not isinstance(m.get("content"), str) or not m["content"]:
            return f"{where}[{i}].content must be a non-empty string"
    return None


def check_preference_row(row: dict[str, Any]) -> str | None:
    """What is wrong with a preference row, naming the field; None when it is usable."""
    for name in PREFERENCE_FIELDS:
        if name not in row:
            return f"a preference row needs `{name}`; it is missing"
    inp = row["input"]
    if not isinstance(inp, dict) or "messages" not in inp:
        return "`input` must be an object with `messages`"
    if problem := _check_turns(inp["messages"], "input.messages", _INPUT_ROLES):
        return problem
    for name in ("preferred_output", "non_preferred_output"):
        if problem := _check_turns(row[name], name, ("assistant",)):
            return problem
    return None
