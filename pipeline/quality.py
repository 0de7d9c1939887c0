"""Text quality: the extraction scorer and the junk heuristics the extract stage filters with.

Scorer. `token_f1(extracted, reference) -> (precision, recall, f1)` compares two texts as bags of
whitespace tokens (the usual article-extraction measure, as in the ScrapingHub and Bevendorff et al.
benchmarks): precision is the share of extracted tokens that are in the reference, recall the share of
reference tokens that were extracted, each token counted as often as it occurs. `mean_f1(pairs)` averages
over pages. Both are used by tests/test_extract.py and benchmarks/extract.py.

Heuristics. Each is a function of the extracted text alone that names the junk it catches, with thresholds
taken from Gopher's quality rules (Rae et al. 2021) and C4's line rules (Raffel et al. 2020). Measured on the
true texts of benchmarks/extract.py's 284 articles (the dry-run web's plus generated ones), no article fails
any of them; the last column is the range those articles span:

    name                 rejects a document when ...                                  default  articles
    junk_symbols         ("#" + "..." + "…") per word is above                         0.1      0 - 0.007
    junk_alpha_words     the share of words with at least one letter is below           0.8      0.946 - 1
    junk_repeated_lines  the share of characters in lines repeating an earlier one is   0.3      0 - 0.092
                         above (menus, share bars, link lists)
    junk_no_punct        the share of characters in lines ending in . ! ? " ' ) : etc.  0.5      0.779 - 1
                         is below (C4 drops such lines; we judge the document)
    junk_short_words     the mean word length (characters) is below                     3        4.45 - 5.60
    junk_long_words      the mean word length (characters) is above                     10       4.45 - 5.60

Each is on by default and off when its name is removed from `extract.heuristics`; the thresholds are
`extract.max_symbol_ratio` and friends (pipeline/config.py).
"""

from __future__ import annotations

import typing
from collections import Counter

from pipeline.config import Heuristic

TERMINAL_PUNCTUATION = ('.', '!', '?', '"', "'", ")", ":", "”", "’", "。", "！", "？")


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


def symbol_ratio(text: str) -> float:
    words = text.split()
    return (text.count("#") + text.count("...") + text.count("…")) / max(1, len(words))


def is_letter(char: str) -> bool:
    """What the regex class [^\\W\\d_] matches: alphanumeric, not a decimal digit, not "_"."""
    return char.isalnum() and not char.isdecimal() and char != "_"


def alpha_word_share(text: str) -> float:
    """Share of words with at least one letter (most start with one: checked first, 2.5x faster than a regex)."""
    words = text.split()
    return sum(1 for w in words if w[0].isalpha() or any(map(is_letter, w))) / max(1, len(words))


def repeated_line_share(text: str) -> float:
    """Share of characters in non-empty lines that repeat an earlier line (menus, share bars, link lists)."""
    seen: set[str] = set()
    repeated = total = 0
    for line in (line.strip() for line in text.splitlines()):
        if line:
            total += len(line)
            if line in seen:
                repeated += len(line)
            seen.add(line)
    return repeated / max(1, total)


def punctuated_line_share(text: str) -> float:
    """Share of characters in non-empty lines that end like a sentence (headings and menus do not)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    total = sum(len(line) for line in lines)
    return sum(len(line) for line in lines if line.endswith(TERMINAL_PUNCTUATION)) / max(1, total)


def mean_word_length(text: str) -> float:
    words = text.split()
    return sum(map(len, words)) / max(1, len(words))


# name -> (measure, ExtractConfig field holding the bound, whether the bound is a minimum)
HEURISTICS = {
    "junk_symbols": (symbol_ratio, "max_symbol_ratio", False),
    "junk_alpha_words": (alpha_word_share, "min_alpha_words", True),
    "junk_repeated_lines": (repeated_line_share, "max_repeated_lines", False),
    "junk_no_punct": (punctuated_line_share, "min_punctuated_lines", True),
    "junk_short_words": (mean_word_length, "min_mean_word_length", True),
    "junk_long_words": (mean_word_length, "max_mean_word_length", False),
}
assert tuple(HEURISTICS) == typing.get_args(Heuristic), "extract.heuristics' choices must name these"


def junk_reason(text: str, config) -> tuple[str, str] | None:
    """The first enabled heuristic `text` fails, as (reason, detail), or None when it passes them all.

    `config` is an ExtractConfig: `heuristics` lists the enabled names, the fields in HEURISTICS the bounds.
    """
    values: dict = {}  # measure -> value: junk_short_words and junk_long_words share theirs
    for name in config.heuristics:
        measure, field, is_minimum = HEURISTICS[name]
        if measure not in values:
            values[measure] = measure(text)
        value, bound = values[measure], getattr(config, field)
        if value < bound if is_minimum else value > bound:
            return name, f"{measure.__name__} {value:.3f} {'<' if is_minimum else '>'} {field} {bound}"
    return None
