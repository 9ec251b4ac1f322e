"""Token-by-token generation with a KV cache: temperature, top_p, seed, stop sequences, max_tokens.

Written here rather than through `generate()` so that each piece of text is handed out as soon as
it is final (a stop sequence may still cut it), and a request can be abandoned between tokens.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch


class PromptError(ValueError):
    """A prompt the model cannot take; `param` names the request field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


@dataclass
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None


@dataclass
class Outcome:
    finish_reason: str = "length"
    completion_tokens: int = 0


def context_length(model: Any) -> int:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def encode_chat(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise PromptError(
            "model",
            "This model has no chat template, so it cannot take chat messages; use /v1/completions "
            "with a plain prompt, or a model whose tokenizer defines a chat template.",
        )
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    return list(tokenizer(prompt)["input_ids"])


def check_length(ids: list[int], ctx: int, param: str) -> None:
    if not ids:
        raise PromptError(param, f"{param} is empty")
    if len(ids) >= ctx:
        raise PromptError(
            param,
            f"The prompt is {len(ids)} tokens; this model's context is {ctx} tokens, which must also "
            "hold at least one generated token. Shorten the prompt.",
        )


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


def _sample(logits: torch.Tensor, s: Sampling, generator: torch.Generator) -> int:
    if s.temperature == 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / s.temperature, dim=-1)
    if s.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest set whose mass reaches top_p (the most likely token always stays).
        drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= s.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters might be the start of a stop sequence (or half a character)."""
    hold = 1 if text.endswith("\ufffd") else 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                hold = max(hold, n)
                break
    return hold


def _first_stop(text: str, stops: Sequence[str], sent: int) -> int:
    """Where the earliest stop sequence starts in `text`, or -1. Text before `sent` was already
    given out, so a stop can only end after it."""
    found = [i for stop in stops if (i := text.find(stop, max(sent - len(stop) + 1, 0))) >= 0]
    return min(found, default=-1)


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[int],
    s: Sampling,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    outcome: Outcome | None = None,
) -> Iterator[str]:
    """Yield text pieces as they become final; `outcome` receives the finish reason and counts.

    Stops at an end-of-sequence token or a stop sequence (finish_reason "stop"), at max_tokens or
    the context's end ("length"), or when `should_stop()` is true (checked between tokens)."""
    out = outcome if outcome is not None else Outcome()
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu")
    generator.manual_seed(s.seed if s.seed is not None else secrets.randbits(63))
    eos = _eos_ids(model, tokenizer)
    budget = min(s.max_tokens, context_length(model) - len(prompt_ids))
    generated: list[int] = []
    sent = 0
    past: Any = None
    step_input = torch.tensor([prompt_ids], device=device)
    for _ in range(budget):
        if should_stop():
            out.finish_reason = "cancelled"
            return
        result = model(input_ids=step_input, past_key_values=past, use_cache=True)
        past = result.past_key_values
        token = _sample(result.logits[0, -1].to("cpu"), s, generator)
        if token in eos:
            out.completion_tokens = len(generated) + 1
            out.finish_reason = "stop"
            break
        generated.append(token)
        out.completion_tokens = len(generated)
        text = tokenizer.decode(generated, skip_special_tokens=True)
        cut = _first_stop(text, s.stop, sent)
        if cut >= 0:
            if cut > sent:
                yield text[sent:cut]
            out.finish_reason = "stop"
            return
        final = len(text) - _held_back(text, s.stop)
        if final > sent:
            yield text[sent:final]
            sent = final
        step_input = torch.tensor([[token]], device=device)
    else:
        out.finish_reason = "length"
    text = tokenizer.decode(generated, skip_special_tokens=True)
    if len(text) > sent:
        yield text[sent:]  # what was held back for a stop sequence that never completed
