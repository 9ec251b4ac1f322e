"""`data.augmentation`: EDA-style word operations (Wei and Zou, 2019) and character noise, on the
training split only. Seeded per row and copy, so a job's augmented rows are the same on every attempt.

Synonyms come from WordNet 3.0 read offline by nltk's WordNet reader: Debian's `wordnet-base` package
installs it under /usr/share/wordnet (`TUNEFORGE_WORDNET_DIR` points elsewhere). Back-translation is not
offered: it needs a translation model per language pair.
"""

from __future__ import annotations

import io
import os
import random
import re
import string
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from tuneforge.contract import formats
from tuneforge.contract.spec import AugmentationSpec, JobSpec
from tuneforge.contract.spec.augmentation import NEEDS_WORDNET
from tuneforge.contract.spec.data import data_fields
from tuneforge.contract.status import ErrorCode
from tuneforge.worker.training.errors import TrainingError

DEFAULT_WORDNET_DIR = "/usr/share/wordnet"
WORD = re.compile(r"^[A-Za-z]+$")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Words EDA leaves alone: replacing or inserting synonyms of these mostly adds noise.
STOPWORDS = frozenset(
    _words(
        "a an the and or but if then else of at by for with about against between into through during before "
        "after above below to from up down in out on off over under again further once here there when where why "
        "how all any both each few more most other some such no nor not only own same so than too very s t can "
        "will just don should now i me my myself we our ours you your yours he him his she her hers it its they "
        "them their what which who whom this that these those am is are was were be been being have has had "
        "having do does did doing"
    )
)
# WordNet 3.0's lexicographer files, in order. Debian's wordnet-base omits the `lexnames` file that
# nltk's reader opens first; its content is fixed (see lexnames(5WN)), so it is given here.
LEXNAMES = _words(
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
)
LEX_POS = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
PARAM = "data.augmentation.operations"


def wordnet_dir() -> Path:
    return Path(os.environ.get("TUNEFORGE_WORDNET_DIR") or DEFAULT_WORDNET_DIR)


@lru_cache(maxsize=1)
def _wordnet(root: str) -> Any:
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if root not in nltk.data.path:
        nltk.data.path.append(root)  # nltk reads corpora only from its allowed roots

    class Reader(WordNetCorpusReader):
        def open(self, file: str) -> Any:
            if file == "lexnames" and not (Path(root) / "lexnames").exists():
                lines = (f"{i:02d}\t{n}\t{LEX_POS[n.split('.')[0]]}\n" for i, n in enumerate(LEXNAMES))
                return io.StringIO("".join(lines))
            return super().open(file)

        def map_wn(self, version: str = "wordnet") -> None:
            return None  # the map to other WordNet versions serves multilingual lookups, unused here

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not used
        return Reader(root, None)


def load_wordnet() -> Any:
    """nltk's WordNet reader over the installed WordNet, or invalid_spec saying what to install."""
    root = wordnet_dir()
    try:
        import nltk  # noqa: F401
    except ImportError as exc:
        raise TrainingError(
            ErrorCode.INVALID_SPEC,
            "synonym_replacement and random_insertion need nltk on the worker (pip install nltk; "
            "scripts/install.sh installs it).",
            PARAM,
        ) from exc
    if not (root / "data.noun").is_file():
        raise TrainingError(
            ErrorCode.INVALID_SPEC,
            f"synonym_replacement and random_insertion need WordNet, which is not installed on the worker "
            f"(no {root}/data.noun). Install Debian's wordnet-base (apt-get install wordnet-base; "
            "scripts/install.sh does it) or point TUNEFORGE_WORDNET_DIR at a WordNet 3.0 dict folder.",
            PARAM,
        )
    return _wordnet(str(root))


