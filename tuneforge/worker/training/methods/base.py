"""A training method as the engine sees it: how its rows become examples, how examples become a batch,
its loss and the metrics the loss gathers, its held-out evaluation, and the prompts it samples from.

`run()` and the modules it calls hold a `TrainingMethod` and never ask which one it is
(tests/test_method_branches.py fails on a branch on the method's name outside methods/). What they
do the same for every method: splits, the deterministic batch order, the optimizer step, gradient
accumulation, data parallelism, checkpoints and exact resume, early stopping on `eval_loss`, the
loss watchdog, pause and cancel. What they need of a method's examples: `input_ids`, whose length
is the example's token count (the loop's `tokens_seen`, `group_by_length`); the rest is the method's.
Random numbers a loss draws (sampled rollouts, say) must come from torch's and Python's global
generators: checkpoints save and restore those, so a resumed run draws the same ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

from tuneforge.contract.spec import JobSpec, MethodName
from tuneforge.worker.training.data import Splits
from tuneforge.worker.training.encoded import Encoded, Example
from tuneforge.worker.training.reporter import Reporter
from tuneforge.worker.training.samples import SamplePrompt, sample_prompts


class Loss(Protocol):
    """What the loop calls: the loss of one micro-batch, and any extra per-step metrics gathered
    since the last logging step (read once per logging step: one host sync)."""

    # The last micro-batch's (correct, counted) target tokens on the device, for token accuracy;
    # None for losses that do not predict tokens one by one (preference pairs).
    last_accuracy: tuple[torch.Tensor, torch.Tensor] | None

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def take_metrics(self) -> dict[str, float] | None: ...


@dataclass
class EncodedSplits:
    train: Encoded
    validation: Encoded
    test: Encoded
    # sequence_classification: the class names, in label-index order (from the training split).
    labels: list[str] | None = None
    # regression: the training split's (mean, std); targets are trained normalized.
    norm: tuple[float, float] | None = None


class TrainingMethod(ABC):
    """One training method, bound to the job's spec. `methods/__init__.py` picks it by `spec.method`."""

    name: ClassVar[MethodName]
    # Whether the loss measures the policy against a reference (reference.py): a warm start then keeps
    # the adapter it started from, frozen, as that reference.
    uses_reference: ClassVar[bool] = False

    def __init__(self, spec: JobSpec, reporter: Reporter | None = None) -> None:
        self.spec = spec
        # Where a method reports what only it sees (reinforcement: a grader that failed on a sample).
        self.reporter = reporter

    def prepares_once(self) -> bool:
        """Whether this method's examples are prepare.py's: one a row, the tokens and labels of
        `data.encode_causal`. Then setup.py tokenizes each file once into a cached, memory-mapped store
        and splits it by row position, and `encode` is not called."""
        return False

    @abstractmethod
    def encode(self, splits: Splits, tokenizer: Any) -> EncodedSplits:
        """The three splits' rows as examples (`Encoded` counts what was truncated or dropped)."""

    @abstractmethod
    def collate(self, examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
        """A micro-batch of examples as the tensors the loss and the evaluation read (on the host)."""

    @abstractmethod
    def make_loss(self, train: Encoded, tokenizer: Any, device: torch.device) -> Loss:
        """The training loss, made once per run (it may keep state between logging steps)."""

    @abstractmethod
    def evaluate(
        self,
        model: torch.nn.Module,
        data: Encoded,
        tokenizer: Any,
        device: torch.device,
        norm: tuple[float, float] | None,
    ) -> dict[str, Any]:
        """Held-out metrics, `eval_loss` among them (lower is better: early stopping and the plateau
        schedule watch it). `norm` is what `encode` returned. Draws no random numbers (or forks the RNG
        around them, as samples.py does), so a run that evaluates trains exactly as one that does not."""

    def sample_prompts(self, tokenizer: Any, validation_rows: list[dict[str, Any]]) -> list[SamplePrompt]:
        """Prompts to generate from before training, at each evaluation and at the end: by default the
        spec's own (`samples.prompts`) only."""
        return sample_prompts(self.spec, tokenizer, [])
