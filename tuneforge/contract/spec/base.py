"""What every spec block shares: strict models, and the error that names the field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

DEFAULT_LEARNING_RATE = 2e-4


class SpecError(ValueError):
    """A spec that cannot work. Raised inside a model validator, `param` is relative to that model
    (the error handler prefixes the model's location); raised by `resolve()`, it is absolute."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


class Strict(BaseModel):
    # allow_inf_nan=False: JSON's 1e999 parses to inf and NaN to nan, and no number in a spec means
    # either (an infinite max_grad_norm silently turns clipping off; an infinite lora.alpha trains to
    # nan_loss). Every float of every block, and of the bodies built on them, must be finite.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def set_to_non_default(model: BaseModel, name: str) -> bool:
    info = type(model).model_fields[name]
    return name in model.model_fields_set and getattr(model, name) != info.default
