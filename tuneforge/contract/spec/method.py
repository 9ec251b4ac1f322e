"""Training methods (OpenAI's `method.type`) and what each asks of the rest of the spec.

A table, not a branch per method wherever a spec is checked or its data admitted
(tests/test_method_branches.py): a new method is a name in `MethodName`, a row in `METHOD_RULES`, and
its options block if it has one (as `preference.py` is DPO's). The engine's side of a method is
`tuneforge/worker/training/methods/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel

from tuneforge.contract.spec.base import SpecError

MethodName = Literal["supervised", "dpo", "reinforcement"]


class RowShape(StrEnum):
    """What a method's training rows look like; upload records their columns and admission checks them."""

    # The task's own data shapes (contract/formats.py): text, prompt/completion, chat, alpaca, ShareGPT;
    # text and label for the task heads.
    TASK = "task"
    # OpenAI's preference rows: `input.messages`, `preferred_output`, `non_preferred_output`.
    PREFERENCE = "preference"
    # Prompts to complete and grade (reinforcement): `messages` up to the turn the model writes, plus any
    # fields the grader reads as `{{item.<field>}}`.
    PROMPT = "prompt"


@dataclass(frozen=True)
class MethodRules:
    rows: RowShape
    # The tasks it can train (None: every task).
    tasks: tuple[str, ...] | None = None
    # Whether `training.packing` may be set.
    packing: bool = True
    # The spec block that only this method reads, if any: refused (when set) for every other method.
    options: str | None = None
    # Fields of the spec (dotted) that must be set for this method, e.g. reinforcement's grader.
    required: tuple[str, ...] = ()
    # Whether the loss watchdog's "exploding" ratio check means anything for this loss. A policy-gradient
    # surrogate is centred near 0 and of either sign, so a ratio to its first value does not; its
    # non-finite check is the loss's own.
    loss_ratio_watch: bool = True


METHOD_RULES: dict[MethodName, MethodRules] = {
    "supervised": MethodRules(RowShape.TASK),
    "dpo": MethodRules(RowShape.PREFERENCE, tasks=("causal_lm",), packing=False, options="preference"),
    "reinforcement": MethodRules(
        RowShape.PROMPT,
        tasks=("causal_lm",),
        packing=False,
        options="reinforcement",
        required=("reinforcement.grader",),
        loss_ratio_watch=False,
    ),
}


def check_method(method: MethodName, task: str, packing: bool) -> None:
    """Refuse a task or packing that the method cannot train with, naming the field."""
    rules = METHOD_RULES[method]
    if rules.tasks is not None and task not in rules.tasks:
        raise SpecError("task", f"method.type={method} applies to {' or '.join(rules.tasks)} only")
    if packing and not rules.packing:
        raise SpecError("training.packing", f"packing cannot be used with method.type={method}")


def check_required(method: MethodName, spec: BaseModel) -> None:
    """Refuse a spec that lacks what its method cannot do without, naming the field."""
    for path in METHOD_RULES[method].required:
        value: object = spec
        for part in path.split("."):
            value = getattr(value, part)
        if value is None:
            raise SpecError(path, f"method.type={method} needs {path}")


def check_option_blocks(method: MethodName, blocks: BaseModel) -> None:
    """Refuse another method's options block, given with other than its defaults."""
    for owner, rules in METHOD_RULES.items():
        name = rules.options
        if name is None or name == METHOD_RULES[method].options or name not in blocks.model_fields_set:
            continue
        if getattr(blocks, name) != type(blocks).model_fields[name].get_default(call_default_factory=True):
            raise SpecError(name, f"the {name} block applies to method.type={owner} only")
