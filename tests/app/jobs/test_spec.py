from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tuneforge.app.core.http_errors import validation_error_response
from tuneforge.app.jobs.request import JobCreate
from tuneforge.contract.spec import DEFAULT_LEARNING_RATE, JobSpec, SpecError


def body(**over: object) -> dict[str, Any]:
    return {"model": "m", "training_file": "file-1", **over}


def param_of(exc: ValidationError) -> str:
    import json

    resp = validation_error_response(list(exc.errors()))
    return json.loads(resp.body)["error"]["param"]  # type: ignore[arg-type]  # bytes here, never a memoryview


def test_defaults_are_qlora() -> None:
    spec = JobCreate.model_validate(body()).resolve()
    assert spec.quantization.bits == 4
    assert spec.quantization.quant_type == "nf4"
    assert spec.quantization.double_quant is True
    assert spec.training.epochs == 3
    assert spec.data.validation_split == 0.1
    assert spec.optimizer.name == "adamw"
    assert 0 <= spec.seed < 2**31


@pytest.mark.parametrize(
    ("over", "param"),
    [
        ({"surprise": 1}, "surprise"),
        ({"training": {"learning_rate": -1}}, "training.learning_rate"),
        ({"lora": {"r": 0}}, "lora.r"),
        ({"lora": {"rank": 8}}, "lora.rank"),
        ({"quantization": {"bits": 8, "quant_type": "fp4"}}, "quantization.quant_type"),
        ({"quantization": {"bits": 3}}, "quantization.bits"),
        ({"training": {"epochs": 2, "max_steps": 10}}, "training.max_steps"),
        ({"optimizer": {"name": "sgd", "momentum": 2}}, "optimizer.momentum"),
        ({"optimizer": {"name": "adamw", "momentum": 0.9}}, "optimizer.momentum"),
        ({"optimizer": {"name": "lion"}}, "optimizer"),
        ({"scheduler": {"name": "cosine", "num_cycles": 3}}, "scheduler.num_cycles"),
        ({"scheduler": {"warmup_steps": 3, "warmup_ratio": 0.1}}, "scheduler.warmup_ratio"),
        ({"data": {"validation_split": 0.6, "test_split": 0.5}}, "data.test_split"),
        ({"trust_remote_code": True}, "trust_remote_code"),
        ({"method": {"type": "ppo"}}, "method.type"),
        ({"lora": {"target_modules": []}}, "lora.target_modules"),
        ({"task": "regression", "data": {"format": "alpaca"}}, "data.format"),
        ({"data": {"format": "dolly"}}, "data.format"),
        ({"data": {"augmentation": {"operations": []}}}, "data.augmentation.operations"),
        (
            {"data": {"augmentation": {"operations": [{"name": "back_translation"}]}}},
            "data.augmentation.operations.0.name",
        ),
        (
            {"data": {"augmentation": {"copies": 0, "operations": [{"name": "random_swap"}]}}},
            "data.augmentation.copies",
        ),
        (
            {"data": {"augmentation": {"operations": [{"name": "random_swap", "p": 1.5}]}}},
            "data.augmentation.operations.0.p",
        ),
    ],
)
def test_bad_specs_name_the_field(over: dict[str, Any], param: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobCreate.model_validate(body(**over))
    assert param_of(info.value) == param


def test_openai_hyperparameters_fold_into_blocks() -> None:
    spec = JobCreate.model_validate(
        body(
            method={
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 0.5}},
            }
        )
    ).resolve()
    assert spec.training.epochs == 2
    assert spec.training.batch_size == 8
    assert spec.training.learning_rate == pytest.approx(DEFAULT_LEARNING_RATE * 0.5)


def test_contradicting_hyperparameters_are_refused() -> None:
    create = JobCreate.model_validate(
        body(
            training={"epochs": 5},
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        )
    )
    with pytest.raises(SpecError) as info:
        create.resolve()
    assert info.value.param == "method.supervised.hyperparameters.n_epochs"


def test_validation_split_with_validation_file_is_refused() -> None:
    create = JobCreate.model_validate(body(validation_file="file-2", data={"validation_split": 0.2}))
    with pytest.raises(SpecError) as info:
        create.resolve()
    assert info.value.param == "data.validation_split"


def test_resolved_spec_round_trips() -> None:
    """The stored spec lists every field; the worker must be able to validate it again."""
    for over in ({}, {"quantization": {"bits": 8}}, {"scheduler": {"name": "polynomial", "power": 2.0}}):
        spec = JobCreate.model_validate(body(**over)).resolve()
        again = JobSpec.model_validate(spec.model_dump(mode="json"))
        assert again == spec


@pytest.mark.parametrize(
    ("over", "param"),
    [
        ({"training": {"loss": {"label_smoothing": 0.1}}}, "training.loss.label_smoothing"),
        ({"training": {"loss": {"regression_loss": "huber"}}}, "training.loss.regression_loss"),
        ({"task": "regression", "training": {"loss": {"class_weights": "balanced"}}}, "training.loss.class_weights"),
        ({"task": "sequence_classification", "training": {"packing": True}}, "training.packing"),
    ],
)
def test_task_specific_options_are_refused_elsewhere(over: dict[str, Any], param: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobCreate.model_validate(body(**over))
    assert param_of(info.value) == param


def test_documented_examples_are_valid_specs() -> None:
    from tuneforge.app.jobs.spec_docs import EXAMPLES

    for example in EXAMPLES:
        JobCreate.model_validate(example).resolve()
