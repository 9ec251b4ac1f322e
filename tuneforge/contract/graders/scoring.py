"""Scoring one sample with a grader: the reward, each sub-grader's, the errors (OpenAI's
`metadata.errors` flags) and the time it took. Used by the API (`/v1/fine_tuning/alpha/graders/run`)
and by the engine (reinforcement fine-tuning) alike; what differs between them, how a judge model is
reached and whether python graders may run, is the `GraderRuntime` each hands in.

A grader that fails on a sample scores 0 for it, with the reason, and never raises: a job goes on.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tuneforge.contract.graders.formula import FormulaError, evaluate_formula
from tuneforge.contract.graders.sandbox import SandboxLimits, run_python_grader
from tuneforge.contract.graders.shapes import (
    AnyGrader,
    JudgeMessage,
    LabelModelGrader,
    MultiGrader,
    PythonGrader,
    SamplingParams,
    ScoreModelGrader,
    StringCheckGrader,
    StringOperation,
    TextSimilarityGrader,
)
from tuneforge.contract.graders.similarity import similarity
from tuneforge.contract.graders.template import TemplateError, render

# (model, messages [{role, content}], sampling params) -> the judge's reply text. Raises JudgeError.
Judge = Callable[[str, list[dict[str, str]], SamplingParams | None], str]


class JudgeError(RuntimeError):
    """The judge model could not answer (not found, not served, timed out)."""


ERROR_FLAGS = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)


@dataclass(frozen=True)
class GraderRuntime:
    judge: Judge | None = None
    # None: python graders are off on this server (TUNEFORGE_PYTHON_GRADER_ENABLED).
    sandbox: SandboxLimits | None = None


@dataclass
class GradeResult:
    name: str
    type: str
    reward: float
    sub_rewards: dict[str, float] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(ERROR_FLAGS, False))
    # Why the reward is 0 when a grader failed (the first failure), for the job's events.
    error: str | None = None
    execution_time: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None

    def fail(self, flag: str, message: str, **details: Any) -> GradeResult:
        self.errors[flag] = True
        self.errors.update(details)
        self.error = self.error or message
        self.reward = 0.0
        return self


def sample_of(output_text: str, json_output: bool) -> tuple[dict[str, Any], bool]:
    """The `sample` namespace and whether `output_json` failed to parse (a JSON response format only)."""
    sample: dict[str, Any] = {"output_text": output_text}
    if not json_output:
        return sample, False
    try:
        sample["output_json"] = json.loads(output_text)
        return sample, False
    except ValueError:
        return sample, True


def grade(
    grader: AnyGrader, output_text: str, item: dict[str, Any], runtime: GraderRuntime, json_output: bool = False
) -> GradeResult:
    started = time.perf_counter()
    sample, parse_failed = sample_of(output_text, json_output)
    result = GradeResult(grader.name, grader.type, 0.0)
    if parse_failed:
        result.fail("sample_parse_error", "the sample is not valid JSON")
    elif isinstance(grader, MultiGrader):
        _multi(grader, sample, item, runtime, result)
    else:
        _leaf(grader, sample, item, runtime, result)
    result.execution_time = time.perf_counter() - started
    if not math.isfinite(result.reward):
        result.fail("unresponsive_reward_error", f"the reward is {result.reward}")
    return result


def _multi(g: MultiGrader, sample: dict[str, Any], item: dict[str, Any], rt: GraderRuntime, out: GradeResult) -> None:
    scores: dict[str, float] = {}
    for key, sub in g.graders.items():
        r = GradeResult(sub.name, sub.type, 0.0)
        _leaf(sub, sample, item, rt, r)
        scores[key] = r.reward
        for flag in ERROR_FLAGS:
            out.errors[flag] = out.errors[flag] or r.errors[flag]
        if r.error is not None:
            out.error = out.error or f"{key}: {r.error}"
    out.sub_rewards = scores
    try:
        out.reward = evaluate_formula(g.calculate_output, scores)
    except FormulaError as exc:
        out.fail("formula_parse_error", str(exc))


def _leaf(grader: AnyGrader, sample: dict[str, Any], item: dict[str, Any], rt: GraderRuntime, out: GradeResult) -> None:
    try:
        if isinstance(grader, StringCheckGrader):
            text, ref = render(grader.input, sample, item), render(grader.reference, sample, item)
            out.reward = _string_check(grader, text, ref)
        elif isinstance(grader, TextSimilarityGrader):
            text, ref = render(grader.input, sample, item), render(grader.reference, sample, item)
            out.reward = similarity(grader.evaluation_metric, text, ref)
        elif isinstance(grader, PythonGrader):
            _python(grader, sample, item, rt, out)
        elif isinstance(grader, ScoreModelGrader | LabelModelGrader):
            _model(grader, sample, item, rt, out)
        else:
            out.fail("other_error", f"a {grader.type} grader cannot be nested here")
    except TemplateError as exc:
        out.fail("invalid_variable_error", str(exc))


def _string_check(g: StringCheckGrader, text: str, reference: str) -> float:
    op = g.operation
    if op is StringOperation.EQ:
        return float(text == reference)
    if op is StringOperation.NE:
        return float(text != reference)
    if op is StringOperation.LIKE:
        return float(reference in text)
    return float(reference.lower() in text.lower())


def _python(g: PythonGrader, sample: dict[str, Any], item: dict[str, Any], rt: GraderRuntime, out: GradeResult) -> None:
    if rt.sandbox is None:
        out.fail(
            "python_grader_server_error",
            "python graders are turned off on this server (TUNEFORGE_PYTHON_GRADER_ENABLED)",
            python_grader_server_error_type="disabled",
        )
        return
    r = run_python_grader(g.source, sample, item, rt.sandbox)
    if r.reward is not None:
        out.reward = r.reward
        return
    if r.error_type == "unavailable":
        out.fail("python_grader_server_error", r.error or "", python_grader_server_error_type="unavailable")
    else:
        out.fail(
            "python_grader_runtime_error",
            f"python grader: {r.error}",
            python_grader_runtime_error_details=f"{r.error_type}: {r.error}",
        )


def _messages(
    g: ScoreModelGrader | LabelModelGrader, sample: dict[str, Any], item: dict[str, Any]
) -> list[dict[str, str]]:
    return [_message(m, sample, item) for m in g.input]


def _message(m: JudgeMessage, sample: dict[str, Any], item: dict[str, Any]) -> dict[str, str]:
    return {"role": "system" if m.role == "developer" else m.role, "content": render(m.template(), sample, item)}


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def parse_score(reply: str) -> float | None:
    """A judge's score: `{"result": x}` (OpenAI's structured shape) or the first number in the reply."""
    try:
        value = json.loads(reply)
        if isinstance(value, dict) and isinstance(value.get("result"), int | float):
            return float(value["result"])
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    except ValueError:
        pass
    m = _NUMBER.search(reply)
    return float(m.group(0)) if m else None


def parse_label(reply: str, labels: list[str]) -> str | None:
    """The label a judge chose: the reply itself, or the first label it names (the longest label wins
    where one contains another)."""
    text = reply.strip().strip('"').strip()
    for label in labels:
        if text.lower() == label.lower():
            return label
    found = [(text.lower().find(x.lower()), -len(x), x) for x in labels if x.lower() in text.lower()]
    return min(found)[2] if found else None


def _model(
    g: ScoreModelGrader | LabelModelGrader,
    sample: dict[str, Any],
    item: dict[str, Any],
    rt: GraderRuntime,
    out: GradeResult,
) -> None:
    if rt.judge is None:
        out.fail("model_grader_server_error", "no judge model can be reached here")
        return
    params = g.sampling_params if isinstance(g, ScoreModelGrader) else None
    try:
        reply = rt.judge(g.model, _messages(g, sample, item), params)
    except JudgeError as exc:
        out.fail("model_grader_server_error", f"judge {g.model}: {exc}", model_grader_server_error_details=str(exc))
        return
    if isinstance(g, ScoreModelGrader):
        score = parse_score(reply)
        if score is None:
            out.fail("model_grader_parse_error", f"judge {g.model} gave no score: {reply[:200]!r}")
            return
        low, high = g.bounds
        out.reward = min(max(score, low), high)
        return
    label = parse_label(reply, g.labels)
    if label is None:
        out.fail("model_grader_parse_error", f"judge {g.model} gave none of the labels: {reply[:200]!r}")
        return
    out.reward = float(label in g.passing_labels)
