"""Reinforcement fine-tuning (`method.type=reinforcement`): GRPO (Shao et al. 2024) against a grader.

Per micro-batch of prompts, the loss samples `generations_per_prompt` completions of each with the
current adapter (rollout.py, the one generation seam), scores them with the job's grader
(tuneforge/contract/graders), normalises the rewards within each prompt's group (reward minus the group
mean, over the group's standard deviation), and returns the clipped policy-gradient surrogate plus
`kl_coef` times the KL to the reference (the base with the adapter off, or the adapter a warm start
began from: reference.py):

    loss_t = -min(r_t A, clip(r_t, 1-eps, 1+eps) A) + kl_coef * (exp(ref_t - logp_t) - (ref_t - logp_t) - 1)

with r_t = pi(token) / pi_sampling(token): the sampling policy's log-probabilities come from a no-grad
pass in eval mode (as generated: no dropout), the policy's from the training pass, so dropout is what
moves the ratio off 1 within the one update made per rollout. The KL estimator is k3 (Schulman 2020),
as in GRPO. Aggregated per token (DAPO) or per sequence (GRPO), `reinforcement.loss_aggregation`.

Everything the loop does for other methods holds: sampling draws from torch's global generator, which
checkpoints save, so a resumed run samples the same completions; evaluation is greedy and forks the RNG.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch

from tuneforge.contract.graders.sandbox import SandboxLimits
from tuneforge.contract.graders.scoring import GradeResult, GraderRuntime, grade
from tuneforge.contract.graders.shapes import AnyGrader, judge_models
from tuneforge.contract.spec import JobSpec, MethodName
from tuneforge.contract.status import ErrorCode
from tuneforge.worker.training import rollout
from tuneforge.worker.training.chat_template import require_template
from tuneforge.worker.training.data import Splits
from tuneforge.worker.training.encoded import IGNORE, Encoded, Example
from tuneforge.worker.training.errors import TrainingError
from tuneforge.worker.training.judge import InProcessJudge
from tuneforge.worker.training.methods.base import EncodedSplits, TrainingMethod
from tuneforge.worker.training.reference import reference_policy
from tuneforge.worker.training.reporter import Reporter
from tuneforge.worker.training.samples import SamplePrompt, sample_prompts

# Grader failures reported as job events, at most, per run (each also counts in `grader_errors`).
MAX_GRADER_EVENTS = 20
# Sample generations shown at each evaluation, with their rewards, in the evaluation's event.
SHOWN_SAMPLES = 3


class ReinforcementTraining(TrainingMethod):
    """`method.type=reinforcement`: rows are prompts (`messages` up to the turn the model writes) and
    the fields the grader reads; a batch is prompts; the loss samples, grades and steps."""

    name: ClassVar[MethodName] = "reinforcement"
    uses_reference: ClassVar[bool] = True

    def __init__(self, spec: JobSpec, reporter: Reporter | None = None) -> None:
        super().__init__(spec, reporter)
        grader = spec.reinforcement.grader
        if grader is None:  # JobSpec refuses this; kept for the type checker
            raise TrainingError(ErrorCode.INVALID_SPEC, "reinforcement needs a grader", "reinforcement.grader")
        self.grader: AnyGrader = grader
        self._runtime: GraderRuntime | None = None
        self.grader_events = 0

    def runtime(self, device: torch.device) -> GraderRuntime:
        if self._runtime is None:
            judge = InProcessJudge(device) if judge_models(self.grader) else None
            self._runtime = GraderRuntime(judge=judge, sandbox=SandboxLimits.from_env())
        return self._runtime

    def grade(self, texts: list[str], items: list[dict[str, Any]], device: torch.device) -> list[GradeResult]:
        rt = self.runtime(device)
        json_output = self.spec.reinforcement.response_format == "json_object"
        results = [grade(self.grader, t, item, rt, json_output) for t, item in zip(texts, items, strict=True)]
        for r in results:
            if r.failed and self.reporter is not None and self.grader_events < MAX_GRADER_EVENTS:
                self.grader_events += 1
                more = " (further grader errors are counted in grader_errors only)" * (
                    self.grader_events == MAX_GRADER_EVENTS
                )
                self.reporter.event(
                    f"Grader {r.name} scored a sample 0: {r.error}{more}",
                    level="warn",
                    data={"grader": r.name, "error": r.error, "errors": {k: v for k, v in r.errors.items() if v}},
                )
        return results

    def encode(self, splits: Splits, tokenizer: Any) -> EncodedSplits:
        train, val, test = (self._encode(s, tokenizer) for s in (splits.train, splits.validation, splits.test))
        return EncodedSplits(train, val, test)

    def _encode(self, rows: list[dict[str, Any]], tokenizer: Any) -> Encoded:
        require_template(tokenizer, "prompts (method.type=reinforcement) cannot be rendered")
        field = self.spec.data.messages_field
        room = max(1, self.spec.training.max_seq_length - self.spec.reinforcement.max_new_tokens)
        examples: list[Example] = []
        out = Encoded(examples=examples)
        for n, row in enumerate(rows, start=1):
            messages = prompt_messages(row, field, n)
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(ids) > room:
                out.truncated += 1
                ids = ids[-room:]  # keep the end: the turn the model answers
            out.real_tokens += len(ids)
            examples.append({"input_ids": ids, "item": row, "index": len(examples), "prompt": str(text)})
        return out

    def collate(self, examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
        ids, mask = rollout.left_pad([ex["input_ids"] for ex in examples], pad_id, torch.device("cpu"))
        return {"input_ids": ids, "attention_mask": mask, "index": torch.tensor([ex["index"] for ex in examples])}

    def make_loss(self, train: Encoded, tokenizer: Any, device: torch.device) -> GroupPolicyLoss:
        return GroupPolicyLoss(self, train, tokenizer, device)

    @torch.no_grad()
    def evaluate(
        self,
        model: torch.nn.Module,
        data: Encoded,
        tokenizer: Any,
        device: torch.device,
        norm: tuple[float, float] | None,
    ) -> dict[str, Any]:
        """Greedy completions of the first `eval_samples` prompts, graded: `reward` (the mean), and
        `eval_loss` = -reward (lower is better, for early stopping)."""
        examples = data.examples[: self.spec.reinforcement.eval_samples]
        if not examples:
            return {"eval_loss": 0.0, "reward": 0.0}
        r = self.spec.reinforcement
        eos, pad = int(tokenizer.eos_token_id), int(tokenizer.pad_token_id)
        bs = max(1, self.spec.training.batch_size)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            outs: list[list[int]] = []
            for i in range(0, len(examples), bs):
                chunk = [ex["input_ids"] for ex in examples[i : i + bs]]
                outs += rollout.GENERATE(model, chunk, 1, None, r.max_new_tokens, eos, pad, device)
        texts = [tokenizer.decode(o, skip_special_tokens=True) for o in outs]
        started = time.perf_counter()
        results = self.grade(texts, [ex["item"] for ex in examples], device)
        rewards = [x.reward for x in results]
        mean = sum(rewards) / len(rewards)
        shown = [
            {"prompt": ex["prompt"][-300:], "output": t[:300], "reward": round(x.reward, 4)}
            for ex, t, x in list(zip(examples, texts, results, strict=True))[:SHOWN_SAMPLES]
        ]
        if self.reporter is not None:
            self.reporter.event(
                f"Evaluation samples (greedy), with their rewards: mean reward {mean:.4f} over {len(rewards)} prompts",
                data={"reward": mean, "samples": shown},
            )
        return {
            "eval_loss": -mean,
            "reward": mean,
            "reward_std": _std(rewards),
            "grader_errors": sum(x.failed for x in results),
            "grader_seconds": round(time.perf_counter() - started, 4),
            "mean_completion_length": sum(len(o) for o in outs) / len(outs),
        }

    def sample_prompts(self, tokenizer: Any, validation_rows: list[dict[str, Any]]) -> list[SamplePrompt]:
        """The spec's prompts, then up to `samples.from_validation` validation prompts as rendered."""
        out = sample_prompts(self.spec, tokenizer, [])
        if getattr(tokenizer, "chat_template", None):
            for n, row in enumerate(validation_rows[: self.spec.samples.from_validation], start=1):
                text = tokenizer.apply_chat_template(
                    prompt_messages(row, self.spec.data.messages_field, n), add_generation_prompt=True, tokenize=False
                )
                out.append(SamplePrompt(str(text), list(tokenizer(text, add_special_tokens=False)["input_ids"])))
        return out


