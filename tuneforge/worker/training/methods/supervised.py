"""Supervised fine-tuning (`method.type=supervised`, the default): each row is an input and its target,
per task: the next tokens (causal_lm: text, prompt/completion or chat rows), a class
(sequence_classification) or a value (regression). The pieces live in the modules named for them:
data.py encodes, losses.py and lm_loss.py hold the losses, evaluation.py the held-out metrics."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from tuneforge.contract.spec import MethodName
from tuneforge.worker.training.data import (
    Splits,
    collate,
    encode_causal,
    encode_labeled,
    label_names,
    regression_norm,
)
from tuneforge.worker.training.encoded import Encoded, Example
from tuneforge.worker.training.evaluation import evaluate
from tuneforge.worker.training.losses import TaskLoss
from tuneforge.worker.training.methods.base import EncodedSplits, TrainingMethod
from tuneforge.worker.training.samples import SamplePrompt, sample_prompts


class SupervisedTraining(TrainingMethod):
    name: ClassVar[MethodName] = "supervised"

    def prepares_once(self) -> bool:
        return self.spec.task == "causal_lm"

    def encode(self, splits: Splits, tokenizer: Any) -> EncodedSplits:
        spec = self.spec
        parts = (splits.train, splits.validation, splits.test)
        if spec.task == "causal_lm":
            train, val, test = (encode_causal(s, tokenizer, spec) for s in parts)
            return EncodedSplits(train, val, test)
        labels = label_names(splits.train, spec) if spec.task == "sequence_classification" else None
        norm = regression_norm(splits.train, spec) if spec.task == "regression" else None
        train, val, test = (encode_labeled(s, tokenizer, spec, labels, norm) for s in parts)
        return EncodedSplits(train, val, test, labels, norm)

    def collate(self, examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
        return collate(examples, pad_id)

    def make_loss(self, train: Encoded, tokenizer: Any, device: torch.device) -> TaskLoss:
        return TaskLoss(self.spec, train, device)

    def evaluate(
        self,
        model: torch.nn.Module,
        data: Encoded,
        tokenizer: Any,
        device: torch.device,
        norm: tuple[float, float] | None,
    ) -> dict[str, Any]:
        return evaluate(model, data, self.spec, int(tokenizer.pad_token_id), device, norm)

    def sample_prompts(self, tokenizer: Any, validation_rows: list[dict[str, Any]]) -> list[SamplePrompt]:
        """The spec's prompts, then some of the validation rows' own (their conversation up to the last
        assistant turn, their prompt, or the start of their text)."""
        return sample_prompts(self.spec, tokenizer, validation_rows)
