"""`text_similarity` metrics, each from the library OpenAI's graders guide names for it: rapidfuzz
(fuzzy_match: `fuzz.ratio`, the normalised Indel similarity), sacrebleu (bleu: sentence BLEU),
nltk (gleu: `sentence_gleu`; meteor: `meteor_score`, whose synonym stage reads nltk's WordNet corpus
where installed and otherwise matches exact words and stems only), Google's rouge-score (rouge_1..rouge_5,
rouge_l: the F-measure). Every score is in [0, 1]. The libraries are imported on first use, so the
contract stays light to import."""

from __future__ import annotations

from functools import cache
from typing import Any

from tuneforge.contract.graders.shapes import SimilarityMetric


def _words(text: str) -> list[str]:
    return text.split()


class _NoSynonyms:
    """Stands in for WordNet where nltk's corpus is not installed: METEOR's synonym stage finds none."""

    def synsets(self, word: str) -> list[Any]:
        return []


@cache
def _wordnet() -> Any:
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet
    except LookupError:
        return _NoSynonyms()


@cache
def _rouge(kind: str) -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=False)


def similarity(metric: SimilarityMetric, text: str, reference: str) -> float:
    if metric is SimilarityMetric.FUZZY_MATCH:
        from rapidfuzz import fuzz

        return float(fuzz.ratio(text, reference)) / 100.0
    if metric is SimilarityMetric.BLEU:
        import sacrebleu

        return float(sacrebleu.sentence_bleu(text, [reference]).score) / 100.0
    if metric is SimilarityMetric.GLEU:
        from nltk.translate.gleu_score import sentence_gleu

        return float(sentence_gleu([_words(reference)], _words(text)))
    if metric is SimilarityMetric.METEOR:
        from nltk.translate.meteor_score import meteor_score

        return float(meteor_score([_words(reference)], _words(text), wordnet=_wordnet()))
    kind = "rougeL" if metric is SimilarityMetric.ROUGE_L else f"rouge{metric.value[-1]}"
    return float(_rouge(kind).score(reference, text)[kind].fmeasure)
