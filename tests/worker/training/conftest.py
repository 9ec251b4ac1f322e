from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_dir(tiny_model: str) -> Path:
    return Path(os.environ["TUNEFORGE_MODELS_DIR"]) / tiny_model
