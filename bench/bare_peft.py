"""The baseline: the usual QLoRA recipe with transformers + peft + bitsandbytes and nothing else.

No Tuneforge import on purpose. bench/overhead.py runs it as a subprocess beside a Tuneforge job
with the same model, data, hyperparameters and seed, and compares wall time and per-step throughput.
The wall time runs from after the imports (a worker has them loaded before a job arrives) to the
adapter saved, and is split into load (model and LoRA), data (tokenized), train and save.

    python -m bench.bare_peft MODEL_DIR DATA.jsonl --steps 60 --batch-size 8 --max-seq-length 256 [--save DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, get_cosine_schedule_with_warmup


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("data")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", type=Path, default=None, help="where to save the adapter (default: a temp dir)")
    args = p.parse_args()
    t_start = time.perf_counter()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    cuda = torch.cuda.is_available()
    compute = torch.bfloat16 if (not cuda or torch.cuda.is_bf16_supported()) else torch.float16
    bnb = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
    )
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        args.model_dir,
        quantization_config=bnb,
        dtype=compute if cuda else torch.float32,
        device_map={"": 0 if cuda else "cpu"},
    )
    model.config.use_cache = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(  # type: ignore[assignment]  # a PeftModel now, no longer the base
        model,
        LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    device = next(model.parameters()).device
    t_loaded = time.perf_counter()

    texts = [json.loads(line)["text"] for line in Path(args.data).read_text().splitlines() if line.strip()]
    encoded = [tok(t, truncation=True, max_length=args.max_seq_length)["input_ids"] for t in texts]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, 0, args.steps)
    t_data = time.perf_counter()

    model.train()
    order: list[int] = []
    step_ms: list[float] = []
    tokens_per_s: list[float] = []
    for _ in range(args.steps):
        if len(order) < args.batch_size:
            order += random.sample(range(len(encoded)), len(encoded))
        batch_ids, order = order[: args.batch_size], order[args.batch_size :]
        t0 = time.perf_counter()
        width = max(len(encoded[i]) for i in batch_ids)
        ids = torch.full((len(batch_ids), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(batch_ids):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, : len(encoded[i])] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # what any loop that prints its loss does
        elapsed = time.perf_counter() - t0
        step_ms.append(elapsed * 1000)
        tokens_per_s.append(sum(len(encoded[i]) for i in batch_ids) / elapsed)
    t_trained = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(str(args.save or tmp), safe_serialization=True)
    t_end = time.perf_counter()
    warm = min(5, max(0, args.steps - 1))
    print(
        json.dumps(
            {
                "tokens_per_s": statistics.median(tokens_per_s[warm:]),
                "step_ms": statistics.median(step_ms[warm:]),
                "steps": args.steps,
                "wall_s": t_end - t_start,
                "phases_s": {
                    "load": t_loaded - t_start,
                    "data": t_data - t_loaded,
                    "train": t_trained - t_data,
                    "save": t_end - t_trained,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
