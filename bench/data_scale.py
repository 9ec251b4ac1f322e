"""Million-row datasets: how fast a chat file is prepared for training, what memory that takes, and how
long a job waits for its first step, before (the per-row encoder on Python lists) and after (prepare.py:
batched, parallel, a memory-mapped store kept in a cache), on the same generated rows in the same run.

The generator is part of the benchmark: OpenAI chat rows of one to five turns (a system prompt on half),
seeded. Every measurement runs in a fresh process (`bench.common.in_fresh_process`), so its peak RSS
(VmHWM, and the preparing processes' through RUSAGE_CHILDREN) is its own:

- `floor`: each conversation rendered once by SmolLM2's chat template and batched fast-tokenizer
  calls over them (1,000 a call), one process: no loss mask (the assistant turns are not located).
- `anchor`: `datasets.Dataset.from_json(...).map(render + batched tokenizer, num_proc=<cores>)`, the
  way trl and axolotl prepare chat data (again without the loss mask).
- `before`: the engine as it was: every row as a dict (`iter_rows`), then `normalize_rows` and
  `encode_causal` one row at a time, on the first `--before-rows` rows (rows/s and memory per row
  extrapolate linearly; the whole file would take too long on a shared machine).
- `cold` / `warm`: `run()` on a tiny Llama that uses SmolLM2's tokenizer (so its prepared store is
  SmolLM2's), `max_steps=1`, no validation split, with a prepared-data cache: the first job prepares
  the file (cold), a second job on the same file reuses it (warm). Reported: seconds to the first
  training step, the "Data ready" event's preparation seconds, the worker's peak RSS above its RSS
  after imports, and the preparing processes' peak.

    python -m bench.data_scale                      # 1,000,000 rows
    python -m bench.data_scale --rows 100000 --record
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import in_fresh_process, print_result, proc_status, record

WORDS = (
    "the",
    "a",
    "model",
    "answer",
    "question",
    "data",
    "train",
    "token",
    "batch",
    "learning",
    "rate",
    "loss",
    "step",
    "epoch",
    "adapter",
    "weights",
    "layer",
    "attention",
    "memory",
    "file",
    "row",
    "chat",
    "user",
    "assistant",
    "system",
    "reply",
    "because",
    "which",
    "where",
    "when",
    "how",
    "why",
    "what",
    "please",
    "explain",
    "summarize",
    "translate",
    "write",
    "list",
    "compare",
)


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def generate(path: Path, rows: int, seed: int = 0) -> int:
    """`rows` chat rows of one to five turns; returns the file's size in bytes."""
    rng = random.Random(seed)
    with path.open("w") as fh:
        for _ in range(rows):
            messages: list[dict[str, str]] = []
            if rng.random() < 0.5:
                messages.append({"role": "system", "content": sentence(rng, 4, 12)})
            for _ in range(rng.randint(1, 5)):
                messages.append({"role": "user", "content": sentence(rng, 5, 40)})
                messages.append({"role": "assistant", "content": sentence(rng, 5, 60)})
            fh.write(json.dumps({"messages": messages}) + "\n")
    return path.stat().st_size


def make_spec_for(model: str, max_len: int, max_steps: int = 1) -> Any:
    """The default supervised spec, as a POST resolves it; no validation split or samples, so the first
    step follows the data and the model directly."""
    from tuneforge.app.jobs.request import JobCreate

    body = {
        "model": Path(model).name,
        "training_file": "file-bench",
        "seed": 0,
        "training": {"max_steps": max_steps, "batch_size": 8, "max_seq_length": max_len},
        "data": {"validation_split": 0.0},
        "samples": {"from_validation": 0},
    }
    return JobCreate.model_validate(body).resolve()


def children_peak() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


# --------------------------------------------------------------------------- measurements (each in a child)


def floor(p: dict[str, Any]) -> dict[str, Any]:
    from tuneforge.worker.training.model import load_tokenizer

    tok = load_tokenizer(Path(p["model"]))
    base = proc_status("VmRSS")
    t0 = time.perf_counter()
    texts = []
    with open(p["file"]) as fh:
        for line in fh:
            texts.append(tok.apply_chat_template(json.loads(line)["messages"], tokenize=False))
    t1 = time.perf_counter()
    # In calls of 1,000: one call over every row was slower still on a loaded machine (50k rows: 371 s
    # against the anchor's 169 s in all), its encodings held at once.
    tokens = 0
    for i in range(0, len(texts), 1000):
        tokens += sum(
            len(e.ids) for e in tok._tokenizer.encode_batch_fast(texts[i : i + 1000], add_special_tokens=False)
        )
    t2 = time.perf_counter()
    return {
        "seconds": t2 - t0,
        "render_s": t1 - t0,
        "tokenize_s": t2 - t1,
        "tokens": tokens,
        "peak_rss_growth": proc_status("VmHWM") - base,
    }


