"""Tiny models built at test time from a config: nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

from app.demo.tiny_model import build_tiny_llama as _build

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def corpus() -> str:
    return (FIXTURES / "shakespeare_slice.txt").read_text()


def build_tiny_llama(dest: Path, **kw: int) -> Path:
    return _build(dest, corpus(), **kw)
