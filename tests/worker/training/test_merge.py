"""The merged export loads with transformers alone, in a fresh process, and gives the logits of the
4-bit base + adapter it came from, within bf16 tolerance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers import ROOT, make_spec, shakespeare_rows
from tuneforge.worker.training.configs import pick_device
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run

IDS = [[1, 40, 41, 90, 200, 7, 55, 120]]


def test_merged_export_matches_base_plus_adapter_in_a_fresh_process(model_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    from tuneforge.worker.training.model import load_model

    spec = make_spec(training={"batch_size": 8, "learning_rate": 2e-2, "max_steps": 6}, lora={"dropout": 0.0})
    result = run(spec, model_dir, shakespeare_rows(40), None, tmp_path / "job", MemoryReporter())
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    dest = tmp_path / "merged"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tuneforge.worker.training.merge",
            str(spec_file),
            str(model_dir),
            str(result.adapter_dir),
            str(dest),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    cfg = json.loads((dest / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["dtype"] == "bfloat16"
    assert (dest / "tokenizer.json").is_file() and not list(dest.glob("adapter_*"))

    script = f"""
import json, sys, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({str(dest)!r})
assert "peft" not in sys.modules
with torch.no_grad():
    print(json.dumps(model(torch.tensor({IDS})).logits.float().tolist()))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    merged_logits = torch.tensor(json.loads(out.stdout.strip().splitlines()[-1]))

    base, _ = load_model(model_dir, spec, pick_device())
    adapted = PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()
    base_only = load_model(model_dir, spec, pick_device())[0].eval()
    with torch.no_grad():
        expected = adapted(torch.tensor(IDS)).logits.float()
        unadapted = base_only(torch.tensor(IDS)).logits.float()
    diff = (merged_logits - expected).abs().max().item()
    assert diff < 0.05 * expected.abs().max().item() + 0.05, diff
    # ... and the adapter is really in there: the merged model is not the plain base.
    assert (merged_logits - unadapted).abs().max().item() > 5 * diff
