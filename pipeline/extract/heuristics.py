"""Junk heuristics: rules on an extracted text alone, each named by the reason it drops a document under.

    name                 drops a document when ...                                      bound (ExtractConfig)
    junk_symbols         ("#" + "..." + "…") per word is above                          max_symbol_ratio
    junk_alpha_words     the share of words with at least one letter is below            min_alpha_words
    junk_repeated_lines  the share of characters in lines repeating an earlier one is    max_repeated_lines
                         above (menus, share bars, link lists)
    junk_no_punct        the share of characters in lines ending in . ! ? " ' ) : etc.   min_punctuated_lines
                         is below (C4 drops such lines; we judge the document)
    junk_short_words     the mean word length (characters) is below                      min_mean_word_length
    junk_long_words      the mean word length (characters) is above                      max_mean_word_length

The rules are Gopher's (Rae et al. 2021) and C4's line rule (Raffel et al. 2020). `junk_reason(text,
config)` returns the first enabled rule the text fails, as (reason, detail), or None. Each is on by
default and off when its name is removed from `extract.heuristics`. The distributions the bounds are
chosen from are printed by benchmarks/extract.py.
"""

from __future__ import annotations

import typing

from pipeline.config import Heuristic

TERMINAL_PUNCTUATION = ('.', '!', '?', '"', "'", ")", ":", "”", "’", "。", "！", "？")


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
