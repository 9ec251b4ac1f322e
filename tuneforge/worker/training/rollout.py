"""Completions for reinforcement fine-tuning: the one seam through which the engine generates, so a
faster generator (vLLM) can replace transformers' `generate` without touching the method.

`hf_generate` batches the prompts (left-padded), samples `n` completions of each with the KV cache, in
eval mode (no dropout: the sampled distribution is the one the loss's ratio is taken against), and
returns each completion's token ids up to and including its end-of-sequence token. Sampling draws from
torch's global generator, which checkpoints save: a resumed run samples the same completions.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Generator(Protocol):
    def __call__(
        self,
        model: Any,
        prompts: list[list[int]],
        n: int,
        temperature: float | None,
        max_new_tokens: int,
        eos_id: int,
        pad_id: int,
        device: torch.device,
    ) -> list[list[int]]:
        """`n` completions per prompt, prompt-major (prompt 0's n, then prompt 1's); `temperature`
        None is greedy. Leaves the model in the mode it found it in."""
        ...


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def hf_generate(
    model: Any,
    prompts: list[list[int]],
    n: int,
    temperature: float | None,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    device: torch.device,
) -> list[list[int]]:
    was_training = bool(model.training)
    model.eval()
    try:
        ids, mask = left_pad(prompts, pad_id, device)
        sampling: dict[str, Any] = (
            # top_k=0 and top_p=1.0: the policy's own distribution at `temperature`, not the model's
            # generation_config's truncation, so the loss's log-probabilities are those sampled from.
            {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
            if temperature is not None
            else {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
        )
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            num_beams=1,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            use_cache=True,  # training sets config.use_cache=False; generation must not inherit it
            **sampling,
        )
    finally:
        model.train(was_training)
    completions: list[list[int]] = []
    for row in out[:, ids.shape[1] :].tolist():
        end = row.index(eos_id) + 1 if eos_id in row else len(row)
        completions.append(row[:end])
    return completions


# The generator the method uses; replace it (one assignment) to generate another way.
GENERATE: Generator = hf_generate
