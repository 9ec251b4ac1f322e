"""The final adapter, moved into place in one rename once it is complete and hashed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import nn

from tuneforge.worker.training import checkpoints as ckpt


def publish_adapter(model: nn.Module, out_dir: Path, metadata: dict[str, Any]) -> tuple[Path, dict[str, str]]:
    """Write `<out_dir>/adapter` atomically. Returns its path and manifest (file -> sha256)."""
    adapter_dir = out_dir / "adapter"
    tmp = out_dir / ".tmp-adapter"
    shutil.rmtree(tmp, ignore_errors=True)
    ckpt.save_adapter(model, tmp, metadata)
    manifest = ckpt.manifest_of(tmp)
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    tmp.rename(adapter_dir)
    return adapter_dir, manifest