def anchor(p: dict[str, Any]) -> dict[str, Any]:
    import datasets  # type: ignore[import-untyped]  # no stubs; a dev (bench) dependency
    from transformers import AutoTokenizer

    datasets.disable_caching()
    model = p["model"]
    tok = AutoTokenizer.from_pretrained(model)
    base = proc_status("VmRSS")
    t0 = time.perf_counter()
    ds = datasets.Dataset.from_json(p["file"], cache_dir=p["tmp"])

    def fn(batch: dict[str, list[Any]]) -> dict[str, Any]:
        texts = [tok.apply_chat_template(m, tokenize=False) for m in batch["messages"]]
        return {"input_ids": tok(texts, add_special_tokens=False)["input_ids"]}

    out = ds.map(fn, batched=True, num_proc=p["workers"], remove_columns=ds.column_names)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "rows": len(out),
        "peak_rss_growth": proc_status("VmHWM") - base,
        "children_peak_rss": children_peak(),
    }


def before(p: dict[str, Any]) -> dict[str, Any]:
    from itertools import islice

    from tuneforge.app.files.parsing import iter_rows
    from tuneforge.worker.training.data import encode_causal, normalize_rows
    from tuneforge.worker.training.model import load_tokenizer

    tok = load_tokenizer(Path(p["model"]))
    spec = make_spec_for(p["model"], p["max_len"])
    base = proc_status("VmRSS")
    t0 = time.perf_counter()
    rows = list(islice(iter_rows(Path(p["file"]), "jsonl"), p["rows"]))
    enc = encode_causal(normalize_rows(rows, spec), tok, spec)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "rows": len(rows),
        "tokens": enc.real_tokens,
        "rss_growth": proc_status("VmRSS") - base,
        "peak_rss_growth": proc_status("VmHWM") - base,
    }


