"""Conversations through the model's chat template: OpenAI messages as templates expect them, a check
that the template renders tools, and which tokens each assistant turn produced (the trained-on ones).

Used by the supervised encoder of `messages` rows (data.py), by preference pairs (methods/dpo.py) and by
sample prompts (samples.py).
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.contract import formats
from tuneforge.contract.spec import JobSpec
from tuneforge.contract.status import ErrorCode
from tuneforge.worker.training.encoded import IGNORE
from tuneforge.worker.training.errors import TrainingError


def require_template(tokenizer: Any, consequence: str) -> None:
    """Refuse (invalid_spec) a tokenizer without a chat template; `consequence` says what cannot be done."""
    if not getattr(tokenizer, "chat_template", None):
        raise TrainingError(
            ErrorCode.INVALID_SPEC, f"The model's tokenizer has no chat template, so {consequence}.", "model"
        )


def template_messages(chat: formats.Chat) -> list[dict[str, Any]]:
    """OpenAI messages as Hugging Face chat templates expect them: tool-call arguments as objects."""
    out = []
    for m in chat.messages:
        if "tool_calls" in m:
            calls = []
            for c in m["tool_calls"]:
                args: Any = c["function"]["arguments"]
                try:
                    parsed = json.loads(args)
                    args = parsed if isinstance(parsed, dict) else args
                except json.JSONDecodeError:
                    pass
                calls.append({**c, "function": {**c["function"], "arguments": args}})
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out


def render(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, **kw: Any) -> Any:
    if tools:
        kw["tools"] = tools
    return tokenizer.apply_chat_template(messages, **kw)


def token_ids(out: Any) -> list[int]:
    """The token ids of `apply_chat_template(..., tokenize=True)`, a list or a BatchEncoding."""
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


def check_template_tools(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> None:
    """Refuse (invalid_spec) a template that would silently drop the tools or the assistant's tool calls."""
    probe = [{"role": "user", "content": "hi"}]
    if tools and render(tokenizer, probe, tools, tokenize=False) == render(tokenizer, probe, None, tokenize=False):
        raise TrainingError(
            ErrorCode.INVALID_SPEC,
            "The model's chat template does not render `tools` (tokenizer.apply_chat_template(..., tools=...) "
            "ignores them), so function-calling data cannot be trained on this model. Use a model whose chat "
            "template supports tools.",
            "model",
        )
    for i, m in enumerate(messages):
        if "tool_calls" in m:
            bare = {k: v for k, v in m.items() if k != "tool_calls"}
            with_calls = render(tokenizer, messages[: i + 1], tools, tokenize=False)
            if with_calls == render(tokenizer, [*messages[:i], bare], tools, tokenize=False):
                raise TrainingError(
                    ErrorCode.INVALID_SPEC,
                    "The model's chat template does not render assistant `tool_calls`, so function-calling data "
                    "cannot be trained on this model. Use a model whose chat template supports tools.",
                    "model",
                )
            return


def chat_ids(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    trainable: list[bool] | None = None,
) -> tuple[list[int], list[bool]]:
    """Token ids of a conversation, and for each token whether a trainable assistant turn produced it
    (every assistant turn, unless `trainable` says otherwise: OpenAI's `weight: 0`).

    Works with any chat template that renders conversations prefix-stably: an assistant turn's tokens
    are those between the prefix rendered with a generation prompt and the conversation rendered up
    to and including that turn. No `{% generation %}` markers are needed in the template."""
    ids = token_ids(render(tokenizer, messages, tools, tokenize=True))
    mask = [False] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or (trainable is not None and not trainable[i]):
            continue
        start = len(token_ids(render(tokenizer, messages[:i], tools, add_generation_prompt=True, tokenize=True)))
        full = token_ids(render(tokenizer, messages[: i + 1], tools, tokenize=True))
        if ids[: len(full)] != full:
            raise TrainingError(
                ErrorCode.INVALID_SPEC,
                "The model's chat template renders earlier turns differently as the conversation grows, "
                "so assistant turns cannot be located; set training.train_on_inputs=true to train on all tokens.",
                "model",
            )
        for k in range(start, len(full)):
            mask[k] = True
    return ids, mask


def parse_chat_row(
    row: dict[str, Any], tokenizer: Any, spec: JobSpec, checked: set[str]
) -> tuple[formats.Chat, list[dict[str, Any]]]:
    """A `messages` row as (chat, the messages its template renders), after the template checks the
    row needs. `checked` remembers across rows which template checks already ran."""
    d = spec.data
    require_template(tokenizer, "`messages` data cannot be used")
    try:
        chat = formats.from_openai(row[d.messages_field], row.get("tools"), row.get("functions"), d.messages_field)
    except formats.RowError as exc:
        raise TrainingError(ErrorCode.INVALID_FILE, f"A chat row: {exc}", "training_file") from exc
    messages = template_messages(chat)
    calls = any("tool_calls" in m for m in messages)
    if (chat.tools and "tools" not in checked) or (calls and "tool_calls" not in checked):
        check_template_tools(tokenizer, messages, chat.tools)  # a property of the template: once per run
        checked.update(["tools"] if chat.tools else [])
        checked.update(["tool_calls"] if calls else [])
    return chat, messages


def encode_chat(row: dict[str, Any], tokenizer: Any, spec: JobSpec, checked: set[str]) -> tuple[list[int], list[int]]:
    """A `messages` row's token ids and labels (IGNORE where no trainable assistant turn produced the token,
    unless `training.train_on_inputs`). `checked` remembers across rows which template checks already ran."""
    chat, messages = parse_chat_row(row, tokenizer, spec, checked)
    if spec.training.train_on_inputs:
        ids = token_ids(render(tokenizer, messages, chat.tools, tokenize=True))
        return ids, list(ids)
    ids, is_target = chat_ids(tokenizer, messages, chat.tools, chat.trainable)
    return ids, [i if m else IGNORE for i, m in zip(ids, is_target, strict=True)]
