"""The job spec: what a user may ask for, validated strictly, with documented defaults.

Depends on pydantic alone. The API's request shape (`app/jobs/request.py`) resolves into a `JobSpec`,
which is stored on the job; the engine (`worker/training/`) trains from it.
"""

from contract.spec.augmentation import AugmentationOp, AugmentationSpec
from contract.spec.base import DEFAULT_LEARNING_RATE, SpecError, Strict, set_to_non_default
from contract.spec.blocks import (
    EarlyStoppingSpec,
    LoraSpec,
    LossSpec,
    LossWatchdogSpec,
    QuantizationSpec,
    TrainingSpec,
)
from contract.spec.data import DataSpec
from contract.spec.job import JobSpec, SpecBlocks, TaskName
from contract.spec.optim import (
    OPTIMIZER_NAMES,
    SCHEDULERS,
    AdagradSpec,
    AdamSpec,
    AdamW8bitSpec,
    AdamWSpec,
    OptimizerSpec,
    PagedAdamW8bitSpec,
    PagedAdamW32bitSpec,
    RMSpropSpec,
    SchedulerName,
    SchedulerSpec,
    SGDSpec,
)
from contract.spec.preference import MethodName, PreferenceLossName, PreferenceSpec
from contract.spec.samples import SamplesSpec

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "OPTIMIZER_NAMES",
    "SCHEDULERS",
    "AdagradSpec",
    "AdamSpec",
    "AdamW8bitSpec",
    "AdamWSpec",
    "AugmentationOp",
    "AugmentationSpec",
    "DataSpec",
    "EarlyStoppingSpec",
    "JobSpec",
    "LoraSpec",
    "LossSpec",
    "LossWatchdogSpec",
    "MethodName",
    "OptimizerSpec",
    "PagedAdamW8bitSpec",
    "PagedAdamW32bitSpec",
    "PreferenceLossName",
    "PreferenceSpec",
    "QuantizationSpec",
    "RMSpropSpec",
    "SGDSpec",
    "SamplesSpec",
    "SchedulerName",
    "SchedulerSpec",
    "SpecBlocks",
    "SpecError",
    "Strict",
    "TaskName",
    "TrainingSpec",
    "set_to_non_default",
]
