"""The demo's real task: SMS spam detection asked of a chat model, answered in one word.

Shared by `tuneforge demo`, the instruction benchmark (bench/) and the DPO benchmark, so that all three
ask the same question and score the answer the same way. The data is the SMS Spam Collection
(CC BY 4.0, `data/NOTICE.md`), shipped in the package so the demo needs no network.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "sms_spam.jsonl"
LABELS = ("ham", "spam")
SYSTEM_PROMPT = "You sort SMS messages. Reply with one word: spam or ham."


def load_rows(path: Path = DATA) -> list[dict[str, str]]:
    """`{"text", "label"}` rows, in file order."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def balanced_split(
    rows: list[dict[str, str]], n_train: int, n_test: int, seed: int = 0
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Train and test rows that share no text, each half spam and half ham (spam is 13% of the
    collection, so a natural split would let "always ham" score 87%; balanced, guessing scores 50%).
    Repeated messages (the collection has about 400, mostly spam) are kept once."""
    rng = random.Random(seed)
    first: dict[str, dict[str, str]] = {}
    for r in rows:
        first.setdefault(r["text"], r)
    by_label = {label: [r for r in first.values() if r["label"] == label] for label in LABELS}
    for group in by_label.values():
        rng.shuffle(group)
    need = {label: (n_train + n_test + 1) // 2 for label in LABELS}
    for label, group in by_label.items():
        if len(group) < need[label]:
            raise ValueError(f"{n_train} + {n_test} rows need {need[label]} {label} rows; the data has {len(group)}")
    test = [r for label in LABELS for r in by_label[label][: n_test // 2]]
    train = [r for label in LABELS for r in by_label[label][n_test // 2 : n_test // 2 + n_train // 2]]
    rng.shuffle(test)
    rng.shuffle(train)
    return train, test


def prompt_messages(text: str) -> list[dict[str, str]]:
    """The conversation up to the answer: what /v1/chat/completions is sent."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]


def chat_row(row: dict[str, str]) -> dict[str, Any]:
    """A training row in OpenAI's chat format: the question, and the label as the assistant's answer."""
    return {"messages": [*prompt_messages(row["text"]), {"role": "assistant", "content": row["label"]}]}


def preference_row(row: dict[str, str]) -> dict[str, Any]:
    """A DPO row in OpenAI's preference format: the right label preferred over the wrong one."""
    wrong = LABELS[1 - LABELS.index(row["label"])]
    return {
        "input": {"messages": prompt_messages(row["text"])},
        "preferred_output": [{"role": "assistant", "content": row["label"]}],
        "non_preferred_output": [{"role": "assistant", "content": wrong}],
    }


def parse_answer(reply: str) -> str | None:
    """The label a reply gives: its first word, if that is "spam" or "ham" (any case, punctuation
    ignored); None for anything else, which scores as wrong."""
    words = re.findall(r"[a-z]+", reply.lower())
    return words[0] if words and words[0] in LABELS else None


@dataclass(frozen=True)
class Score:
    n: int
    accuracy: float
    spam_precision: float
    spam_recall: float
    spam_f1: float
    unparsed: int  # replies that were neither "spam" nor "ham"

    def line(self) -> str:
        return (
            f"accuracy {self.accuracy:.1%} on {self.n} held-out messages (spam F1 {self.spam_f1:.2f}, "
            f"{self.unparsed} answers that were not spam/ham)"
        )


def score(replies: list[str], labels: list[str]) -> Score:
    if len(replies) != len(labels):
        raise ValueError(f"{len(replies)} replies for {len(labels)} labels")
    answers = [parse_answer(r) for r in replies]
    tp = sum(a == "spam" and y == "spam" for a, y in zip(answers, labels, strict=True))
    fp = sum(a == "spam" and y != "spam" for a, y in zip(answers, labels, strict=True))
    fn = sum(a != "spam" and y == "spam" for a, y in zip(answers, labels, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return Score(
        n=len(labels),
        accuracy=sum(a == y for a, y in zip(answers, labels, strict=True)) / max(1, len(labels)),
        spam_precision=precision,
        spam_recall=recall,
        spam_f1=2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        unparsed=sum(a is None for a in answers),
    )
