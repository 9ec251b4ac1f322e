"""Reinforcement fine-tuning's prompt rows, accepted at upload: `messages` that end before the turn the
model writes (no assistant turn at all), plus at least one other field, the ones a grader reads
(`{{item.<field>}}`). A row of `messages` alone with no assistant turn is still refused: it is a
supervised row missing its answer far more often than a prompt."""

from __future__ import annotations

from typing import Any


def is_prompt_row(row: dict[str, Any], field: str = "messages") -> bool:
    messages = row.get(field)
    return (
        len(row) > 1
        and isinstance(messages, list)
        and bool(messages)
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
        and all(m.get("role") in ("system", "developer", "user") for m in messages)
    )
