"""Preference tuning (DPO, IPO): a method plug-in (`DpoTraining`) with its own batch shape, loss and
evaluation; the training loop, checkpoints and resume are the engine's, unchanged.

An example holds the chosen answer as `input_ids`/`labels` and the rejected one as
`rejected_ids`/`rejected_labels`, both rendered after the same prompt with the chat template;
labels are IGNORE on the prompt. `collate_pairs` stacks a batch of n pairs as 2n rows, chosen first.

Only the answers' log-probabilities count, so only the positions that predict an answer token get
logits: the batch's `labels` cover its last columns only (from the earliest answer token on), and
the model is asked for that many positions (`logits_to_keep`). A full-vocabulary fp32 log-softmax
over every prompt token would cost batch x length x vocabulary x 4 bytes, twice (policy and
reference): 1 GB for 16 rows of 320 tokens on a 49k vocabulary, most of a small model's step.

The reference model is the base itself with the adapter switched off (peft's `disable_adapter()`),
so no second copy of the weights is held in memory; for a warm start (`from_checkpoint`), the adapter
it started from, kept frozen beside the trained one (reference.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from tuneforge.contract.spec import JobSpec, MethodName
from tuneforge.contract.status import ErrorCode
from tuneforge.worker.training.chat_template import require_template, token_ids
from tuneforge.worker.training.data import Splits, collate
from tuneforge.worker.training.encoded import IGNORE, Encoded, Example
from tuneforge.worker.training.errors import TrainingError
from tuneforge.worker.training.methods.base import EncodedSplits, TrainingMethod
from tuneforge.worker.training.reference import reference_policy


class DpoTraining(TrainingMethod):
    """`method.type=dpo`: rows are OpenAI's preference rows, a batch of n pairs is 2n rows, the loss is
    DPO's or IPO's (`spec.preference`) against the base model as reference."""

    name: ClassVar[MethodName] = "dpo"
    uses_reference: ClassVar[bool] = True

    def encode(self, splits: Splits, tokenizer: Any) -> EncodedSplits:
        train, val, test = (
            encode_preference(s, tokenizer, self.spec) for s in (splits.train, splits.validation, splits.test)
        )
        return EncodedSplits(train, val, test)

    def collate(self, examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
        return collate_pairs(examples, pad_id)

    def make_loss(self, train: Encoded, tokenizer: Any, device: torch.device) -> PreferenceLoss:
        return PreferenceLoss(self.spec)

    def evaluate(
        self,
        model: torch.nn.Module,
        data: Encoded,
        tokenizer: Any,
        device: torch.device,
        norm: tuple[float, float] | None,
    ) -> dict[str, Any]:
        return evaluate_preference(model, data, self.spec, int(tokenizer.pad_token_id), device)

    # Sample prompts: the spec's own only (the default); validation rows are pairs, not prompts.


def _render(
    tokenizer: Any, prompt: list[dict[str, Any]], answer: list[dict[str, Any]], max_len: int
) -> tuple[list[int], list[int]] | None:
    start = len(token_ids(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)))
    ids = token_ids(tokenizer.apply_chat_template([*prompt, *answer], tokenize=True))
    if start >= len(ids):
        return None
    labels = [IGNORE] * start + ids[start:]
    return ids[:max_len], labels[:max_len]


def encode_preference(rows: list[dict[str, Any]], tokenizer: Any, spec: JobSpec) -> Encoded:
    require_template(tokenizer, "preference rows (method.type=dpo) cannot be rendered")
    examples: list[Example] = []
    out = Encoded(examples=examples)
    max_len = spec.training.max_seq_length
    for row in rows:
        try:
            prompt = row["input"]["messages"]
            chosen = _render(tokenizer, prompt, row["preferred_output"], max_len)
            rejected = _render(tokenizer, prompt, row["non_preferred_output"], max_len)
        except (KeyError, TypeError) as exc:
            raise TrainingError(
                ErrorCode.INVALID_FILE,
                "A row is not a preference row (input.messages, preferred_output, non_preferred_output).",
                "training_file",
            ) from exc
        if chosen is None or rejected is None:
            out.dropped += 1
            continue
        if any(all(x == IGNORE for x in labels[1:]) for _, labels in (chosen, rejected)):
            out.dropped += 1  # an answer truncated away: nothing to compare
            continue
        out.truncated += int(len(chosen[0]) == max_len or len(rejected[0]) == max_len)
        out.real_tokens += len(chosen[0]) + len(rejected[0])
        examples.append(
            {"input_ids": chosen[0], "labels": chosen[1], "rejected_ids": rejected[0], "rejected_labels": rejected[1]}
        )
    return out


def collate_pairs(batch: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """n pairs -> 2n rows: the chosen answers, then the rejected ones. `labels` holds the last columns
    only, from the earliest answer token of any row (its width, known on the host without a device
    sync, is how many positions need logits); the prompt before it is all IGNORE anyway."""
    rows = [{"input_ids": ex["input_ids"], "labels": ex["labels"]} for ex in batch]
    rows += [{"input_ids": ex["rejected_ids"], "labels": ex["rejected_labels"]} for ex in batch]
    out = collate(rows, pad_id)
    first = min((i for r in rows for i, x in enumerate(r["labels"]) if x != IGNORE), default=1)
    out["labels"] = out["labels"][:, max(1, first) :].contiguous()
    return out


_TAKES_LOGITS_TO_KEEP: dict[type, bool] = {}


def _supports_logits_to_keep(model: torch.nn.Module) -> bool:
    get_base = getattr(model, "get_base_model", None)  # a peft model: ask the model it wraps
    cls = type(get_base() if callable(get_base) else model)
    if cls not in _TAKES_LOGITS_TO_KEEP:
        _TAKES_LOGITS_TO_KEEP[cls] = "logits_to_keep" in inspect.signature(cls.forward).parameters
    return _TAKES_LOGITS_TO_KEEP[cls]


def _answer_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor], normalize: bool) -> torch.Tensor:
    """Log-probability of each row's answer tokens (summed, or averaged with `normalize`). `labels`
    covers the last W columns of `input_ids`: their tokens are predicted by the W positions before."""
    width = batch["labels"].shape[1]
    ids, attention = batch["input_ids"], batch["attention_mask"]
    if _supports_logits_to_keep(model):
        logits = model(input_ids=ids, attention_mask=attention, logits_to_keep=width + 1, use_cache=False).logits
    else:
        logits = model(input_ids=ids, attention_mask=attention).logits[:, -(width + 1) :]
    logits = logits[:, :-1].float()
    labels = batch["labels"]
    mask = labels != IGNORE
    picked = torch.gather(logits, 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    token_logps = picked - torch.logsumexp(logits, dim=-1)
    total = (token_logps * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if normalize else total


def pair_terms(model: torch.nn.Module, batch: dict[str, torch.Tensor], spec: JobSpec) -> dict[str, torch.Tensor]:
    """The per-pair loss and rewards: reward = beta * (log pi(answer) - log pi_ref(answer))."""
    p = spec.preference
    policy = _answer_logps(model, batch, p.length_normalization)
    with torch.no_grad(), reference_policy(model):
        reference = _answer_logps(model, batch, p.length_normalization)
    n = policy.shape[0] // 2
    chosen = policy[:n] - reference[:n]
    rejected = policy[n:] - reference[n:]
    h = chosen - rejected
    loss = (h - 1.0 / (2.0 * p.beta)) ** 2 if p.loss == "ipo" else -F.logsigmoid(p.beta * h)
    return {
        "loss": loss,
        "chosen": p.beta * chosen.detach(),
        "rejected": p.beta * rejected.detach(),
        "logps_chosen": policy[:n].detach(),
        "logps_rejected": policy[n:].detach(),
    }


class PreferenceLoss:
    """DPO/IPO over pair batches. Keeps the rewards of the steps since the last logging point on
    the device, and reads them back once per logging step (`take_metrics`)."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self._sums: torch.Tensor | None = None  # [chosen, rejected, margin, accuracy, pairs]
        self.last_accuracy: tuple[torch.Tensor, torch.Tensor] | None = None  # pairs have no token accuracy

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        t = pair_terms(model, batch, self.spec)
        margin = t["chosen"] - t["rejected"]
        sums = torch.stack(
            [
                t["chosen"].sum(),
                t["rejected"].sum(),
                margin.sum(),
                (margin > 0).float().sum(),
                torch.tensor(float(margin.numel()), device=margin.device),
            ]
        )
        self._sums = sums if self._sums is None else self._sums + sums
        return t["loss"].mean()

    def take_metrics(self) -> dict[str, float] | None:
        if self._sums is None:
            return None
        chosen, rejected, margin, correct, n = self._sums.tolist()
        self._sums = None
        n = max(n, 1.0)
        return {
            "rewards_chosen": chosen / n,
            "rewards_rejected": rejected / n,
            "reward_margin": margin / n,
            "preference_accuracy": correct / n,
        }


