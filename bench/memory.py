"""Memory: what 4-bit saves. QLoRA (NF4, double quantization) against LoRA on unquantized bf16 weights.

For each model shape and sequence length, each recipe trains a few steps of Tuneforge's own `run()`
in a fresh subprocess, so one measurement's allocations never count towards the next. Reported:

- CPU: the process's peak RSS (`ru_maxrss`) and the part of it above the RSS right after the imports
  (Python, torch and the CUDA-less libraries cost the same for both recipes);
- GPU (where one is present): `torch.cuda.max_memory_allocated`, effective tokens/s, LoRA-MFU
  (tokens/s x 4N FLOPs / 989 TFLOP/s, the H100 SXM's dense bf16 peak; 4N rather than 6N because
  the frozen base weights need no weight gradient), and the admission estimate of
  `tuneforge/app/jobs/memory_estimate.py` against the measured peak.

Models are Llama-shaped, built from a config with random weights and saved as bf16 safetensors, with
a 32,000-token vocabulary so the embeddings and logits weigh what they do in a real model. Every
training row is a Shakespeare passage cut to exactly the sequence length, so each batch is full.

    python -m bench.memory [--shapes 60m,250m] [--seq 128,512] [--batch 2] [--steps 3] [--record]
    python -m bench.memory --shapes 1b,7b --seq 512,2048 --batch 1   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import SHARED_DATA, in_fresh_process, print_result, proc_status, record
from tuneforge.contract.status import EventLevel
from tuneforge.worker.training.reporter import MemoryReporter

# name -> (hidden, intermediate, layers, heads, kv_heads). 1b is TinyLlama-1.1B's shape, 7b LLaMA-7B's.
SHAPES: dict[str, tuple[int, int, int, int, int]] = {
    "60m": (512, 1376, 8, 8, 8),
    "250m": (1024, 2816, 16, 16, 16),
    "1b": (2048, 5632, 22, 32, 4),
    "7b": (4096, 11008, 32, 32, 32),
}
VOCAB = 32_000
H100_BF16_FLOPS = 989e12
RECIPES = {
    "qlora-nf4": {"bits": 4},
    "lora-bf16": {"bits": None, "compute_dtype": "bfloat16"},
}
MIB = 1024**2


def build_model(dest: Path, shape: str) -> dict[str, Any]:
    """Save a random Llama of the given shape in bf16; returns its config as a dict."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tuneforge.app.demo.tiny_model import build_tokenizer

    hidden, inter, layers, heads, kv = SHAPES[shape]
    tokenizer = build_tokenizer(shakespeare()[:200_000])
    tokenizer.save_pretrained(dest)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # a 7B model in fp32 would need 28 GB of host RAM to build
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(dest, safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    return {"config": config.to_dict(), "params": n_params}


def shakespeare() -> str:
    return (SHARED_DATA / "tinyshakespeare.txt").read_text()


def job_spec(recipe: str, seq: int, batch: int, steps: int) -> dict[str, Any]:
    return {
        "model": "bench",
        "training_file": "shakespeare",
        "seed": 0,
        "quantization": RECIPES[recipe],
        "training": {
            "max_steps": steps,
            "batch_size": batch,
            "max_seq_length": seq,
            "logging_every": 1,
            "eval_every": None,
            "save_every": None,
        },
        "data": {"validation_split": 0.0},
    }


class AnonPeak:
    """Samples the process's anonymous RSS (memory it owns, not file pages mapped from the
    safetensors checkpoint, which the kernel can drop at will) every 5 ms, keeping the peak."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, proc_status("RssAnon"))

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, proc_status("RssAnon"))


class PhaseReporter(MemoryReporter):
    """Splits the peak RSS in two: loading (the 16-bit checkpoint is read, mapped and quantized) and
    training, by resetting the high-water mark when training starts."""

    load_peak = 0

    def event(self, message: str, *, level: EventLevel = "info", data: dict[str, Any] | None = None) -> None:
        if message.startswith("Training started"):
            self.load_peak = proc_status("VmHWM")
            Path("/proc/self/clear_refs").write_text("5")
        super().event(message, level=level, data=data)


def child(args: dict[str, Any]) -> None:
    """One measurement, in its own process. Prints one JSON line."""
    import torch

    from tuneforge.app.jobs.memory_estimate import estimate
    from tuneforge.app.jobs.request import JobCreate
    from tuneforge.worker.training.run import run

    # A forked child starts with its parent's high-water mark (the parent built the model): reset it.
    Path("/proc/self/clear_refs").write_text("5")
    rss_imports = proc_status("VmHWM")
    anon_imports = proc_status("RssAnon")
    spec = JobCreate.model_validate(job_spec(args["recipe"], args["seq"], args["batch"], args["steps"])).resolve()
    # ~4 characters per token for this tokenizer: each passage is longer than the sequence.
    text = shakespeare()
    width = args["seq"] * 6
    n_rows = args["batch"] * args["steps"] + 1
    rows = [{"text": text[i * width : (i + 1) * width]} for i in range(n_rows)]
    reporter = PhaseReporter()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out, AnonPeak() as anon:
        result = run(spec, Path(args["model_dir"]), rows, None, Path(out), reporter)
    wall = time.perf_counter() - t0
    speeds = [p["tokens_per_second"] for p in reporter.points if p.get("tokens_per_second")]
    est = estimate(args["config"], spec)
    out_line: dict[str, Any] = {
        "rss_imports": rss_imports,
        "rss_load_peak": reporter.load_peak,
        "rss_train_peak": proc_status("VmHWM"),
        "anon_imports": anon_imports,
        "anon_peak": anon.peak,
        "tokens_per_s": sorted(speeds)[len(speeds) // 2] if speeds else None,
        "tokens": result.trained_tokens,
        "wall": wall,
        "estimate": est.total if est else None,
        "cuda_peak": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    print_result(out_line)


def measure(model_dir: Path, config: dict[str, Any], recipe: str, seq: int, batch: int, steps: int) -> dict[str, Any]:
    payload = {
        "model_dir": str(model_dir),
        "config": config,
        "recipe": recipe,
        "seq": seq,
        "batch": batch,
        "steps": steps,
    }
    return in_fresh_process("bench.memory", payload, f"{recipe} seq={seq}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="60m,250m", help=f"comma-separated, from {', '.join(SHAPES)}")
    p.add_argument("--seq", default="128,512", help="comma-separated sequence lengths")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--record", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0

    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    seqs = [int(s) for s in args.seq.split(",") if s.strip()]
    rows: list[dict[str, Any]] = []
    gpu: str | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            model_dir = Path(tmp) / shape
            built = build_model(model_dir, shape)
            for seq in seqs:
                for recipe in RECIPES:
                    r = measure(model_dir, built["config"], recipe, seq, args.batch, args.steps)
                    r |= {"shape": shape, "params": built["params"], "seq": seq, "recipe": recipe}
                    gpu = r["gpu"] or gpu
                    print(json.dumps(r), flush=True)
                    rows.append(r)
            for f in model_dir.iterdir():  # a 7B checkpoint is 13 GB: free the disk before the next
                f.unlink()

    lines = [
        f"Llama-shaped models with random weights (vocab {VOCAB:,}), batch {args.batch}, {args.steps} steps, "
        "LoRA r=16 on all linear layers, AdamW. Loading = peak RSS from start to the first step (the 16-bit "
        "checkpoint is mapped and read); training = peak RSS from the first step to the end; anonymous = peak "
        "memory the process owns (RSS less mapped file pages). All are whole-process figures: "
        f"after the imports alone the process holds {rows[0]['rss_imports'] / MIB:,.0f} MiB.",
        "",
    ]
    if gpu:
        lines += [
            f"GPU: {gpu}.",
            "",
            "| model | seq | recipe | cuda max allocated | saved vs bf16 LoRA | estimate | estimate / measured "
            "| tokens/s | LoRA-MFU |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    else:
        lines += [
            "| model | seq | recipe | peak RSS loading | peak RSS training | training peak vs bf16 LoRA "
            "| peak anonymous | tokens/s |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for r in rows:
        base = next(x for x in rows if x["shape"] == r["shape"] and x["seq"] == r["seq"] and x["recipe"] == "lora-bf16")
        name = f"{r['shape']} ({r['params'] / 1e6:,.0f}M)"
        tps = r["tokens_per_s"] or 0.0
        if gpu:
            peak, base_peak = r["cuda_peak"], base["cuda_peak"]
            est = r["estimate"] or 0.0
            mfu = tps * 4 * r["params"] / H100_BF16_FLOPS
            lines.append(
                f"| {name} | {r['seq']} | {r['recipe']} | {peak / MIB:,.0f} MiB | {1 - peak / base_peak:.0%} | "
                f"{est / MIB:,.0f} MiB | {est / peak:.2f} | {tps:,.0f} | {mfu:.1%} |"
            )
        else:
            train = r["rss_train_peak"]
            lines.append(
                f"| {name} | {r['seq']} | {r['recipe']} | {r['rss_load_peak'] / MIB:,.0f} MiB | {train / MIB:,.0f} MiB "
                f"| {train / base['rss_train_peak'] - 1:+.0%} | {r['anon_peak'] / MIB:,.0f} MiB | {tps:,.0f} |"
            )
    record("Memory: QLoRA (4-bit NF4) against bf16 LoRA", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
