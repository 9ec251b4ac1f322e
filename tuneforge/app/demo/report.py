"""What the demo prints at the end, from what the API returned: plain functions of plain data."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from tuneforge.app.demo.sms_task import Score


@dataclass(frozen=True)
class SamplePair:
    index: int
    prompt: str
    before: str  # the step-0 output: the base model
    after: str  # the output at the job's last sampled step
    last_step: int


def sample_pairs(samples: list[dict[str, Any]]) -> list[SamplePair]:
    """Each prompt's output at step 0 beside its output at the last step sampled (rows share an `index`)."""
    by_index: dict[int, dict[int, dict[str, Any]]] = {}
    for s in samples:
        by_index.setdefault(int(s["index"]), {})[int(s["step"])] = s
    pairs = []
    for index, steps in sorted(by_index.items()):
        if 0 not in steps or len(steps) < 2:
            continue
        last = max(steps)
        pairs.append(SamplePair(index, steps[0]["prompt"], steps[0]["output"], steps[last]["output"], last))
    return pairs


def message_of(prompt: str, rows: list[dict[str, str]]) -> dict[str, str] | None:
    """The held-out row a sample prompt asks about (the prompt is the rendered chat template around its text)."""
    return next((r for r in rows if r["text"] in prompt), None)


def one_line(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 1] + "…")


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def accuracy_line(before: Score, after: Score) -> str:
    return (
        f"{before.accuracy:.1%} -> {after.accuracy:.1%} on {after.n} held-out messages "
        f"(spam F1 {before.spam_f1:.2f} -> {after.spam_f1:.2f}; "
        f"answers that were not spam/ham: {before.unparsed} -> {after.unparsed})"
    )


def sample_lines(pairs: list[SamplePair], rows: list[dict[str, str]]) -> list[str]:
    lines = []
    for p in pairs:
        row = message_of(p.prompt, rows)
        asked = f"[{row['label']}] {one_line(row['text'], 64)}" if row else one_line(p.prompt[-64:], 64)
        lines += [f"  {asked}", f"      before: {one_line(p.before)}", f"      after:  {one_line(p.after)}"]
    return lines


def commonest(replies: list[str], n: int = 2) -> str:
    """The most frequent replies with their counts: what "not spam/ham" answers actually said."""
    counts = Counter(" ".join(r.split()) for r in replies)
    return ", ".join(f"{one_line(text, 30)} x{k}" for text, k in counts.most_common(n))
