"""LoRA dropout with a bool mask on the CPU: the same numbers as torch's dropout, a quarter of the mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers import make_spec
from tuneforge.worker.training.dropout import MaskDropout
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.setup import prepare_model

CPU = torch.device("cpu")


def _run(module: nn.Module, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    x = x.clone().requires_grad_(True)
    out = module(x * 1.0)  # a non-leaf input, as inside a model
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
    assert x.grad is not None
    return out.detach(), x.grad, torch.rand(3)  # the last: the generator's state afterwards


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_bit_identical_to_torch_dropout(p: float) -> None:
    x = torch.randn(4, 7, 33)
    reference = _run(nn.Dropout(p), x, seed=11)
    ours = _run(MaskDropout(p), x, seed=11)
    for a, b in zip(reference, ours, strict=True):
        assert torch.equal(a, b)


def test_keeps_a_bool_mask_for_backward() -> None:
    saved: list[torch.dtype] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.dtype)
        return t

    x = torch.randn(8, 16, requires_grad=True) * 1.0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        MaskDropout(0.1)(x)
    assert saved == [torch.bool]
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        nn.Dropout(0.1)(x)
    assert saved == [torch.float32]  # what it replaces: an fp32 noise tensor as large as the input


def test_identity_in_eval_mode() -> None:
    x = torch.randn(5, 5)
    assert torch.equal(MaskDropout(0.3).eval()(x), x)


def test_prepare_model_swaps_lora_dropout_on_the_cpu_and_keeps_the_adapter_keys(model_dir: Path) -> None:
    model = prepare_model(make_spec(lora={"dropout": 0.1}), model_dir, None, CPU, MemoryReporter())
    dropouts = [m for n, m in model.named_modules() if ".lora_dropout." in n]
    assert dropouts and all(type(m) is MaskDropout and m.p == 0.1 for m in dropouts)
    keys = [k for k in model.state_dict() if "lora_" in k]
    assert keys and all("lora_dropout" not in k for k in keys)


def test_a_run_trains_bit_identically_with_and_without_the_swap(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from tests.helpers import shakespeare_rows
    from tuneforge.worker.training import setup
    from tuneforge.worker.training.run import run

    spec = make_spec(training={"max_steps": 3, "batch_size": 8, "learning_rate": 1e-2}, lora={"dropout": 0.1})
    swapped = run(spec, model_dir, shakespeare_rows(24), None, tmp_path / "a", MemoryReporter())
    monkeypatch.setattr(setup, "compact_lora_dropout", lambda model, device: 0)
    plain = run(spec, model_dir, shakespeare_rows(24), None, tmp_path / "b", MemoryReporter())
    a = load_file(swapped.adapter_dir / "adapter_model.safetensors")
    b = load_file(plain.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
