"""OpenAI's grader objects (`openai.types.graders`), strict: what a reinforcement job's
`method.reinforcement.grader` and `/v1/fine_tuning/alpha/graders/*` accept.

Templates (`{{item.<field>}}`, `{{sample.output_text}}`, `{{sample.output_json.<key>}}`) are checked
when a grader is validated (template.py); what they refer to is checked against the files at POST.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic import Strict as NoCoercion

from tuneforge.contract.spec.base import SpecError, Strict

Name = Annotated[str, Field(min_length=1, max_length=128)]
Template = Annotated[str, Field(max_length=20_000)]


class GraderType(StrEnum):
    STRING_CHECK = "string_check"
    TEXT_SIMILARITY = "text_similarity"
    SCORE_MODEL = "score_model"
    LABEL_MODEL = "label_model"
    PYTHON = "python"
    MULTI = "multi"


class StringOperation(StrEnum):
    EQ = "eq"  # exact, case-sensitive
    NE = "ne"
    LIKE = "like"  # the reference is contained in the input, case-sensitive
    ILIKE = "ilike"  # the same, case-insensitive


class SimilarityMetric(StrEnum):
    FUZZY_MATCH = "fuzzy_match"
    BLEU = "bleu"
    GLEU = "gleu"
    METEOR = "meteor"
    ROUGE_1 = "rouge_1"
    ROUGE_2 = "rouge_2"
    ROUGE_3 = "rouge_3"
    ROUGE_4 = "rouge_4"
    ROUGE_5 = "rouge_5"
    ROUGE_L = "rouge_l"


class StringCheckGrader(Strict):
    type: Literal["string_check"]
    name: Name
    input: Template
    reference: Template
    operation: StringOperation


class TextSimilarityGrader(Strict):
    type: Literal["text_similarity"]
    name: Name
    input: Template
    reference: Template
    evaluation_metric: SimilarityMetric = Field(
        description="OpenAI's `cosine` needs OpenAI's embedding model and is not offered."
    )
    # No coercion: `false` is not a threshold of 0 (ints are still numbers in strict mode).
    pass_threshold: Annotated[float, NoCoercion()] | None = Field(
        None, description="Accepted for OpenAI's evals shape; not used in training."
    )


class PythonGrader(Strict):
    type: Literal["python"]
    name: Name
    source: Annotated[str, Field(min_length=1, max_length=256_000)] = Field(
        description="Defines `grade(sample: dict, item: dict) -> float`; runs in the sandbox (docs/security.md)."
    )
    image_tag: str | None = Field(None, max_length=128, description="Accepted for OpenAI's shape; ignored.")


class ContentPart(Strict):
    """A text part of a judge message (`input_text` or `output_text`); images and audio are refused."""

    type: Literal["input_text", "output_text"]
    text: Template


class JudgeMessage(Strict):
    role: Literal["user", "assistant", "system", "developer"]
    content: Template | list[ContentPart]
    type: Literal["message"] | None = None

    def template(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class SamplingParams(Strict):
    max_completions_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    reasoning_effort: str | None = Field(None, description="Refused unless null: no judge here reasons.")

    @model_validator(mode="after")
    def _no_reasoning(self) -> SamplingParams:
        if self.reasoning_effort not in (None, "none"):
            raise SpecError("reasoning_effort", "the judge models this server serves do not support reasoning_effort")
        return self


class ScoreModelGrader(Strict):
    type: Literal["score_model"]
    name: Name
    model: Annotated[str, Field(min_length=1, max_length=600)] = Field(
        description="A model this deployment serves: a base under the models root, or an `ft:` id of your organization."
    )
    input: list[JudgeMessage] = Field(min_length=1, max_length=32)
    range: list[float] | None = Field(None, description="[low, high] of the score; default [0, 1].")
    sampling_params: SamplingParams | None = None

    @model_validator(mode="after")
    def _check_range(self) -> ScoreModelGrader:
        if self.range is not None and (len(self.range) != 2 or not self.range[0] < self.range[1]):
            raise SpecError("range", "range must be two numbers, low < high")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.range[0], self.range[1]) if self.range else (0.0, 1.0)


class LabelModelGrader(Strict):
    type: Literal["label_model"]
    name: Name
    model: Annotated[str, Field(min_length=1, max_length=600)]
    input: list[JudgeMessage] = Field(min_length=1, max_length=32)
    labels: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=2, max_length=64)
    passing_labels: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_labels(self) -> LabelModelGrader:
        unknown = [x for x in self.passing_labels if x not in self.labels]
        if unknown:
            raise SpecError("passing_labels", f"passing_labels must be a subset of labels; not in labels: {unknown}")
        return self


LeafGrader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader,
    Field(discriminator="type"),
]


class MultiGrader(Strict):
    type: Literal["multi"]
    name: Name
    graders: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")], LeafGrader] = Field(
        min_length=1, max_length=16, description="Sub-graders by the name `calculate_output` uses for each score."
    )
    calculate_output: Annotated[str, Field(min_length=1, max_length=2000)] = Field(
        description="A formula over the sub-graders' names: + - * / ** ( ), numbers, min, max, abs, floor, "
        "ceil, exp, sqrt, log."
    )

    @model_validator(mode="after")
    def _check_formula(self) -> MultiGrader:
        from tuneforge.contract.graders.formula import FormulaError, check_formula

        try:
            check_formula(self.calculate_output, set(self.graders))
        except FormulaError as exc:
            raise SpecError("calculate_output", str(exc)) from exc
        return self


Grader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader | MultiGrader,
    Field(discriminator="type"),
]
AnyGrader = StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader | MultiGrader


def leaves(grader: AnyGrader, path: str = "grader") -> list[tuple[str, AnyGrader]]:
    """Every grader that scores on its own, with where it sits (`grader.graders.exact`)."""
    if isinstance(grader, MultiGrader):
        return [(f"{path}.graders.{k}", g) for k, g in grader.graders.items()]
    return [(path, grader)]


def templates(grader: AnyGrader) -> list[tuple[str, str]]:
    """(field path relative to the grader, template text) of every templated field."""
    out: list[tuple[str, str]] = []
    if isinstance(grader, StringCheckGrader | TextSimilarityGrader):
        out += [("input", grader.input), ("reference", grader.reference)]
    elif isinstance(grader, ScoreModelGrader | LabelModelGrader):
        out += [(f"input[{i}].content", m.template()) for i, m in enumerate(grader.input)]
    return out


def judge_models(grader: AnyGrader) -> list[tuple[str, str]]:
    """(path, model) of every model-judged grader."""
    return [
        (f"{path}.model", g.model) for path, g in leaves(grader) if isinstance(g, ScoreModelGrader | LabelModelGrader)
    ]


def to_json(grader: AnyGrader) -> dict[str, Any]:
    return grader.model_dump(mode="json", exclude_none=True)
