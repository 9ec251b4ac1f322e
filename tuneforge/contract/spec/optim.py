"""Optimizers and learning-rate schedules."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from tuneforge.contract.spec.base import SpecError, Strict, set_to_non_default


class SGDSpec(Strict):
    name: Literal["sgd"]
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False

    @model_validator(mode="after")
    def _check(self) -> SGDSpec:
        if self.nesterov and self.momentum == 0:
            raise SpecError("nesterov", "nesterov needs momentum > 0")
        return self


class AdagradSpec(Strict):
    name: Literal["adagrad"]
    eps: float = Field(1e-10, gt=0)
    lr_decay: float = Field(0.0, ge=0)


class RMSpropSpec(Strict):
    name: Literal["rmsprop"]
    alpha: float = Field(0.99, gt=0, lt=1)
    momentum: float = Field(0.0, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    centered: bool = False


class _AdamFamily(Strict):
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)


class AdamSpec(_AdamFamily):
    name: Literal["adam"]


class AdamWSpec(_AdamFamily):
    name: Literal["adamw"] = "adamw"


class AdamW8bitSpec(_AdamFamily):
    name: Literal["adamw_8bit"]


class PagedAdamW8bitSpec(_AdamFamily):
    name: Literal["paged_adamw_8bit"]


class PagedAdamW32bitSpec(_AdamFamily):
    name: Literal["paged_adamw_32bit"]


OptimizerSpec = Annotated[
    SGDSpec
    | AdagradSpec
    | RMSpropSpec
    | AdamSpec
    | AdamWSpec
    | AdamW8bitSpec
    | PagedAdamW8bitSpec
    | PagedAdamW32bitSpec,
    Field(discriminator="name"),
]
# The tags of the union above: pydantic puts them in error locations (optimizer.sgd.momentum).
OPTIMIZER_NAMES: frozenset[str] = frozenset(
    get_args(m.model_fields["name"].annotation)[0] for m in get_args(get_args(OptimizerSpec)[0])
)

SchedulerName = Literal[
    "constant",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
    "reduce_on_plateau",
]
SCHEDULERS: tuple[str, ...] = get_args(SchedulerName)


class SchedulerSpec(Strict):
    name: SchedulerName = Field("cosine", description="Learning-rate schedule after warmup.")
    warmup_steps: int | None = Field(None, ge=0, description="Linear warmup length in steps.")
    warmup_ratio: float | None = Field(None, ge=0.0, lt=1.0, description="Warmup as a fraction of total steps.")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Floor of the decay, as a fraction of the peak.")
    num_cycles: int = Field(1, ge=1, le=1000, description="Hard restarts (cosine_with_restarts only).")
    power: float = Field(1.0, gt=0, description="Decay exponent (polynomial only).")
    factor: float = Field(0.5, gt=0, lt=1, description="LR multiplier on a plateau (reduce_on_plateau only).")
    patience: int = Field(1, ge=0, description="Evaluations without improvement (reduce_on_plateau only).")

    @model_validator(mode="after")
    def _check(self) -> SchedulerSpec:
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise SpecError("warmup_ratio", "set either warmup_steps or warmup_ratio, not both")
        only = {
            "num_cycles": "cosine_with_restarts",
            "power": "polynomial",
            "factor": "reduce_on_plateau",
            "patience": "reduce_on_plateau",
        }
        for field, owner in only.items():
            if self.name != owner and set_to_non_default(self, field):
                raise SpecError(field, f"`{field}` applies to the {owner} schedule only")
        return self
