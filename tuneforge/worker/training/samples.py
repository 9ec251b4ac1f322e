"""Sample generations: a few prompts completed greedily with the adapter before training (step 0), at each
evaluation and at the end, so a user can read what training changed.

Generation goes through the engine's one seam, `rollout.GENERATE`: batched over the prompts with the KV
cache, left-padded, in eval mode, without a graph. Greedy decoding draws no random numbers, and the RNG
state is forked around it anyway, so a run that samples trains bit for bit like one that does not, and a
resumed run continues exactly. What samples may cost is bounded with the evaluations' by
`training.eval_budget` (phases.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.contract import formats
from tuneforge.contract.spec import JobSpec
from tuneforge.contract.spec.data import data_fields
from tuneforge.worker.training import rollout
from tuneforge.worker.training.chat_template import template_messages

# Characters of a text row used as its prompt when the row has no prompt of its own: its first half, at most this.
TEXT_PROMPT_CHARS = 200


@dataclass(frozen=True)
class SamplePrompt:
    text: str  # what the user reads as the prompt (the rendered chat template for chat rows)
    ids: list[int]


def sample_prompts(spec: JobSpec, tokenizer: Any, validation_rows: list[dict[str, Any]]) -> list[SamplePrompt]:
    """The spec's prompts, then up to `from_validation` taken from `validation_rows` (supervised rows:
    chat, prompt/completion or text; a method whose rows are not passes none). causal_lm only."""
    s = spec.samples
    if spec.task != "causal_lm":
        return []
    out = [_plain(p, tokenizer) for p in s.prompts]
    for row in validation_rows:
        if len(out) >= len(s.prompts) + s.from_validation:
            break
        prompt = _from_row(row, spec, tokenizer)
        if prompt is not None and prompt.ids:
            out.append(prompt)
    return out


def _plain(text: str, tokenizer: Any) -> SamplePrompt:
    return SamplePrompt(text, list(tokenizer(text)["input_ids"]))


def _from_row(row: dict[str, Any], spec: JobSpec, tokenizer: Any) -> SamplePrompt | None:
    d = spec.data
    kind = formats.detect(row, data_fields(d))
    if kind == "messages":
        if not getattr(tokenizer, "chat_template", None):
            return None
        try:
            chat = formats.from_openai(row[d.messages_field], row.get("tools"), row.get("functions"), d.messages_field)
        except formats.RowError:
            return None
        messages = template_messages(chat)
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
        kw: dict[str, Any] = {"tools": chat.tools} if chat.tools else {}
        text = tokenizer.apply_chat_template(messages[:last], add_generation_prompt=True, tokenize=False, **kw)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return SamplePrompt(str(text), list(ids))
    if kind == "prompt_completion":
        return _plain(str(row[d.prompt_field]), tokenizer)
    if kind == "text":
        text = str(row[d.text_field])
        return _plain(text[: min(TEXT_PROMPT_CHARS, max(1, len(text) // 2))], tokenizer)
    return None


def generate_samples(
    model: Any,
    prompts: list[SamplePrompt],
    tokenizer: Any,
    max_new_tokens: int,
    max_length: int,
    device: torch.device,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Greedy completions of all the prompts, through the engine's one generation seam
    (`rollout.GENERATE`: the KV cache, left-padded batches, eval mode, no graph), `batch_size` prompts
    of similar length at a time, each cut from the left to fit `max_length`. The RNG is forked around
    it; the model is left in the mode it was found in."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = [p.ids[-max(1, max_length - max_new_tokens) :] for p in prompts]
    # Similar lengths together: less padding in each batch. On a 4-bit model every forward pass
    # dequantizes every weight, so a batch of B prompts costs about what one prompt alone does.
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    new: dict[int, list[int]] = {}
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for start in range(0, len(order), max(1, batch_size)):
            group = order[start : start + max(1, batch_size)]
            out = rollout.GENERATE(model, [ids[i] for i in group], 1, None, max_new_tokens, eos, pad, device)
            new.update(zip(group, out, strict=True))
    return [
        {"prompt": p.text, "output": tokenizer.decode(new[i], skip_special_tokens=True), "tokens": len(new[i])}
        for i, p in enumerate(prompts)
    ]
