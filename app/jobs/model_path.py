"""Resolve a job's `model` to a directory inside the models root, or refuse it.

A model is named by a path relative to TUNEFORGE_MODELS_DIR (e.g. `tiny-llama` or `org/model`).
Symlinks are resolved before the containment check, so `../x`, absolute paths elsewhere and links
pointing out of the root are all refused. Only safetensors weights are accepted, and a config that
needs custom code (`auto_map`) is refused because Tuneforge never sets `trust_remote_code`.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.jobs.spec import SpecError


def resolve_model_dir(models_root: Path, name: str) -> Path:
    root = models_root.resolve()
    if "\x00" in name or not name.strip():
        raise SpecError("model", "model must be a directory name under the models root")
    candidate = Path(name)
    if candidate.is_absolute():
        raise SpecError("model", f"model {name!r} is an absolute path; name a directory relative to the models root")
    resolved = (root / candidate).resolve()
    if resolved != root and root not in resolved.parents:
        raise SpecError("model", f"model {name!r} resolves outside the models root")
    if not resolved.is_dir():
        raise SpecError("model", f"model {name!r} does not exist under the models root")
    config = resolved / "config.json"
    if not config.is_file():
        raise SpecError("model", f"model {name!r} has no config.json")
    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise SpecError("model", f"model {name!r} has an unreadable config.json") from exc
    if not isinstance(cfg, dict):
        raise SpecError("model", f"model {name!r} has an invalid config.json")
    if cfg.get("auto_map"):
        raise SpecError("model", f"model {name!r} needs custom code (auto_map); trust_remote_code is never enabled")
    if not any(resolved.glob("*.safetensors")):
        pickled = any(resolved.glob("*.bin")) or any(resolved.glob("*.pt")) or any(resolved.glob("*.pth"))
        detail = " (only pickle .bin/.pt weights found, which are refused)" if pickled else ""
        raise SpecError("model", f"model {name!r} has no safetensors weights{detail}")
    return resolved


def model_config(model_dir: Path) -> dict[str, object]:
    return json.loads((model_dir / "config.json").read_text())
