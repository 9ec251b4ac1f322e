"""Checkpoints written atomically: a temp dir, a COMPLETE marker with the file hashes, then a rename.
A crash mid-write leaves only a `.tmp-*` directory, which resume ignores."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from torch import nn

from tuneforge.worker.training.reference import TRAINED

MARKER = "COMPLETE"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_of(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def save_adapter(model: nn.Module, dest: Path, metadata: dict[str, Any]) -> None:
    assert isinstance(model, PeftModel), "checkpoints hold the adapter of a peft model"
    # The trained adapter only: a warm start's frozen reference (reference.py) is not part of the result.
    model.save_pretrained(str(dest), safe_serialization=True, selected_adapters=[TRAINED])
    (dest / "tuneforge.json").write_text(json.dumps(metadata, indent=2, sort_keys=True))


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def publish(tmp: Path, final: Path) -> dict[str, str]:
    """Hash the adapter, mark the folder complete, and move it into place in one rename."""
    manifest = manifest_of(tmp / "adapter") if (tmp / "adapter").is_dir() else manifest_of(tmp)
    (tmp / MARKER).write_text(json.dumps(manifest, sort_keys=True))
    if final.exists():
        shutil.rmtree(final)  # a resumed attempt re-saving the same step
    os.replace(tmp, final)
    return manifest


def save_checkpoint(
    root: Path,
    step: int,
    model: nn.Module,
    adapter_metadata: dict[str, Any],
    trainer_state: dict[str, Any],
) -> tuple[Path, dict[str, str]]:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_adapter(model, tmp / "adapter", adapter_metadata)
    torch.save(trainer_state, tmp / "state.pt")
    return final, publish(tmp, final)


def latest_complete(root: Path) -> Path | None:
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step-*") if (p / MARKER).is_file() and (p / "state.pt").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    # weights_only: the file is our own, but there is no reason to allow arbitrary pickles anyway.
    return torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)
