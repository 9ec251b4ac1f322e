"""Graders in OpenAI's shapes (`openai.types.graders`): what they look like (shapes.py), their
templates (template.py), and scoring a sample (scoring.py; text metrics in similarity.py, `multi`'s
formula in formula.py, the `python` grader's sandbox in sandbox.py). The API and the engine both use
them; nothing here imports FastAPI, the database or torch."""

# The spec first: its reinforcement block holds a grader, and shapes.py builds on the spec's base, so
# whichever of the two is imported first, the spec package finishes loading before the shapes do.
import tuneforge.contract.spec  # noqa: F401
from tuneforge.contract.graders.shapes import (
    AnyGrader,
    Grader,
    GraderType,
    LabelModelGrader,
    MultiGrader,
    PythonGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
    judge_models,
    leaves,
    templates,
)

__all__ = [
    "AnyGrader",
    "Grader",
    "GraderType",
    "LabelModelGrader",
    "MultiGrader",
    "PythonGrader",
    "ScoreModelGrader",
    "StringCheckGrader",
    "TextSimilarityGrader",
    "judge_models",
    "leaves",
    "templates",
]