class FirstStep:
    """A MemoryReporter that notes when the first training step's metrics arrive."""

    def __init__(self) -> None:
        from tuneforge.worker.training.reporter import MemoryReporter

        self.inner = MemoryReporter()
        self.first_step_at: float | None = None
        self.data_peak = 0  # the worker's peak RSS when the data was ready, before the model loads

    def event(self, message: str, **kw: Any) -> None:
        if message.startswith("Data ready"):
            self.data_peak = proc_status("VmHWM")
        self.inner.event(message, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def metrics(self, point: dict[str, Any]) -> None:
        if self.first_step_at is None and point.get("loss") is not None:
            self.first_step_at = time.perf_counter()
        self.inner.metrics(point)


class DirCache:
    """The worker's prepared-data cache on one machine: a folder per key."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, key: str) -> Path | None:
        folder = self.root / key
        return folder if folder.is_dir() else None

    def put(self, key: str, folder: Path) -> Path:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(folder, dest)
        return dest


def job(p: dict[str, Any]) -> dict[str, Any]:
    import hashlib

    import torch

    from tuneforge.worker.file_rows import FileRows
    from tuneforge.worker.training.run import run

    torch.set_num_threads(1)
    spec = make_spec_for(p["model"], p["max_len"], max_steps=1)
    sha = hashlib.sha256(Path(p["file"]).read_bytes()).hexdigest()
    reporter = FirstStep()
    base = proc_status("VmRSS")
    t0 = time.perf_counter()
    run(
        spec,
        Path(p["model"]),
        FileRows(Path(p["file"]), "jsonl", sha),
        None,
        Path(p["out"]),
        reporter,
        prepared=DirCache(Path(p["cache"])),
    )
    ready = next(d for _, m, d in reporter.inner.events if m.startswith("Data ready") and d is not None)
    progress = [d for _, m, d in reporter.inner.events if m.startswith("Preparing")]
    assert reporter.first_step_at is not None
    return {
        "first_step_s": reporter.first_step_at - t0,
        "prepare_s": ready["prepare_seconds"],
        "prepared": ready["prepared_data"],
        "train_examples": ready["train_examples"],
        "train_tokens": ready["train_tokens"],
        "progress_events": len(progress),
        "data_peak_rss_growth": reporter.data_peak - base,
        "peak_rss_growth": proc_status("VmHWM") - base,
        "children_peak_rss": children_peak(),
    }


CHILDREN = {"floor": floor, "anchor": anchor, "before": before, "job": job}


# --------------------------------------------------------------------------- the run


def tiny_with_smollm2_tokenizer(smollm2: Path, dest: Path) -> Path:
    """A two-layer Llama with SmolLM2's tokenizer files (so its prepared store is SmolLM2's)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tuneforge.worker.training.model import load_tokenizer

    tok = load_tokenizer(smollm2)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(dest, safe_serialization=True)
    for f in smollm2.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab", "merges", "added_tokens")):
            shutil.copy(f, dest / f.name)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--before-rows", type=int, default=20_000)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--skip", default="", help="comma-separated measurements to skip (floor, anchor, before)")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        payload = json.loads(args.child)
        print_result(CHILDREN[payload["what"]](payload))
        return

    from bench.smollm2 import DESCRIPTION, load_average
    from bench.smollm2 import model_dir as smollm2_dir
    from tuneforge.worker.training.prepare import workers_available

    smollm2 = smollm2_dir()
    workers = workers_available()
    tmp = Path(tempfile.mkdtemp(prefix="tuneforge-data-scale-"))
    try:
        data = tmp / "chat.jsonl"
        t0 = time.perf_counter()
        size = generate(data, args.rows)
        print(f"generated {args.rows:,} rows, {size / 1e6:.0f} MB in {time.perf_counter() - t0:.0f}s", flush=True)
        tiny = tiny_with_smollm2_tokenizer(smollm2, tmp / "tiny-smol")
        common = {"file": str(data), "tmp": str(tmp), "workers": workers, "max_len": args.max_len}
        results: dict[str, dict[str, Any]] = {}
        load = [load_average()]
        for what, extra in (
            ("floor", {"model": str(smollm2)}),
            ("anchor", {"model": str(smollm2)}),
            ("before", {"model": str(smollm2), "rows": args.before_rows}),
            ("cold", {"what": "job", "model": str(tiny), "out": str(tmp / "job1"), "cache": str(tmp / "cache")}),
            ("warm", {"what": "job", "model": str(tiny), "out": str(tmp / "job2"), "cache": str(tmp / "cache")}),
        ):
            if what in args.skip.split(","):
                continue
            payload = {"what": what, **common, **extra}
            results[what] = in_fresh_process("bench.data_scale", payload, what)
            print(what, json.dumps(results[what]), flush=True)
            load.append(load_average())
        lines = report(args, size, workers, results, load, DESCRIPTION)
        record(f"Million-row data preparation (bench.data_scale, {args.rows:,} rows)", lines, args.record)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(
    args: argparse.Namespace,
    size: int,
    workers: int,
    r: dict[str, dict[str, Any]],
    load: list[str],
    model: str,
) -> list[str]:
    n = args.rows
    mb = 1 << 20
    lines = [
        f"- data: {n:,} generated chat rows of 1-5 turns ({size / 1e6:.0f} MB JSONL); tokenizer and chat "
        f"template: {model}; max_seq_length {args.max_len}; {workers} cores available to the worker; "
        f"load average before/after each measurement: {' -> '.join(load)} (a machine shared with other jobs)",
        "",
        "| measurement | seconds | rows/s | peak memory above start | vs anchor |",
        "|---|---|---|---|---|",
    ]
    anchor_s = r.get("anchor", {}).get("seconds")

    def row(name: str, seconds: float, rows: int, mem: str) -> None:
        ratio = f"{seconds / anchor_s:.2f}x" if anchor_s else "-"
        lines.append(f"| {name} | {seconds:,.1f} | {rows / seconds:,.0f} | {mem} | {ratio} |")

    if "floor" in r:
        f = r["floor"]
        row(
            "floor: render once + one batched fast-tokenizer call, 1 process",
            f["seconds"],
            n,
            f"{f['peak_rss_growth'] / mb:,.0f} MiB",
        )
    if anchor_s:
        a = r["anchor"]
        row(
            f"anchor: datasets.Dataset.map, num_proc={workers}",
            anchor_s,
            n,
            f"{a['peak_rss_growth'] / mb:,.0f} MiB (+ each map process up to {a['children_peak_rss'] / mb:,.0f} MiB)",
        )
    if "before" in r:
        b = r["before"]
        per_row = b["rss_growth"] / b["rows"]
        est = b["seconds"] / b["rows"] * n
        lines.append(
            f"| before: rows as dicts + encode_causal, {b['rows']:,} rows measured | {est:,.0f} (extrapolated) | "
            f"{b['rows'] / b['seconds']:,.0f} | {per_row * n / mb:,.0f} MiB extrapolated "
            f"({b['rss_growth'] / max(b['tokens'], 1):.0f} bytes a token) | "
            f"{est / anchor_s:.2f}x |"
            if anchor_s
            else "| - |"
        )
    for name in ("cold", "warm"):
        if name in r:
            j = r[name]
            row(
                f"after, {'first' if name == 'cold' else 'second'} job: preparation ({j['prepared']})",
                j["prepare_s"],
                n,
                f"worker {j['data_peak_rss_growth'] / mb:,.0f} MiB up to 'Data ready' "
                f"({j['peak_rss_growth'] / mb:,.0f} MiB with the model and the first step)"
                + (f"; each preparing process up to {j['children_peak_rss'] / mb:,.0f} MiB" if name == "cold" else ""),
            )
    lines.append("")
    for name in ("cold", "warm"):
        if name in r:
            j = r[name]
            lines.append(
                f"- {name}: `run()` start -> first training step {j['first_step_s']:.1f} s on the tiny model "
                f"({j['train_examples']:,} training examples, {j['train_tokens']:,} tokens; "
                f"{j['progress_events']} progress events)"
            )
    return lines


if __name__ == "__main__":
    main()
