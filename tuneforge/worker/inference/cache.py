"""A small LRU cache of loaded models: a base, or a base with one adapter applied.

Keyed by the resolved directories. A model is only cached once it loaded completely; a load that
fails leaves nothing behind, and the least recently used entry is dropped *before* a new one loads,
so a worker never holds more than `size` models, even for a moment.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

Key = tuple[Path, Path | None]


@dataclass
class Loaded:
    model: Any
    tokenizer: Any


def load(base_dir: Path, adapter_dir: Path | None, device: torch.device) -> Loaded:
    """Local safetensors only, never remote code. The adapter is applied to the unquantized base in
    the compute dtype (fp32 on a CPU, bf16 on a GPU), as the merged export does."""
    from transformers import AutoModelForCausalLM

    from tuneforge.worker.training.model import load_tokenizer

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(
        base_dir,
        trust_remote_code=False,
        use_safetensors=any(base_dir.glob("*.safetensors")),
        local_files_only=True,
        dtype=dtype,
    )
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
    nn.Module.to(model, device)  # (transformers' own `.to` is typed for its wrapper)
    model.eval()
    tokenizer_dir = adapter_dir if adapter_dir and (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    return Loaded(model=model, tokenizer=load_tokenizer(tokenizer_dir))


class ModelCache:
    def __init__(self, size: int, loader: Callable[[Path, Path | None], Loaded]) -> None:
        self.size = size
        self._loader = loader
        self._entries: OrderedDict[Key, Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def loaded(self) -> list[Key]:
        return list(self._entries)

    def get(self, base_dir: Path, adapter_dir: Path | None) -> Loaded:
        key: Key = (base_dir, adapter_dir)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            while len(self._entries) >= self.size:
                self._entries.popitem(last=False)
            _release()
            loaded = self._loader(base_dir, adapter_dir)  # raises: nothing was cached
            self._entries[key] = loaded
            return loaded

    def drop_missing(self) -> list[Key]:
        """Drop the entries whose adapter folder is gone (its fine-tuned model was deleted, so its
        files left the store and this host's cache), and free their memory. Returns their keys."""
        with self._lock:
            gone = [k for k in self._entries if k[1] is not None and not (k[1] / "adapter_config.json").is_file()]
            for key in gone:
                del self._entries[key]
            if gone:
                _release()
            return gone

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            _release()


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
