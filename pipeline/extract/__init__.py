"""Extract stage: crawled HTML (WARC) -> main text, title, date, author, language, filtered documents.

    webtext extract --run-dir runs/x

Docs partition i is made from crawl partition i: every row of `crawl/log/part-i.parquet` whose reason is
"ok" names a WARC response record (`warc_file`, `warc_offset`); its body is decoded, its main text
extracted, its language identified and the text filtered. Reddit metadata comes from `urls/part-i.parquet`,
joined on url. Every "ok" row ends up either in the docs or in the rejects, under one reason.

Output `docs/part-NNNNN.parquet`, sorted by doc_id, one row per kept document:

    doc_id str (hex sha1 of the normalized url), url, final_url, domain, title (str, the page's headline
    without the site's name, "" if none), text (the main text, opening with the title line),
    date (str|null, YYYY-MM-DD), author (str|null), language (str), language_score (float64, probability),
    chars (int64), words (int64, whitespace tokens), extractor (str: trafilatura|newspaper|resiliparse),
    score_sum (int64), score_max (int64), num_submissions (int32), reddit_ids (list<str>),
    subreddits (list<str>), created_utc (int64), warc_file (str), warc_offset (int64), fetched_at (str),
    source, capture_time, archive_url (str or null: the crawl log's provenance, "archive" with the capture)

`docs/rejects/part-NNNNN.parquet` (url, reason, detail), sorted by url, one row per dropped document.
Reasons (pipeline/reasons.py; counted in the commit and `docs/stats.json`): warc_unreadable, binary,
extract_timeout, extract_crash, extract_empty, too_short, too_long, language, and the junk heuristics
(junk_symbols, junk_alpha_words, junk_repeated_lines, junk_no_punct, junk_short_words, junk_long_words).
The commit's info counts the winning extractor per kept document (extractor_trafilatura, ...), newspaper
consultations among kept documents, worker starts and extraction seconds.

The package, in the order a page meets it:
  stage.py       the Ray stage: partitions, WARC records, the docs and rejects tables
  isolation.py   the persistent worker process, batches, per-call deadlines (extract_timeout, extract_crash)
  document.py    one page's whole path, run in the worker
  decode.py      bytes -> text: the log's charset or a sniffed one; binary pages (charsets: pipeline/charsets.py)
  extractors.py  one parse per parser; trafilatura, newspaper3k and resiliparse main-content text
  selector.py    which extractor's text is the main text (trafilatura; newspaper3k on English pages it covers poorly)
  score.py       token F1: the selector's agreement measure and the benchmark's scorer
  filters.py     length, language and junk filters, in order
  language.py    fastText lid.176 with a second look when unsure
  heuristics.py  the junk heuristics (Gopher, C4)
  metadata.py    the title line; author and date of kept documents

Determinism: same WARC, log, urls and config -> byte-identical outputs, except that whether a document
times out depends on the machine's speed. benchmarks/extract.py measures F1 and speed.
"""

from pipeline.extract.decode import binary_share, decode_body
from pipeline.extract.document import BATCH_PAGES, extract_documents, process_document, warm_up
from pipeline.extract.extractors import (
    AttributeRegexParser, ParsedPage, load_dom, newspaper_text, parse_page, resiliparse_text, trafilatura_text,
)
from pipeline.extract.filters import filter_document
from pipeline.extract.isolation import IsolatedWorker
from pipeline.extract.language import LANGID_CHARS, classify_language, identify_language
from pipeline.extract.metadata import page_metadata
from pipeline.extract.selector import main_text
from pipeline.extract.stage import DOC_SCHEMA, REJECT_SCHEMA, doc_id, extract_partition, partition_specs, run

__all__ = [
    "BATCH_PAGES", "DOC_SCHEMA", "LANGID_CHARS", "REJECT_SCHEMA", "AttributeRegexParser", "IsolatedWorker",
    "ParsedPage", "binary_share", "classify_language", "decode_body", "doc_id", "extract_documents",
    "extract_partition", "filter_document", "identify_language", "load_dom", "main_text", "newspaper_text",
    "page_metadata", "parse_page", "partition_specs", "process_document", "resiliparse_text", "run",
    "trafilatura_text", "warm_up",
]
