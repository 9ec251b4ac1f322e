"""A merged export: the base dequantized with the LoRA folded in, as a plain transformers folder
(weights in safetensors, tokenizer, generation config) that loads with
`AutoModelForCausalLM.from_pretrained` and no peft.

The base is loaded exactly as training loaded it (4-bit or 8-bit per the job's spec), then
dequantized: the weights the adapter was trained against, in the base checkpoint's own 16-bit
dtype (not the compute dtype, which is fp32 on CPUs without native bf16 and would double the
export's size). The LoRA is merged into those dense weights, never into quantized ones. The folder
is written under a temporary name and renamed into place.

Run as `python -m worker.training.merge SPEC_JSON BASE_DIR ADAPTER_DIR DEST` (the API starts it in a
child process, so no model stays loaded in the API, and the API never imports the engine).
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path

import torch
from torch import nn

from tuneforge.contract.spec import JobSpec
from tuneforge.worker.training.model import load_model, load_tokenizer

_EXPORT_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def export_dtype(base_dir: Path) -> torch.dtype:
    """The base checkpoint's 16-bit dtype (config.json's `dtype`, `torch_dtype` before transformers 5),
    else bfloat16: a 32-bit or unlabelled checkpoint is exported at half its size, as QLoRA bases are."""
    config = json.loads((base_dir / "config.json").read_text())
    return _EXPORT_DTYPES.get(str(config.get("dtype") or config.get("torch_dtype")), torch.bfloat16)


def merge_adapter(spec: JobSpec, base_dir: Path, adapter_dir: Path, dest: Path) -> Path:
    from peft import PeftModel

    if spec.task != "causal_lm":
        raise ValueError(f"a merged export is for causal_lm jobs, not {spec.task}")
    device = torch.device("cpu")
    dtype = export_dtype(base_dir)
    model, _ = load_model(base_dir, spec, device)
    if getattr(model, "hf_quantizer", None) is not None:
        model = model.dequantize(dtype=dtype)
    nn.Module.to(model, dtype)  # (transformers' own `.to` is typed for its wrapper)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.config.use_cache = True
    if hasattr(merged.config, "quantization_config"):
        del merged.config.quantization_config
    tmp = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        merged.save_pretrained(str(tmp), safe_serialization=True)
        load_tokenizer(base_dir).save_pretrained(str(tmp))
        generation = base_dir / "generation_config.json"
        if generation.is_file():
            shutil.copy2(generation, tmp / "generation_config.json")
        cfg_path = tmp / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("quantization_config", None)
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def main(argv: list[str]) -> int:
    spec_path, base_dir, adapter_dir, dest = argv
    spec = JobSpec.model_validate_json(Path(spec_path).read_text())
    merge_adapter(spec, Path(base_dir), Path(adapter_dir), Path(dest))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
