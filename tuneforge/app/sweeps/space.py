"""A sweep's search space: dotted spec paths to Optuna distributions, and each trial's job body.

Pure functions (no database): parsing the `search_space` map, the grid's combinations, and writing a
trial's parameters into a copy of the sweep's job body. Every failure is a `SpecError` naming
`search_space.<path>`, which the service turns into a 400.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from tuneforge.contract.spec import SpecError

# The spec blocks a search may reach into (tuneforge/contract/spec SpecBlocks).
BLOCKS = ("quantization", "lora", "training", "optimizer", "scheduler", "data", "preference", "reinforcement")
KINDS = ("values", "uniform", "log_uniform", "int")
MAX_VALUES = 1000
# Corner combinations checked at POST for random/TPE spaces; above it, each dimension alone.
MAX_CORNERS = 256


def _pair(where: str, kind: str, raw: Any, *, integer: bool) -> tuple[float, float]:
    ok = isinstance(raw, list) and len(raw) == 2
    ok = ok and all(isinstance(v, int if integer else int | float) and not isinstance(v, bool) for v in raw)
    if not ok:
        what = "integers" if integer else "numbers"
        raise SpecError(where, f"`{kind}` takes [lo, hi], two {what}")
    lo, hi = raw
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise SpecError(where, f"`{kind}` bounds must be finite")
    if lo >= hi:
        raise SpecError(where, f"`{kind}` needs lo < hi, got [{lo}, {hi}]")
    return lo, hi


def parse_dimension(path: str, raw: Any) -> BaseDistribution:
    """One `search_space` entry -> an Optuna distribution."""
    where = f"search_space.{path}"
    parts = path.split(".")
    if parts[0] not in BLOCKS or len(parts) < 2 or not all(parts):
        raise SpecError(where, f"unknown spec path {path!r}: paths start with one of {', '.join(BLOCKS)}")
    if not isinstance(raw, dict):
        raise SpecError(where, f"give one of {', '.join(KINDS)}")
    kinds = [k for k in raw if k in KINDS]
    extra = [k for k in raw if k not in (*KINDS, "step")]
    if len(kinds) != 1 or extra:
        raise SpecError(where, f"give exactly one of {', '.join(KINDS)} (and `step` with `int`)")
    kind = kinds[0]
    if "step" in raw and kind != "int":
        raise SpecError(where, "`step` applies to `int` only")
    if kind == "values":
        values = raw["values"]
        if not isinstance(values, list) or not values:
            raise SpecError(where, "`values` must be a non-empty list")
        if len(values) > MAX_VALUES:
            raise SpecError(where, f"`values` holds at most {MAX_VALUES} entries")
        if not all(v is None or isinstance(v, str | int | float | bool) for v in values):
            raise SpecError(where, "`values` holds strings, numbers, booleans or null")
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise SpecError(where, "`values` must be finite numbers (1e999 is infinite, NaN is not a number)")
        if len({repr(v) for v in values}) != len(values):
            raise SpecError(where, "`values` has duplicates")
        choices: list[CategoricalChoiceType] = list(values)
        return CategoricalDistribution(choices)
    if kind == "int":
        lo, hi = _pair(where, kind, raw["int"], integer=True)
        step = raw.get("step", 1)
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise SpecError(where, "`step` must be an integer >= 1")
        if (hi - lo) % step:
            raise SpecError(where, f"`int` range [{lo}, {hi}] is not a multiple of step {step}")
        return IntDistribution(int(lo), int(hi), step=step)
    lo, hi = _pair(where, kind, raw[kind], integer=False)
    if kind == "log_uniform" and lo <= 0:
        raise SpecError(where, f"`log_uniform` needs lo > 0, got {lo}")
    return FloatDistribution(float(lo), float(hi), log=kind == "log_uniform")


def parse_space(raw: dict[str, Any]) -> dict[str, BaseDistribution]:
    if not raw:
        raise SpecError("search_space", "name at least one spec path to search")
    paths = sorted(raw)
    for a, b in itertools.pairwise(paths):
        if b.startswith(a + "."):
            raise SpecError(f"search_space.{b}", f"overlaps {a!r}")
    return {path: parse_dimension(path, dim) for path, dim in raw.items()}


def _choices(dist: BaseDistribution) -> list[Any] | None:
    """A dimension's values, when it has finitely many."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        return list(range(dist.low, dist.high + 1, dist.step))
    return None


def grid_size(space: dict[str, BaseDistribution]) -> int:
    """Counted without listing the values: an `int` range may be huge, and is then refused."""
    size = 1
    for path, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            size *= len(dist.choices)
        elif isinstance(dist, IntDistribution):
            size *= (dist.high - dist.low) // dist.step + 1
        else:
            raise SpecError(f"search_space.{path}", "a grid needs `values` or `int` dimensions, not a continuous range")
    return size


def grid(space: dict[str, BaseDistribution]) -> Iterator[dict[str, Any]]:
    """Every combination, in a fixed order: the first path varies slowest."""
    lists = [_choices(d) or [] for d in space.values()]
    for combo in itertools.product(*lists):
        yield dict(zip(space, combo, strict=True))


def _corners(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, FloatDistribution | IntDistribution):
        return [dist.low, dist.high]
    return list(_choices(dist) or [])


def extremes(space: dict[str, BaseDistribution]) -> Iterator[dict[str, Any]]:
    """Parameter sets that between them reach every value a random or TPE search can propose at its
    bounds: all corner combinations when few, else each dimension's values with the others at their
    first value."""
    lists = [_corners(d) for d in space.values()]
    if math.prod(len(v) for v in lists) <= MAX_CORNERS:
        for combo in itertools.product(*lists):
            yield dict(zip(space, combo, strict=True))
        return
    base = {path: values[0] for path, values in zip(space, lists, strict=True)}
    for path, values in zip(space, lists, strict=True):
        for v in values:
            yield {**base, path: v}


def apply(body: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of the sweep's job body with each dotted path set to its trial value."""
    out = copy.deepcopy(body)
    for path, value in params.items():
        node = out
        *parents, leaf = path.split(".")
        for i, key in enumerate(parents):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                where = ".".join(parents[: i + 1])
                raise SpecError(f"search_space.{path}", f"{where!r} is not a block, so {path!r} does not exist")
            node = child
        node[leaf] = value
    return out
