from __future__ import annotations

from pathlib import Path

import pytest

from app.jobs.spec import JobCreate, JobSpec


@pytest.fixture(scope="session")
def model_dir(tiny_model: str) -> Path:
    import os

    return Path(os.environ["TUNEFORGE_MODELS_DIR"]) / tiny_model


def make_spec(**over: object) -> JobSpec:
    body = {"model": "tiny-llama", "training_file": "file-x", "seed": 3, **over}
    return JobCreate.model_validate(body).resolve()