def prompt_messages(row: dict[str, Any], field: str, n: int) -> list[dict[str, Any]]:
    """A row's conversation up to the turn the model writes (a trailing assistant turn is dropped)."""
    messages = row.get(field)
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise TrainingError(
            ErrorCode.INVALID_FILE, f"Row {n}: `{field}` must be a non-empty list of messages", "training_file"
        )
    while messages and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    if not messages:
        raise TrainingError(ErrorCode.INVALID_FILE, f"Row {n}: `{field}` has no prompt turn", "training_file")
    return [
        {"role": "system" if m.get("role") == "developer" else m.get("role"), "content": m.get("content")}
        for m in messages
    ]


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return float((sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5)


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """[prompts, n] rewards -> advantages: each reward minus its group's mean, over the group's standard
    deviation (GRPO). A group whose rewards are all equal gives 0: no signal."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=True) if rewards.shape[1] > 1 else torch.zeros_like(mean)
    return (rewards - mean) / (std + 1e-4)


def _token_logps(
    model: torch.nn.Module, ids: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Log-probability of each labelled token under `model` at `temperature` ([rows, width-1]; 0 where
    the label is IGNORE). Only the completion's positions get logits."""
    first = int((labels != IGNORE).float().argmax(dim=1).min()) if bool((labels != IGNORE).any()) else 1
    start = max(first - 1, 0)
    logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, start:-1].float()
    logits = logits / temperature
    target = labels[:, start + 1 :]
    picked = torch.gather(logits, 2, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    out = picked - torch.logsumexp(logits, dim=-1)
    return torch.nn.functional.pad(out * (target != IGNORE), (start, 0))


class GroupPolicyLoss:
    """The GRPO loss of a micro-batch of prompts. Per-step metrics are host numbers (the rewards are
    on the host anyway), handed over at each logging step by `take_metrics`."""

    def __init__(self, method: ReinforcementTraining, train: Encoded, tokenizer: Any, device: torch.device) -> None:
        self.method = method
        self.spec = method.spec
        self.examples = train.examples
        self.tokenizer = tokenizer
        self.device = device
        self.last_accuracy: tuple[torch.Tensor, torch.Tensor] | None = None
        self._stats: dict[str, float] = {}

    def _add(self, **values: float) -> None:
        for k, v in values.items():
            self._stats[k] = self._stats.get(k, 0.0) + v

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        r = self.spec.reinforcement
        g = r.generations_per_prompt
        examples = [self.examples[i] for i in batch["index"].tolist()]
        prompts = [ex["input_ids"] for ex in examples]
        eos, pad = int(self.tokenizer.eos_token_id), int(self.tokenizer.pad_token_id)
        completions = rollout.GENERATE(model, prompts, g, r.temperature, r.max_new_tokens, eos, pad, self.device)
        texts = [self.tokenizer.decode(c, skip_special_tokens=True) for c in completions]
        items = [ex["item"] for ex in examples for _ in range(g)]
        started = time.perf_counter()
        results = self.method.grade(texts, items, self.device)
        grader_seconds = time.perf_counter() - started
        rewards = torch.tensor([x.reward for x in results], dtype=torch.float32).view(len(prompts), g)
        advantages = group_advantages(rewards).view(-1).to(self.device)

        ids, attention, labels = _sequences([p for p in prompts for _ in range(g)], completions, pad)
        ids, attention, labels = ids.to(self.device), attention.to(self.device), labels.to(self.device)
        mask = (labels[:, 1:] != IGNORE).float()
        with torch.no_grad():
            was_training = model.training
            model.eval()
            sampling = _token_logps(model, ids, attention, labels, r.temperature)
            with reference_policy(model):
                reference = _token_logps(model, ids, attention, labels, r.temperature)
            model.train(was_training)
        policy = _token_logps(model, ids, attention, labels, r.temperature)
        ratio = torch.exp(policy - sampling)
        a = advantages.unsqueeze(1)
        surrogate = torch.minimum(ratio * a, torch.clamp(ratio, 1 - r.clip_epsilon, 1 + r.clip_epsilon) * a)
        delta = reference - policy
        kl = torch.exp(delta) - delta - 1
        per_token = (-surrogate + r.kl_coef * kl) * mask
        lengths = mask.sum(dim=1).clamp(min=1)
        if r.loss_aggregation == "token":
            loss = per_token.sum() / mask.sum().clamp(min=1)
        else:
            loss = (per_token.sum(dim=1) / lengths).mean()
        if not bool(torch.isfinite(loss)):
            raise TrainingError(
                ErrorCode.NAN_LOSS,
                f"The reinforcement loss became {float(loss)}. Lower training.learning_rate.",
                "training.learning_rate",
            )
        clipped = ((ratio - 1).abs() > r.clip_epsilon).float() * mask
        flat = rewards.view(-1).tolist()
        self._add(
            groups=float(len(prompts)),
            completions=float(len(flat)),
            reward_sum=sum(flat),
            reward_sq=sum(x * x for x in flat),
            no_signal=float((rewards.max(dim=1).values == rewards.min(dim=1).values).sum()),
            kl_sum=float((kl.detach() * mask).sum()),
            tokens=float(mask.sum()),
            clipped=float(clipped.sum()),
            grader_seconds=grader_seconds,
            grader_errors=float(sum(x.failed for x in results)),
        )
        return loss

    def take_metrics(self) -> dict[str, float] | None:
        s, self._stats = self._stats, {}
        if not s:
            return None
        n, tokens = max(s["completions"], 1.0), max(s["tokens"], 1.0)
        mean = s["reward_sum"] / n
        return {
            "reward": mean,
            "reward_std": max(s["reward_sq"] / n - mean * mean, 0.0) ** 0.5,
            "no_signal_groups": s["no_signal"] / max(s["groups"], 1.0),
            "kl": s["kl_sum"] / tokens,
            "mean_completion_length": s["tokens"] / n,
            "clip_fraction": s["clipped"] / tokens,
            "grader_seconds": s["grader_seconds"],
            "grader_errors": s["grader_errors"],
        }


def _sequences(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """prompt + completion rows, right-padded; labels are the completion tokens (IGNORE elsewhere)."""
    rows = [p + c for p, c in zip(prompts, completions, strict=True)]
    width = max(len(x) for x in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
        attention[i, : len(p) + len(c)] = 1
        if c:
            labels[i, len(p) : len(p) + len(c)] = torch.tensor(c, dtype=torch.long)
    return ids, attention, labels
