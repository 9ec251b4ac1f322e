from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from torch import nn

from tests.helpers import make_spec
from tuneforge.contract.spec import SCHEDULERS, SchedulerName, SchedulerSpec
from tuneforge.worker.training.optim import build_optimizer, build_scheduler, lr_factor, param_groups

OPTIMIZERS = [
    {"name": "sgd", "momentum": 0.9, "nesterov": True},
    {"name": "adagrad"},
    {"name": "rmsprop", "alpha": 0.9, "momentum": 0.5},
    {"name": "adam", "betas": [0.8, 0.99]},
    {"name": "adamw"},
    {"name": "adamw_8bit"},
    {"name": "paged_adamw_8bit"},
    {"name": "paged_adamw_32bit"},
]

EXPECTED_CLASS = {
    "sgd": "SGD",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "adamw": "AdamW",
    "adamw_8bit": "AdamW8bit",
    "paged_adamw_8bit": "PagedAdamW8bit",
    "paged_adamw_32bit": "PagedAdamW32bit",
}


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.lin(x))


def test_weight_decay_skips_biases_and_norms() -> None:
    model = Toy()
    groups = param_groups(model, 0.1)
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    decayed = {id(p) for p in groups[0]["params"]}
    assert decayed == {id(model.lin.weight)}


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o["name"])
def test_every_optimizer_steps_and_lowers_the_loss(opt: dict[str, Any]) -> None:
    torch.manual_seed(0)
    spec = make_spec(optimizer=opt)
    model = Toy()
    x, y = torch.randn(64, 8), torch.randn(64, 8)
    optimizer = build_optimizer(spec.optimizer, param_groups(model, 0.01), lr=1e-2)
    assert type(optimizer).__name__ == EXPECTED_CLASS[opt["name"]]
    first = None
    for _ in range(30):
        loss = nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < first  # type: ignore[operator]  # set by the first of the 30 steps


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_schedule_warms_up_and_respects_the_floor(name: SchedulerName) -> None:
    spec = SchedulerSpec(name=name, warmup_steps=4, min_lr_ratio=0.1)
    total = 40
    factors = [lr_factor(spec, s, total) for s in range(total)]
    assert factors[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert factors[4] == pytest.approx(1.0)
    assert all(0.1 - 1e-9 <= f <= 1.0 + 1e-9 for f in factors)
    if name in ("linear", "cosine", "polynomial"):
        assert factors[-1] == pytest.approx(0.1, abs=0.03)
        decay = factors[4:]
        assert all(a >= b - 1e-12 for a, b in itertools.pairwise(decay))


def test_cosine_with_restarts_restarts() -> None:
    spec = SchedulerSpec(name="cosine_with_restarts", num_cycles=2)
    f = [lr_factor(spec, s, 20) for s in range(20)]
    assert f[0] == pytest.approx(1.0)
    assert f[9] < 0.1 and f[10] == pytest.approx(1.0)


def test_shapes_match_their_formulas() -> None:
    total = 100
    cos = SchedulerSpec(name="cosine")
    assert lr_factor(cos, 50, total) == pytest.approx(0.5)
    lin = SchedulerSpec(name="linear")
    assert lr_factor(lin, 25, total) == pytest.approx(0.75)
    poly = SchedulerSpec(name="polynomial", power=2.0)
    assert lr_factor(poly, 50, total) == pytest.approx(0.25)
    inv = SchedulerSpec(name="inverse_sqrt")
    assert lr_factor(inv, 3, total) == pytest.approx(1 / math.sqrt(4))


def test_scheduler_drives_the_optimizer_lr() -> None:
    model = Toy()
    spec = make_spec(scheduler={"name": "linear", "warmup_steps": 2})
    opt = build_optimizer(spec.optimizer, param_groups(model, 0.0), lr=1.0)
    sched = build_scheduler(spec.scheduler, opt, total_steps=10)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()  # type: ignore[call-arg]  # a LambdaLR: only ReduceLROnPlateau takes the metric
    assert seen[0] == pytest.approx(1 / 3) and seen[2] == pytest.approx(1.0) and seen[-1] < seen[3]


def test_reduce_on_plateau_lowers_lr_on_stall() -> None:
    from tuneforge.worker.training.optim import scheduler_step_on_eval

    model = Toy()
    spec = make_spec(scheduler={"name": "reduce_on_plateau", "factor": 0.5, "patience": 0})
    opt = build_optimizer(spec.optimizer, param_groups(model, 0.0), lr=1.0)
    sched = build_scheduler(spec.scheduler, opt, total_steps=10)
    for loss in (1.0, 1.0, 1.0):
        scheduler_step_on_eval(sched, loss)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)
