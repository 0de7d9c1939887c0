"""Token F1 between two texts: the extraction scorer, and the selector's measure of agreement.

`token_f1(extracted, reference) -> (precision, recall, f1)` compares two texts as bags of whitespace
tokens (the usual article-extraction measure, as in the ScrapingHub and Bevendorff et al. benchmarks):
precision is the share of extracted tokens that are in the reference, recall the share of reference
tokens that were extracted, each token counted as often as it occurs. `mean_f1(pairs)` averages each over
pages. Used by the selector (agreement between candidate texts), benchmarks/extract.py, the dry-run web's
report scorer (pipeline/devweb.py) and the tests.
"""

from __future__ import annotations

from collections import Counter


def token_f1(extracted: str, reference: str) -> tuple[float, float, float]:
    """Bag-of-whitespace-tokens precision, recall and F1 of `extracted` against `reference`.

    Two empty texts agree perfectly (1, 1, 1); one empty text against a non-empty one scores 0.
    """
    got, want = Counter(extracted.split()), Counter(reference.split())
    if not got and not want:
        return 1.0, 1.0, 1.0
    overlap = sum((got & want).values())
    if overlap == 0:
        return 0.0, 0.0, 0.0
    precision, recall = overlap / sum(got.values()), overlap / sum(want.values())
    return precision, recall, 2 * precision * recall / (precision + recall)


def mean_f1(pairs: list[tuple[str, str]]) -> tuple[float, float, float]:
    """(precision, recall, F1) of (extracted, reference) pairs, each averaged over the pairs."""
    scores = [token_f1(extracted, reference) for extracted, reference in pairs]
    return tuple(sum(s[i] for s in scores) / len(scores) for i in range(3))
