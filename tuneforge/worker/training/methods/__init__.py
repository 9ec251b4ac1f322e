"""The training methods, by the name a spec gives (`JobSpec.method`, OpenAI's `method.type`).

`method_for` is the one place in the engine that reads the method's name; everything else calls the
`TrainingMethod` it returns. A new method is a module here and an entry in `METHODS`
(docs/architecture.md, "Where the next capabilities plug in").
"""

from __future__ import annotations

from tuneforge.contract.spec import JobSpec, MethodName
from tuneforge.worker.training.methods.base import EncodedSplits, Loss, TrainingMethod
from tuneforge.worker.training.methods.dpo import DpoTraining
from tuneforge.worker.training.methods.rft import ReinforcementTraining
from tuneforge.worker.training.methods.supervised import SupervisedTraining
from tuneforge.worker.training.reporter import Reporter

METHODS: dict[MethodName, type[TrainingMethod]] = {
    m.name: m for m in (SupervisedTraining, DpoTraining, ReinforcementTraining)
}


def method_for(spec: JobSpec, reporter: Reporter | None = None) -> TrainingMethod:
    return METHODS[spec.method](spec, reporter)


__all__ = ["METHODS", "EncodedSplits", "Loss", "TrainingMethod", "method_for"]
