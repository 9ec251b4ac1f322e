"""docs/training.md is generated from the spec models; it must say what the code does."""

from __future__ import annotations

from pathlib import Path

from tuneforge.app.jobs.spec_docs import render

ROOT = Path(__file__).resolve().parents[3]


def test_training_md_is_current() -> None:
    written = (ROOT / "docs" / "training.md").read_text()
    assert written == render(), "regenerate it: python -m tuneforge.app.jobs.spec_docs > docs/training.md"
    assert "| `samples.from_validation` | int | `2` |" in written  # e.g. the samples default