class Augmenter:
    def __init__(self, spec: AugmentationSpec) -> None:
        self.spec = spec
        needs = any(op.name in NEEDS_WORDNET for op in spec.operations)
        self.wordnet = load_wordnet() if needs else None
        self._synonyms: dict[str, list[str]] = {}

    def synonyms(self, word: str) -> list[str]:
        key = word.lower()
        if self.wordnet is None:
            return []
        if key not in self._synonyms:
            found = {
                lemma.name().replace("_", " ")
                for synset in self.wordnet.synsets(key)
                for lemma in synset.lemmas()
                if lemma.name().lower() != key
            }
            self._synonyms[key] = sorted(found)
        return self._synonyms[key]

    def text(self, text: str, rng: random.Random) -> str:
        words = text.split()
        if not words:
            return text
        for op in self.spec.operations:
            words = OPERATIONS[op.name](self, words, op.p, rng)
        return " ".join(words)

    # EDA: each operation hits about p * len(words) words (each word with chance p, so possibly none).
    @staticmethod
    def _count(words: list[str], p: float, rng: random.Random) -> int:
        return sum(1 for _ in words if rng.random() < p)

    def synonym_replacement(self, words: list[str], p: float, rng: random.Random) -> list[str]:
        out = list(words)
        for i, w in enumerate(words):
            if WORD.match(w) and w.lower() not in STOPWORDS and rng.random() < p:
                choices = self.synonyms(w)
                if choices:
                    new = rng.choice(choices)
                    out[i] = new.capitalize() if w[0].isupper() else new
        return out

    def random_insertion(self, words: list[str], p: float, rng: random.Random) -> list[str]:
        out = list(words)
        candidates = [w for w in words if WORD.match(w) and w.lower() not in STOPWORDS]
        for _ in range(self._count(words, p, rng)):
            for _ in range(10):  # a few tries to find a word with synonyms
                if not candidates:
                    break
                choices = self.synonyms(rng.choice(candidates))
                if choices:
                    out.insert(rng.randrange(len(out) + 1), rng.choice(choices))
                    break
        return out

    def random_swap(self, words: list[str], p: float, rng: random.Random) -> list[str]:
        out = list(words)
        if len(out) < 2:
            return out
        for _ in range(self._count(words, p, rng)):
            i, j = rng.sample(range(len(out)), 2)
            out[i], out[j] = out[j], out[i]
        return out

    def random_deletion(self, words: list[str], p: float, rng: random.Random) -> list[str]:
        kept = [w for w in words if rng.random() >= p]
        return kept or [rng.choice(words)]

    def char_noise(self, words: list[str], p: float, rng: random.Random) -> list[str]:
        out = []
        for w in words:
            chars = list(w)
            i = 0
            while i < len(chars):
                if chars[i].isalpha() and rng.random() < p:
                    kind = rng.randrange(4)
                    if kind == 0:
                        chars[i] = rng.choice(string.ascii_lowercase)
                    elif kind == 1 and len(chars) > 1:
                        del chars[i]
                        continue
                    elif kind == 2:
                        chars.insert(i, chars[i])
                        i += 1
                    elif i + 1 < len(chars):
                        chars[i], chars[i + 1] = chars[i + 1], chars[i]
                        i += 1
                i += 1
            out.append("".join(chars))
        return out


OPERATIONS: dict[str, Callable[[Augmenter, list[str], float, random.Random], list[str]]] = {
    "synonym_replacement": Augmenter.synonym_replacement,
    "random_insertion": Augmenter.random_insertion,
    "random_swap": Augmenter.random_swap,
    "random_deletion": Augmenter.random_deletion,
    "char_noise": Augmenter.char_noise,
}


def _augment_row(row: dict[str, Any], spec: JobSpec, aug: Augmenter, rng: random.Random) -> dict[str, Any] | None:
    """One augmented copy of a (normalized) row, or None when the row has no text the spec lets change."""
    d, targets = spec.data, aug.spec.augment_targets
    if spec.task != "causal_lm":
        text = row.get(d.text_field)
        return {**row, d.text_field: aug.text(text, rng)} if isinstance(text, str) else None
    kind = formats.detect(row, data_fields(d))
    if kind == "messages":
        chat = formats.from_openai(row[d.messages_field], row.get("tools"), row.get("functions"), d.messages_field)
        changed = False
        for m in chat.messages:
            if isinstance(m.get("content"), str) and (
                m["role"] in ("user", "system") or (targets and m["role"] == "assistant")
            ):
                m["content"] = aug.text(m["content"], rng)
                changed = True
        return chat.as_row(d.messages_field) if changed else None
    if kind == "prompt_completion":
        new = {**row, d.prompt_field: aug.text(str(row[d.prompt_field]), rng)}
        if targets:
            new[d.completion_field] = aug.text(str(row[d.completion_field]), rng)
        return new
    if kind == "text" and targets:
        return {**row, d.text_field: aug.text(str(row[d.text_field]), rng)}
    return None


def augment(rows: list[dict[str, Any]], spec: JobSpec) -> tuple[list[dict[str, Any]], int]:
    """The training rows followed by `copies` augmented copies of each; and how many were added."""
    a = spec.data.augmentation
    if a is None:
        return rows, 0
    aug = Augmenter(a)
    seed = a.seed if a.seed is not None else spec.seed
    added: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        for c in range(a.copies):
            rng = random.Random((seed * 1_000_003 + i) * 97 + c)
            new = _augment_row(row, spec, aug, rng)
            if new is not None:
                added.append(new)
    if rows and not added:
        raise TrainingError(
            ErrorCode.INVALID_SPEC,
            "data.augmentation found no input text to change: plain `text` rows of causal_lm are all target; "
            "set data.augmentation.augment_targets=true to augment them.",
            "data.augmentation.augment_targets",
        )
    return rows + added, len(added)
