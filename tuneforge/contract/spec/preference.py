"""Preference tuning (`method.type = dpo`): which loss, and its strength."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.contract.spec.base import Strict

PreferenceLossName = Literal["sigmoid", "ipo"]


class PreferenceSpec(Strict):
    beta: float = Field(
        0.1,
        gt=0.0,
        le=10.0,
        description="Strength of the pull towards the reference model (OpenAI's method.dpo.hyperparameters.beta).",
    )
    loss: PreferenceLossName = Field(
        "sigmoid",
        description="`sigmoid`: DPO (Rafailov et al. 2023). `ipo`: IPO (Azar et al. 2023), a squared loss that "
        "targets a margin of 1/(2 beta) and does not push the margin without bound.",
    )
    length_normalization: bool = Field(
        False,
        description="Average the log-probabilities over each answer's tokens instead of summing them, so "
        "longer answers are not favoured (recommended with `ipo`).",
    )
