"""The main text of a page: which extractor's text to keep.

`main_text(page, url, second_opinion_below) -> {"text", "extractor", "consulted_newspaper"}`. Three
opinions, cheapest first: resiliparse's main-content text and trafilatura's (fast + precision) always,
newspaper3k's only when the first two disagree. Trafilatura's text is kept when its token F1 against
resiliparse's text is at least `second_opinion_below`; below that, newspaper3k's text is taken instead,
unless it has under half of trafilatura's characters (newspaper picked one small node). An empty
trafilatura falls back to newspaper, then to resiliparse. benchmarks/extract.py measures the rule.
"""

from __future__ import annotations

import logging

from pipeline.extract.extractors import ParsedPage, newspaper_text, resiliparse_text, trafilatura_text
from pipeline.extract.score import token_f1


def main_text(page: ParsedPage, url: str, second_opinion_below: float) -> dict:
    """Main text by the rule above, which extractor won, whether newspaper was asked."""
    if logging.root.manager.disable < logging.WARNING:  # each logging.disable clears every logger's cache
        logging.disable(logging.WARNING)  # trafilatura and newspaper log every odd page
    fast = resiliparse_text(page.tree)
    text = trafilatura_text(page.dom, url)
    agreement = token_f1(text, fast)[2] if text else 0.0
    extractor, consulted = "trafilatura", False
    if agreement < second_opinion_below or not text:
        consulted = True
        news = newspaper_text(page.html)
        if news.strip() and len(news) >= 0.5 * len(text):
            extractor, text = "newspaper", news
    if not text.strip():
        extractor, text = "resiliparse", fast
    return {"text": text.strip(), "extractor": extractor, "consulted_newspaper": consulted}