@torch.no_grad()
def evaluate_preference(
    model: torch.nn.Module, data: Encoded, spec: JobSpec, pad_id: int, device: torch.device
) -> dict[str, Any]:
    """Held-out pairs: the loss; how often the chosen answer out-scores the rejected one, in reward
    (`preference_accuracy`: against the reference, so 0 at step 0, where every reward is 0) and in the
    model's own log-probability (`choice_accuracy`: at step 0, the base model's own preference); and
    the mean log-probabilities of both answers (DPO can lower both while it widens the margin)."""
    model.eval()
    bs = max(1, spec.training.batch_size)
    loss = margin = correct = chose = logps_chosen = logps_rejected = 0.0
    n = 0
    for i in range(0, len(data.examples), bs):
        batch = {k: v.to(device) for k, v in collate_pairs(data.examples[i : i + bs], pad_id).items()}
        t = pair_terms(model, batch, spec)
        m = t["chosen"] - t["rejected"]
        loss += float(t["loss"].sum())
        margin += float(m.sum())
        correct += float((m > 0).sum())
        chose += float((t["logps_chosen"] > t["logps_rejected"]).sum())
        logps_chosen += float(t["logps_chosen"].sum())
        logps_rejected += float(t["logps_rejected"].sum())
        n += m.numel()
    n = max(n, 1)
    return {
        "eval_loss": loss / n,
        "preference_accuracy": correct / n,
        "reward_margin": margin / n,
        "choice_accuracy": chose / n,
        "logps_chosen": logps_chosen / n,
        "logps_rejected": logps_rejected / n,
    }
