"""Resolve a job's `model` to a directory inside the models root, or refuse it.

A model is named by a path relative to TUNEFORGE_MODELS_DIR (e.g. `tiny-llama` or `org/model`).
Symlinks are resolved before the containment check, so `../x`, absolute paths elsewhere and links
pointing out of the root are all refused. Only safetensors weights are accepted (pickle weights run
code when loaded) unless the operator sets TUNEFORGE_ALLOW_PICKLE_WEIGHTS, and a config that needs
custom code (`auto_map`) is refused because Tuneforge never sets `trust_remote_code`.

A Hub id (`owner/name`) that is not a directory under the root is refused unless
TUNEFORGE_ALLOW_HUB=true. Then the worker downloads only its safetensors, configs and tokenizer
files into `<data_dir>/hub/`, and the same checks run on that directory before anything is loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tuneforge.app.core.config import Settings
from tuneforge.contract.spec import SpecError

# The longest file name a filesystem takes (Linux NAME_MAX, in bytes): a longer component cannot name
# a directory, and stat() on it fails with ENAMETOOLONG instead of "not found".
NAME_MAX = 255
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# What a Hub download may fetch: never *.bin / *.pt / *.pth / *.py.
HUB_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.model", "*.txt", "*.tiktoken"]


def is_hub_id(models_root: Path, name: str) -> bool:
    return bool(HUB_ID.match(name)) and ".." not in name.split("/") and not (models_root / name).exists()


def resolve_model(settings: Settings, name: str, *, fetch: bool = False) -> Path | None:
    """The directory to load `name` from, or refuse it with a SpecError naming `model`.

    For an allowed Hub id, the API (fetch=False) cannot check the files without downloading them,
    so it returns None and the worker (fetch=True) downloads and checks them before training."""
    if is_hub_id(settings.models_dir, name):
        if not settings.allow_hub:
            raise SpecError(
                "model",
                f"model {name!r} is not under the models root, and Hub model ids are disabled on this "
                "server (TUNEFORGE_ALLOW_HUB=false). Ask the operator to place the model under the models root.",
            )
        if not fetch:
            return None
        hub_root = settings.data_dir / "hub"
        _download(name, hub_root / name)
        return resolve_model_dir(hub_root, name)
    return resolve_model_dir(settings.models_dir, name, allow_pickle=settings.allow_pickle_weights)


def _download(repo_id: str, dest: Path) -> None:
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, local_dir=dest, allow_patterns=HUB_PATTERNS)
    except Exception as exc:
        raise SpecError(
            "model", f"model {repo_id!r} could not be downloaded from the Hub ({type(exc).__name__})"
        ) from exc


def resolve_model_dir(models_root: Path, name: str, *, allow_pickle: bool = False) -> Path:
    if "\x00" in name or not name.strip():
        raise SpecError("model", "model must be a directory name under the models root")
    longest = max(len(part.encode("utf-8", "surrogatepass")) for part in name.split("/"))
    if longest > NAME_MAX:
        raise SpecError(
            "model", f"model has a path component of {longest} bytes; a directory name has at most {NAME_MAX}"
        )
    try:
        return _resolve_model_dir(models_root, name, allow_pickle=allow_pickle)
    except OSError as exc:  # a name the filesystem cannot look up (too long as a whole path, say)
        raise SpecError(
            "model", f"model {name[:64]!r} cannot be looked up under the models root ({exc.strerror})"
        ) from exc


def _resolve_model_dir(models_root: Path, name: str, *, allow_pickle: bool) -> Path:
    root = models_root.resolve()
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
        if pickled and allow_pickle:
            return resolved
        detail = (
            " (only pickle .bin/.pt weights found, which are refused: loading pickle can run code;"
            " convert them to safetensors, or the operator may set TUNEFORGE_ALLOW_PICKLE_WEIGHTS=true)"
            if pickled
            else ""
        )
        raise SpecError("model", f"model {name!r} has no safetensors weights{detail}")
    return resolved


def model_config(model_dir: Path) -> dict[str, object]:
    return json.loads((model_dir / "config.json").read_text())
