"""The job spec: what a user may ask for, validated strictly, with documented defaults.

Depends on pydantic alone. The API's request shape (`tuneforge/app/jobs/request.py`) resolves into a `JobSpec`,
which is stored on the job; the engine (`tuneforge/worker/training/`) trains from it.
"""

from tuneforge.contract.spec.augmentation import AugmentationOp, AugmentationSpec
from tuneforge.contract.spec.base import DEFAULT_LEARNING_RATE, SpecError, Strict, set_to_non_default
from tuneforge.contract.spec.blocks import (
    EarlyStoppingSpec,
    LoraSpec,
    LossSpec,
    LossWatchdogSpec,
    QuantizationSpec,
    TrainingSpec,
)
from tuneforge.contract.spec.data import DataSpec
from tuneforge.contract.spec.integrations import Integration, MlflowSettings, WandbSettings, tracking_uri_allowed
from tuneforge.contract.spec.job import JobSpec, SpecBlocks, TaskName
from tuneforge.contract.spec.method import METHOD_RULES, MethodName, MethodRules, RowShape
from tuneforge.contract.spec.optim import (
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
from tuneforge.contract.spec.preference import PreferenceLossName, PreferenceSpec
from tuneforge.contract.spec.reinforcement import LossAggregation, ReinforcementSpec
from tuneforge.contract.spec.samples import SamplesSpec

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "METHOD_RULES",
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
    "Integration",
    "JobSpec",
    "LoraSpec",
    "LossAggregation",
    "LossSpec",
    "LossWatchdogSpec",
    "MethodName",
    "MethodRules",
    "MlflowSettings",
    "OptimizerSpec",
    "PagedAdamW8bitSpec",
    "PagedAdamW32bitSpec",
    "PreferenceLossName",
    "PreferenceSpec",
    "QuantizationSpec",
    "RMSpropSpec",
    "ReinforcementSpec",
    "RowShape",
    "SGDSpec",
    "SamplesSpec",
    "SchedulerName",
    "SchedulerSpec",
    "SpecBlocks",
    "SpecError",
    "Strict",
    "TaskName",
    "TrainingSpec",
    "WandbSettings",
    "set_to_non_default",
    "tracking_uri_allowed",
]
