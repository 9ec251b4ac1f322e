"""What the trackers are sent: a step's series as flat numbers, the spec as flat parameters, the final metrics."""

from __future__ import annotations

import json
import math
from typing import Any

# The step series keep the names of `GET /v1/fine_tuning/jobs/{id}/metrics` (loss, eval_loss, learning_rate,
# grad_norm, tokens_per_second, epoch, and each point's `extra`), so a chart in W&B or MLflow reads like the API.


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def series(point: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """A metric point as (step, {name: value}), numbers only."""
    values: dict[str, float] = {}
    for key, value in {**point, **(point.get("extra") or {})}.items():
        if key in ("step", "extra"):
            continue
        if (number := _number(value)) is not None:
            values[key] = number
    return int(point["step"]), values


def flatten(tree: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested dicts as dotted keys; lists as JSON text (a tracker's parameter is one value)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name, sep))
        elif isinstance(value, list):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def summary(final_metrics: dict[str, Any] | None) -> dict[str, float]:
    """The job's final metrics (train_loss, validation.eval_loss, test...., baseline....) as numbers."""
    flat = flatten(final_metrics or {}, sep="/")
    return {f"final/{k}": n for k, v in flat.items() if (n := _number(v)) is not None}
