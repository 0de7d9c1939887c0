"""The methods benchmarks/extract.py compares on decoded pages, as functions its worker processes import.

`on_html(name, html, url) -> text` runs the row `name` of ON_HTML on one page: bare trafilatura in its
modes, bare newspaper3k, resiliparse, our rule alone (selection, title line, metadata: no decoding,
language or filters) and the previous rule alone (trafilatura fast + precision, newspaper when its F1
against resiliparse is under 0.7, no title line).
"""

from __future__ import annotations

import copy
import logging

import trafilatura
from trafilatura.settings import Extractor

from pipeline.extract import main_text, newspaper_text, page_metadata, parse_page, resiliparse_text
from pipeline.extract.metadata import page_title, read_meta, with_title
from pipeline.extract.score import token_f1
from pipeline.extract.selector import SelectionRule

PREVIOUS_THETA = 0.7
URL = "http://example.com/a"


def bare_newspaper(html: str) -> str:
    import newspaper

    article = newspaper.Article(URL, language="en", fetch_images=False)
    article.download(input_html=html)
    article.parse()
    return article.text


PRECISION = Extractor(output_format="python", fast=True, precision=True, comments=False)


def trafilatura_precision_text(page, url: str) -> str:
    """What the previous rule ran: trafilatura fast + precision on the shared tree."""
    if page.dom is None:
        return ""
    options = copy.copy(PRECISION)
    options.url = options.source = url
    doc = trafilatura.bare_extraction(page.dom, options=options)
    return (doc.text or "").strip() if doc is not None else ""


def our_rule(html: str, url: str) -> str:
    page = parse_page(html)
    meta = read_meta(page)
    text = with_title(page_title(page, meta), main_text(page, url, SelectionRule())["text"])
    page_metadata(page, meta)
    return text


def previous_rule(html: str, url: str) -> str:
    page = parse_page(html)
    res = resiliparse_text(page.tree).strip()
    text = trafilatura_precision_text(page, url)
    if not text or token_f1(text, res)[2] < PREVIOUS_THETA:
        news = newspaper_text(page.html).strip()
        if news and len(news) >= 0.5 * len(text):
            text = news
    page_metadata(page, read_meta(page))
    return text or res


# name -> fn(html, url) -> text: the rows that run on decoded pages, each in a worker of its own.
ON_HTML = {
    "trafilatura.extract (defaults)": lambda html, url: trafilatura.extract(html) or "",
    "trafilatura, include_comments=False": lambda html, url: trafilatura.extract(html, include_comments=False) or "",
    "trafilatura fast": lambda html, url: trafilatura.extract(html, include_comments=False, fast=True) or "",
    "trafilatura fast + favor_precision":
        lambda html, url: trafilatura.extract(html, include_comments=False, fast=True, favor_precision=True) or "",
    "trafilatura favor_recall":
        lambda html, url: trafilatura.extract(html, include_comments=False, favor_recall=True) or "",
    "newspaper3k (bare)": lambda html, url: bare_newspaper(html),
    "resiliparse main content": lambda html, url: resiliparse_text(html),
    "our rule alone (no filters)": our_rule,
    "previous rule alone (θ = 0.7)": previous_rule,
}


def on_html(name: str, html: str, url: str) -> str:
    """The worker's call for an ON_HTML row."""
    if logging.root.manager.disable < logging.WARNING:
        logging.disable(logging.WARNING)
    return ON_HTML[name](html, url)
