"""Spec -> Hugging Face config objects. Pure functions, in the manner of trl's
`get_quantization_config` / `get_peft_config`."""

from __future__ import annotations

import os

import torch
from peft import LoraConfig, TaskType
from transformers import BitsAndBytesConfig

from tuneforge.contract.spec import JobSpec, LoraSpec, QuantizationSpec

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Classification heads are trained in full and kept in full precision.
HEAD_NAMES = ("classifier", "score")


def pick_device() -> torch.device:
    """`cuda:<LOCAL_RANK>` for a rank of a multi-device job (its own GPU), else cuda or cpu."""
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        index = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX).

    Without it torch emulates bf16 matmuls: on an AVX2-only EPYC a (800 x 576) @ (576 x 1536) product
    took 1,211 ms in bf16 and 13 ms in fp32, and a SmolLM2 QLoRA step 12.9x as long (bench/cpu_step.py).
    torch exposes the CPU's features only through private probes; a torch without them reads as
    "no", which costs at most speed on a CPU that had them (fp32 is never slow).
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def compute_dtype(q: QuantizationSpec, device: torch.device) -> torch.dtype:
    if q.compute_dtype != "auto":
        return _DTYPES[q.compute_dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # bitsandbytes' CPU 4-bit layers dequantize to whichever dtype they are given (an NF4 layer's
    # forward and backward: 31 ms in fp32, 876 ms in emulated bf16 on that AVX2 EPYC). bf16 halves the
    # activations, so it is kept where the CPU computes in it natively; plain matmuls stay in fp32.
    return torch.bfloat16 if q.bits == 4 and cpu_has_native_bf16() else torch.float32


def get_quantization_config(
    q: QuantizationSpec, device: torch.device, skip_modules: list[str] | None = None
) -> BitsAndBytesConfig | None:
    if q.bits is None:
        return None
    if q.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=compute_dtype(q, device),
        bnb_4bit_quant_storage=torch.uint8,
        llm_int8_skip_modules=skip_modules,
    )


def peft_task_type(task: str) -> TaskType:
    return TaskType.CAUSAL_LM if task == "causal_lm" else TaskType.SEQ_CLS


def get_peft_config(lora: LoraSpec, task: str, head_modules: list[str] | None = None) -> LoraConfig:
    modules_to_save = list(lora.modules_to_save or [])
    for head in head_modules or []:
        if head not in modules_to_save:
            modules_to_save.append(head)
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft annotates int; it takes any number
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias=lora.bias,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        modules_to_save=modules_to_save or None,
        task_type=peft_task_type(task),
    )


def describe(spec: JobSpec, device: torch.device) -> str:
    q = spec.quantization
    if q.bits is None:
        quant = "no quantization (plain LoRA)"
    elif q.bits == 8:
        quant = "8-bit (LLM.int8)"
    else:
        quant = f"4-bit {q.quant_type}{' + double quant' if q.double_quant else ''}"
    return f"{quant}, compute {str(compute_dtype(q, device)).removeprefix('torch.')}, on {device.type}"
