"""Junk heuristics: rules on an extracted text alone, each named by the reason it drops a document under.

    name                 drops a document when ...                                      bound (ExtractConfig)
    junk_symbols         ("#" + "..." + "…") per word is above                          max_symbol_ratio
    junk_alpha_words     the share of words with at least one letter is below            min_alpha_words
    junk_repeated_lines  the share of characters in lines repeating an earlier one is    max_repeated_lines
                         above (menus, share bars, link lists)
    junk_no_punct        sentence ends (. ! ? 。 and other scripts' full stops) per word    min_sentence_ends
                         is below (menus, link and keyword lists)
    junk_short_words     the mean word length (characters) is below                      min_mean_word_length
    junk_long_words      the mean word length (characters) is above                      max_mean_word_length

The rules are Gopher's (Rae et al. 2021), and junk_no_punct stands for C4's rule of sentence punctuation
(Raffel et al. 2020), counted per word rather than per line, so that list items, table rows and texts
that come as one long line are judged by their sentences. Scripts without sentence punctuation (Thai,
Lao) need junk_no_punct off. `junk_reason(text, config)` returns the first enabled rule the text fails,
as (reason, detail), or None. Each is on by default and off when its name is removed from
`extract.heuristics`. The distributions the bounds are chosen from are printed by
`benchmarks/extract.py --pages`.
"""

from __future__ import annotations

import typing

from pipeline.config import Heuristic

# What ends a sentence: the Latin full stop, ! and ?, and the full stops of other scripts (CJK, Devanagari,
# Arabic, Urdu, Armenian, Ethiopic, Myanmar); a word ends a sentence when it ends in one of them before
# closing quotes and brackets. CJK text has no spaces, so its full-width stops count wherever they are.
SENTENCE_ENDS = (".", "!", "?", "。", "！", "？", "।", "॥", "؟", "۔", "։", "።", "။")
FULL_WIDTH_ENDS = ("。", "！", "？")
CLOSERS = "\"'”’)]»"


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


def sentence_end_share(text: str) -> float:
    """Sentence ends per word (SENTENCE_ENDS): prose has one every few dozen words; menus, link lists,
    keyword lists and tables of names have next to none."""
    words = text.split()
    ends = 0
    for word in words:
        if word.isascii():
            ends += word.rstrip(CLOSERS).endswith(SENTENCE_ENDS[:3])
        else:
            ends += max(word.rstrip(CLOSERS).endswith(SENTENCE_ENDS), sum(map(word.count, FULL_WIDTH_ENDS)))
    return ends / max(1, len(words))


def mean_word_length(text: str) -> float:
    words = text.split()
    return sum(map(len, words)) / max(1, len(words))


# name -> (measure, ExtractConfig field holding the bound, whether the bound is a minimum)
HEURISTICS = {
    "junk_symbols": (symbol_ratio, "max_symbol_ratio", False),
    "junk_alpha_words": (alpha_word_share, "min_alpha_words", True),
    "junk_repeated_lines": (repeated_line_share, "max_repeated_lines", False),
    "junk_no_punct": (sentence_end_share, "min_sentence_ends", True),
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
