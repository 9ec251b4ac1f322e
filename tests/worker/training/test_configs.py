from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import make_spec
from tuneforge.worker.training import configs
from tuneforge.worker.training.configs import compute_dtype, get_peft_config, get_quantization_config

CPU = torch.device("cpu")


def test_default_is_4bit_nf4_double_quant() -> None:
    spec = make_spec()
    cfg = get_quantization_config(spec.quantization, CPU)
    assert cfg is not None
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_use_double_quant
    assert cfg.bnb_4bit_compute_dtype == compute_dtype(spec.quantization, CPU)


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_computes_4bit_in_bf16_only_on_a_cpu_that_has_it(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: torch.dtype
) -> None:
    """Emulated bf16 made a SmolLM2 training step 12.9x as long as fp32 on an AVX2-only CPU."""
    monkeypatch.setattr(configs, "cpu_has_native_bf16", lambda: native)
    assert compute_dtype(make_spec().quantization, CPU) == expected
    assert compute_dtype(make_spec(quantization={"bits": None}).quantization, CPU) == torch.float32
    pinned = make_spec(quantization={"compute_dtype": "bfloat16"}).quantization
    assert compute_dtype(pinned, CPU) == torch.bfloat16  # an explicit choice is kept


def test_native_bf16_probe_agrees_with_torch() -> None:
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert configs.cpu_has_native_bf16() == expected


def test_fp4_without_double_quant_and_explicit_dtype() -> None:
    spec = make_spec(quantization={"quant_type": "fp4", "double_quant": False, "compute_dtype": "float32"})
    cfg = get_quantization_config(spec.quantization, torch.device("cpu"))
    assert cfg is not None
    assert cfg.bnb_4bit_quant_type == "fp4" and not cfg.bnb_4bit_use_double_quant
    assert cfg.bnb_4bit_compute_dtype == torch.float32


def test_8bit_and_none() -> None:
    eight = get_quantization_config(make_spec(quantization={"bits": 8}).quantization, torch.device("cpu"))
    assert eight is not None and eight.load_in_8bit
    assert get_quantization_config(make_spec(quantization={"bits": None}).quantization, torch.device("cpu")) is None


def test_lora_config_mapping() -> None:
    spec = make_spec(
        lora={
            "r": 4,
            "alpha": 8,
            "dropout": 0.1,
            "target_modules": ["q_proj", "v_proj"],
            "bias": "lora_only",
            "use_rslora": True,
        }
    )
    cfg = get_peft_config(spec.lora, "causal_lm")
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.bias, cfg.use_rslora) == (4, 8, 0.1, "lora_only", True)
    assert set(cfg.target_modules) == {"q_proj", "v_proj"}  # type: ignore[arg-type]  # a list here, by the spec
    assert cfg.task_type == "CAUSAL_LM"
    cls = get_peft_config(make_spec().lora, "sequence_classification", head_modules=["classifier"])
    assert cls.modules_to_save == ["classifier"] and cls.task_type == "SEQ_CLS"


def test_packed_examples_do_not_attend_to_each_other(tmp_path: Path) -> None:
    """A packed row gives every example the logits it gets alone: position ids restart per example
    and no attention mask is sent, so transformers masks block-diagonally."""
    import torch
    from transformers import AutoModelForCausalLM

    from tests.tinymodels import build_tiny_llama
    from tuneforge.worker.training.data import collate, pack

    model_dir = build_tiny_llama(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    a = {"input_ids": [5, 9, 12, 40, 7], "labels": [5, 9, 12, 40, 7]}
    b = {"input_ids": [33, 8, 21], "labels": [33, 8, 21]}
    rows = pack([a, b], block=16)
    assert len(rows) == 1
    batch = collate(rows, pad_id=0)
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed = model(**batch, use_cache=False).logits[0]  # a KV cache turns packed masking off
        alone_a = model(input_ids=torch.tensor([a["input_ids"]])).logits[0]
        alone_b = model(input_ids=torch.tensor([b["input_ids"]])).logits[0]
    torch.testing.assert_close(packed[:5], alone_a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed[5:8], alone_b, atol=1e-5, rtol=1e-4)
    assert batch["labels"][0, 5].item() == -100  # b's first token is not predicted from a's last
