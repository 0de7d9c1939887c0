"""The main text of a page: which extractor's text to keep.

`main_text(page, url, rule) -> {"text", "extractor", "consulted_newspaper", "features"}`. Two opinions
always, a third sometimes:

    trafilatura (fast mode)   always      the primary text
    resiliparse main content  always      high recall, low precision: the yardstick the others are read against
    newspaper3k               sometimes   when trafilatura's text covers little of resiliparse's, on English pages

Features (`agreement_features`, `newspaper_features`): `coverage`, the share of resiliparse's tokens that
trafilatura's text has (token recall, pipeline/extract/score.py); the character lengths of the texts;
`news_precision`, the share of newspaper's tokens that resiliparse's text has. Newspaper is consulted when
trafilatura's text is empty or its coverage is under `rule.consult_below` (`extract.consult_newspaper_below`),
and only on pages whose text fastText reads as English: its content scoring counts English stopwords, so
it must not decide a page in another language or script. Its text is taken when it is at least
`rule.min_length_ratio` times trafilatura's length and at least `rule.min_precision` of it lies within
resiliparse's text (trafilatura stopped at one block of a longer article, and newspaper found the rest,
not a hidden element). Otherwise trafilatura's text is kept, or resiliparse's when trafilatura found none.

`select(traf, res, newspaper, english, rule)` is the same decision on texts already extracted (the
callables are asked only when the rule needs them): the stage calls it through main_text, and
benchmarks/extract.py calls it on cached texts, so both compute the features by this one code path.
The rule's values are chosen by cross-validation on real pages (benchmarks/extract.py --pages).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from pipeline.extract.extractors import ParsedPage, newspaper_text, resiliparse_text, trafilatura_text
from pipeline.extract.language import identify_language
from pipeline.extract.score import token_f1


@dataclass(frozen=True)
class SelectionRule:
    # Newspaper is consulted when trafilatura's coverage of resiliparse's text is under this (0: never).
    consult_below: float = 0.2
    # Newspaper's text must be at least this many times as long as trafilatura's ...
    min_length_ratio: float = 1.25
    # ... and this share of its tokens must be in resiliparse's text.
    min_precision: float = 0.7


def agreement_features(traf: str, res: str) -> dict:
    """Features of trafilatura's and resiliparse's texts (module docstring)."""
    return {"traf_chars": len(traf), "res_chars": len(res), "coverage": token_f1(traf, res)[1] if traf else 0.0}


def newspaper_features(news: str, res: str) -> dict:
    return {"news_chars": len(news), "news_precision": token_f1(news, res)[0] if news else 0.0}


def consults(features: dict, rule: SelectionRule) -> bool:
    """Whether the rule asks newspaper, judged on agreement_features alone."""
    return features["traf_chars"] == 0 or features["coverage"] < rule.consult_below


def pick(features: dict, rule: SelectionRule) -> str:
    """The extractor whose text is kept: newspaper (only when consulted), trafilatura or resiliparse."""
    news = features.get("news_chars", 0)
    longer = news >= rule.min_length_ratio * features["traf_chars"]
    if news and longer and features["news_precision"] >= rule.min_precision:
        return "newspaper"
    return "trafilatura" if features["traf_chars"] else "resiliparse"


def reads_as_english(text: str) -> bool:
    return identify_language(text, 0.0)[0] == "en"


def select(traf: str, res: str, newspaper: Callable[[], str], english: Callable[[str], bool],
           rule: SelectionRule) -> dict:
    """The rule on extracted texts: {"text", "extractor", "consulted_newspaper", "features"}. `newspaper()`
    gives newspaper's text and `english(text)` says whether a text reads as English; each is called only
    when the rule needs it."""
    features = agreement_features(traf, res)
    texts = {"trafilatura": traf, "resiliparse": res}
    consulted = consults(features, rule) and english(traf or res)
    if consulted:
        texts["newspaper"] = newspaper().strip()
        features.update(newspaper_features(texts["newspaper"], res))
    extractor = pick(features, rule)
    return {"text": texts[extractor], "extractor": extractor, "consulted_newspaper": consulted, "features": features}


def main_text(page: ParsedPage, url: str, rule: SelectionRule) -> dict:
    """Main text of a parsed page by the rule above, which extractor won, whether newspaper was asked."""
    if logging.root.manager.disable < logging.WARNING:  # each logging.disable clears every logger's cache
        logging.disable(logging.WARNING)  # trafilatura and newspaper log every odd page
    traf, res = trafilatura_text(page.dom, url).strip(), resiliparse_text(page.tree).strip()
    return select(traf, res, lambda: newspaper_text(page.html), reads_as_english, rule)
