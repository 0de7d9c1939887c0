"""One crawled page -> one document or one drop reason: the per-document path, run in the isolated worker.

`process_document(body, charset, url, config)` decodes (pipeline/extract/decode.py), scrubs
(pipeline/text.py), parses once per parser, picks the main text (pipeline/extract/selector.py) and puts
the page's title on its first line (pipeline/extract/metadata.py), filters it (pipeline/extract/filters.py)
and, for a kept document only, reads its date and author. It returns {"reason", "detail"} for a drop
(binary, extract_empty, too_short, too_long, language, junk_*), else {"reason": None, "language", "language_score", "title",
"date", "author", "text", "chars", "words", "extractor", "consulted_newspaper"}.

`extract_documents(pages, worker, config)` runs a batch of (body, charset, url) pages in an
IsolatedWorker (pipeline/extract/isolation.py), BATCH_PAGES a message as the stage sends them; a page
that hangs or crashes the worker is extract_timeout or extract_crash. `warm_up()` loads, in a fresh
worker, what the first page would otherwise pay for inside its deadline.
"""

from __future__ import annotations

from pipeline.config import ExtractConfig
from pipeline.extract.decode import BINARY_MAX_SHARE, binary_share, decode_body
from pipeline.extract.extractors import parse_page
from pipeline.extract.filters import filter_document
from pipeline.extract.isolation import IsolatedWorker
from pipeline.extract.language import language_model
from pipeline.extract.metadata import page_metadata, page_title, read_meta, with_title
from pipeline.extract.selector import SelectionRule, main_text
from pipeline.text import scrub
from pipeline.tokenizer import get_encoding

BATCH_PAGES = 8  # pages sent to the worker per message: fewer round trips, exact per-page timeouts
# English prose, so that warm_up's main_text consults (and loads) newspaper too.
WARM_UP_PAGE = ("<html><body><h1>Warm up</h1><p>This page warms up the extractors before the first document."
                "</p></body></html>")


def warm_up() -> None:
    """Load what process_document loads on first use (the language model, tiktoken's tables, the extractors'
    lazy imports), so that no document's deadline pays for it."""
    language_model()
    get_encoding()
    page = parse_page(WARM_UP_PAGE)
    main_text(page, "http://localhost/", SelectionRule(consult_below=1.0))
    page_metadata(page, read_meta(page))


def process_document(body: bytes, charset: str | None, url: str, config: ExtractConfig) -> dict:
    """One crawled body (already cut to max_html_bytes) -> {"reason", "detail"} when dropped, else the
    document's extracted fields. Everything a page can make hang or crash runs here, in the worker."""
    html = decode_body(body, charset)
    if binary_share(html) > BINARY_MAX_SHARE:
        return {"reason": "binary", "detail": f"{binary_share(html):.2f} of the first characters undecodable"}
    page = parse_page(scrub(html))
    main = main_text(page, url, SelectionRule(consult_below=config.consult_newspaper_below))
    meta = read_meta(page)
    title = page_title(page, meta)
    text = with_title(title, main["text"])
    kept = filter_document(text, config)
    if kept["reason"]:
        return kept
    return {
        **kept, **page_metadata(page, meta), "title": title, "text": text, "chars": len(text),
        "words": len(text.split()),
        "extractor": main["extractor"], "consulted_newspaper": main["consulted_newspaper"],
    }


def extract_documents(
    pages: list[tuple[bytes, str | None, str]], worker: IsolatedWorker, config: ExtractConfig
) -> list[dict]:
    """(body, charset, url) pages -> process_document's outcome for each, run in `worker` as one batch;
    a page that hangs or crashes the worker gets {"reason": "extract_timeout" | "extract_crash", "detail"}."""
    calls = [(body[: config.max_html_bytes], charset, url, config) for body, charset, url in pages]
    failed = {"timeout": "extract_timeout", "crash": "extract_crash", "error": "extract_crash"}
    return [
        result if status == "ok" else {"reason": failed[status], "detail": str(result)[:500]}
        for status, result in worker.map(calls)
    ]
