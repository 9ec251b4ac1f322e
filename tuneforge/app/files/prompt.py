"""Reinforcement fine-tuning's prompt rows, accepted at upload: `messages` that end before the turn the
model writes (no assistant turn at all), plus any fields a grader reads. A supervised job needs an
assistant turn; admission and the worker say so for the job that uses the file."""

from __future__ import annotations

from typing import Any


def is_prompt_row(row: dict[str, Any], field: str = "messages") -> bool:
    messages = row.get(field)
    return (
        isinstance(messages, list)
        and bool(messages)
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
        and all(m.get("role") in ("system", "developer", "user") for m in messages)
    )
