"""The demo task's split, rows and scoring, on the shipped SMS data."""

from __future__ import annotations

import pytest

from tuneforge.app.demo import sms_task


def test_split_is_balanced_disjoint_and_seeded() -> None:
    rows = sms_task.load_rows()
    assert len(rows) == 5574 and {r["label"] for r in rows} == set(sms_task.LABELS)
    train, test = sms_task.balanced_split(rows, 200, 60, seed=1)
    assert len(train) == 200 and len(test) == 60
    assert sum(r["label"] == "spam" for r in train) == 100 and sum(r["label"] == "spam" for r in test) == 30
    assert not {r["text"] for r in train} & {r["text"] for r in test}
    assert sms_task.balanced_split(rows, 200, 60, seed=1) == (train, test)
    assert sms_task.balanced_split(rows, 200, 60, seed=2) != (train, test)
    with pytest.raises(ValueError, match="spam rows"):
        sms_task.balanced_split(rows, 2000, 0)


def test_rows_in_openai_chat_and_preference_shapes() -> None:
    row = {"text": "WIN a prize now", "label": "spam"}
    chat = sms_task.chat_row(row)["messages"]
    assert [m["role"] for m in chat] == ["system", "user", "assistant"] and chat[-1]["content"] == "spam"
    pref = sms_task.preference_row(row)
    assert pref["input"]["messages"] == chat[:2]
    assert pref["preferred_output"][0]["content"] == "spam" and pref["non_preferred_output"][0]["content"] == "ham"


@pytest.mark.parametrize(
    ("reply", "label"),
    [("spam", "spam"), ("Ham.", "ham"), ("  SPAM!\n", "spam"), ("I'm glad to", None), ("", None), ("hamster", None)],
)
def test_parse_answer(reply: str, label: str | None) -> None:
    assert sms_task.parse_answer(reply) == label


def test_score_counts_unparsed_answers_as_wrong() -> None:
    s = sms_task.score(["spam", "ham", "maybe", "spam"], ["spam", "ham", "spam", "ham"])
    assert s.n == 4 and s.accuracy == 0.5 and s.unparsed == 1
    assert s.spam_precision == 0.5 and s.spam_recall == 0.5 and s.spam_f1 == 0.5
    with pytest.raises(ValueError):
        sms_task.score(["spam"], [])
