"""`data.augmentation`: more training rows made from the ones given (EDA-style word operations, and
character noise). Training split only, seeded, originals kept."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.contract.spec.base import Strict

AugmentationName = Literal["synonym_replacement", "random_insertion", "random_swap", "random_deletion", "char_noise"]
# Operations that draw on WordNet (synonyms); the others need no data.
NEEDS_WORDNET: tuple[AugmentationName, ...] = ("synonym_replacement", "random_insertion")


class AugmentationOp(Strict):
    name: AugmentationName = Field(
        description="synonym_replacement (WordNet synonyms), random_insertion (a synonym of a word, inserted "
        "at a random place), random_swap (two words trade places), random_deletion (a word is dropped), "
        "char_noise (a character is replaced, dropped, doubled or swapped with its neighbour)."
    )
    p: float = Field(
        0.1, gt=0.0, le=1.0, description="Per word (per character for char_noise): the chance the operation hits it."
    )


class AugmentationSpec(Strict):
    copies: int = Field(1, ge=1, le=16, description="Augmented copies added per training row; the original is kept.")
    seed: int | None = Field(None, ge=0, description="Seed of the augmentation (default: the job seed).")
    operations: list[AugmentationOp] = Field(
        min_length=1, max_length=10, description="Applied in order to each copy; each hits with its own `p`."
    )
    augment_targets: bool = Field(
        False,
        description="Also augment the targets (completions, assistant turns). Off: only inputs (prompts, "
        "user/system turns, the `text` of classification and regression rows) change. Plain `text` rows of "
        "causal_lm are all target, so they are augmented only when this is on.",
    )
