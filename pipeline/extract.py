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
    subreddits (list<str>), created_utc (int64), warc_file (str), warc_offset (int64), fetched_at (str)

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
    trafilatura, fast mode          always     ~4 ms/page    the primary text
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
for speed: newspaper costs ~3x trafilatura on each page it is consulted on. At θ = 0.7 the extraction
alone ran at 0.78-0.97x bare trafilatura's speed and the whole per-document path at 0.60-0.63x (two
benchmark runs on a shared 2-core machine at load 2.7-4.5; earlier runs 0.55-0.77x): short of 0.8x.
Per document, in CPU ms on the benchmark's 284 pages (best of 3, same process; the machine's load moves
every number by up to 30%): trafilatura fast 2.4-3.2, newspaper 0.5-0.7 (amortized over the 5% of pages
that consult it), resiliparse parse + text + metadata 0.7, token_f1 agreement 0.1-0.3, all in the worker;
decode and scrub 0.1, py3langid 0.3-0.5, filters 0.2, the round trip 0.1, in the parent. Measured in
place, the parent's share is ~1.5 ms and the worker's ~0.5 ms above the in-process sum: each side wakes
with cold caches once per page (sending 8 pages per round trip saved 10-20% in a trial). Building
trafilatura's options once, parsing once for resiliparse's text and the metadata, and calling
logging.disable once cut extract_main by ~9% (interleaved A/B: median 6.9 vs 7.6 ms) with identical outputs.
Trafilatura's favor_precision and favor_recall gain nothing here; its fast mode (no readability/jusText
fallbacks) gives the same text at ~1.2-1.6x speed.

Isolation. Extraction runs in a persistent child process (`IsolatedWorker`); a document that takes longer
than `timeout_s` gets the child killed (extract_timeout), one that kills it or raises gets extract_crash,
and the next document gets a fresh child. A child per document would cost a Python start plus the
extractors' imports (2-8 s measured here) per page; the persistent one costs a round trip (~0.3 ms).

Language. py3langid (langid.py's model, shipped in the package, 97 languages) on the first 500
characters of the text, with probabilities normalized, so `min_language_score` is a probability. It
labels all 135 texts of the dry-run web correctly (en, de, es, fr, ja, ru) in ~0.5 ms each.
resiliparse's detector is ~50x faster but returns an unnormalized profile distance, not a confidence,
and took Japanese for Chinese in our check.

Filters, in order, each counted under its reason: too_long (chars > max_chars), too_short (GPT-2 tokens
< min_tokens; OpenWebText's 128 is the default; the tokenizer only runs on texts of fewer words than
that, since every word is at least one token), language (not in `languages`, or probability below
`min_language_score`; default English only, as GPT-2's WebText), then the junk heuristics.

Determinism: same WARC, log, urls and config -> byte-identical outputs, except that whether a document
times out depends on the machine's speed.
"""

from __future__ import annotations

import codecs
import copy
import functools
import hashlib
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
from typing import Any, Callable
from urllib.parse import urlsplit

import pyarrow as pa
import trafilatura
from htmldate import find_date
from trafilatura.settings import Extractor
from newspaper.cleaners import DocumentCleaner
from newspaper.configuration import Configuration
from newspaper.extractors import ContentExtractor
from newspaper.outputformatters import OutputFormatter
from newspaper.parsers import Parser
from py3langid.langid import MODEL_FILE, LanguageIdentifier
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import detect_encoding
from resiliparse.parse.html import HTMLTree
from warcio.archiveiterator import ArchiveIterator

from pipeline import storage
from pipeline.config import ConfigError, ExtractConfig
from pipeline.quality import HEURISTICS, junk_reason, token_f1
from pipeline.runner import PartitionResult, RunContext, StageError, run_partitions, summarize, write_stats
from pipeline.tokenizer import get_encoding

PHASE = "docs"
UPSTREAM_SECTIONS = ("reddit", "crawl", "extract")
LANGID_CHARS = 500  # language is decided on this much text; more changes nothing and costs linear time
BINARY_PROBE_CHARS = 8_192
BINARY_MAX_SHARE = 0.1
WORKER_START_TIMEOUT_S = 120.0  # importing the extractors in a fresh child, on a loaded machine

DOC_SCHEMA = pa.schema([
    ("doc_id", pa.string()), ("url", pa.string()), ("final_url", pa.string()), ("domain", pa.string()),
    ("title", pa.string()), ("text", pa.string()), ("date", pa.string()), ("author", pa.string()),
    ("language", pa.string()), ("language_score", pa.float64()), ("chars", pa.int64()), ("words", pa.int64()),
    ("extractor", pa.string()), ("score_sum", pa.int64()), ("score_max", pa.int64()),
    ("num_submissions", pa.int32()), ("reddit_ids", pa.list_(pa.string())), ("subreddits", pa.list_(pa.string())),
    ("created_utc", pa.int64()), ("warc_file", pa.string()), ("warc_offset", pa.int64()), ("fetched_at", pa.string()),
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

def resiliparse_text(html: str | HTMLTree) -> str:
    return extract_plain_text(html, main_content=True, preserve_formatting=True, list_bullets=False)


@functools.cache
def _trafilatura_options() -> Extractor:
    # Building trafilatura's options reads its ConfigParser (~0.2 ms, 5% of its fast extraction), so
    # bare_extraction gets a copy of one built once, with the page's url; it never changes the options.
    return Extractor(output_format="python", fast=True, comments=False)


def trafilatura_text(html: str, url: str) -> str:
    options = copy.copy(_trafilatura_options())
    options.url, options.source = url, url.encode("utf-8", "replace").decode("utf-8")  # as Extractor(url=url)
    doc = trafilatura.bare_extraction(html, options=options)
    return unpipe(doc.text or "") if doc is not None else ""


# <meta> keys (property, name or itemprop, lowercased) that carry each field, most specific first.
TITLE_KEYS = ("og:title", "twitter:title", "headline")
AUTHOR_KEYS = ("author", "article:author", "dc.creator", "byl")


def page_metadata(html: str, tree: HTMLTree) -> dict:
    """Title and author from <meta>, <h1>, <title> and rel=author; publication date (YYYY-MM-DD) by htmldate.

    Trafilatura's own metadata pass costs 2.5 ms per page, half its extraction time; this costs 0.2 ms
    plus htmldate's 0.2-0.6 ms and finds the same dates on the dry-run web (authors only where tagged).
    `tree` is `html` parsed by resiliparse, shared with its main-content extraction.
    """
    meta: dict[str, str] = {}
    for element in tree.document.query_selector_all("meta[content]"):
        key = (element.getattr("property") or element.getattr("name") or element.getattr("itemprop") or "").lower()
        meta.setdefault(key, " ".join(element.getattr("content").split()))
    h1 = tree.body.query_selector("h1") if tree.body else None
    by_line = tree.document.query_selector("[rel=author]")
    title = next((meta[k] for k in TITLE_KEYS if meta.get(k)), "") or (h1 and " ".join(h1.text.split())) or tree.title
    author = next((meta[k] for k in AUTHOR_KEYS if meta.get(k)), "") or (by_line and " ".join(by_line.text.split()))
    try:
        date = find_date(html, original_date=True, outputformat="%Y-%m-%d")
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


def newspaper_text(html: str) -> str:
    """newspaper3k's content algorithm alone (Article.parse minus images, videos, keywords and metadata)."""
    config = Configuration()
    config.fetch_images = False
    dom = Parser.fromstring(html)
    if dom is None:
        return ""
    extractor = ContentExtractor(config)
    top = extractor.calculate_best_node(DocumentCleaner(config).clean(dom))
    if top is None:
        return ""
    text, _ = OutputFormatter(config).get_formatted(extractor.post_cleanup(top))
    return text


def extract_main(html: str, url: str, second_opinion_below: float) -> dict:
    """Main text by the measured rule (module docstring), with title/date/author and which extractor won."""
    if logging.root.manager.disable < logging.WARNING:  # each logging.disable clears every logger's cache
        logging.disable(logging.WARNING)  # trafilatura and newspaper log every odd page
    tree = HTMLTree.parse(html)
    fast = resiliparse_text(tree)
    text = trafilatura_text(html, url)
    agreement = token_f1(text, fast)[2] if text else 0.0
    extractor, consulted = "trafilatura", False
    if agreement < second_opinion_below or not text:
        consulted = True
        news = newspaper_text(html)
        if news.strip() and len(news) >= 0.5 * len(text):
            extractor, text = "newspaper", news
    if not text.strip():
        extractor, text = "resiliparse", fast
    return {**page_metadata(html, tree), "text": text.strip(), "extractor": extractor, "consulted_newspaper": consulted}


# ---------------------------------------------------------------- isolation

def _child_main(fd: int) -> None:
    """Entry point of the worker process: take the parent's sys.path and the function, then serve calls."""
    conn = Connection(fd)
    sys.path[:] = conn.recv()
    fn = conn.recv()
    conn.send(("ready", None))
    while True:
        try:
            args = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", fn(*args)))
        except Exception as err:  # noqa: BLE001 - reported to the parent as extract_crash
            conn.send(("error", f"{type(err).__name__}: {err} | {traceback.format_exc(limit=3)[-400:]}"))


class IsolatedWorker:
    """Runs `fn(*args)` in a persistent child process, one call at a time, each within `timeout_s`.

    `call` returns ("ok", result), ("timeout", detail), ("crash", detail) or ("error", detail). After a
    timeout or crash the child is killed and the next call starts a fresh one. Use as a context manager.
    """

    def __init__(self, fn: Callable, timeout_s: float):
        self.fn, self.timeout_s = fn, timeout_s
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
        self.conn.send(self.fn)
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

    def call(self, *args) -> tuple[str, Any]:
        if self.process is None:
            self._start()
        try:
            self.conn.send(args)
            if self.conn.poll(self.timeout_s):
                return self.conn.recv()
        except (EOFError, OSError):
            try:
                code = self.process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                code = None
            self.stop()
            return "crash", f"worker died (exit code {code})"
        self.stop()
        return "timeout", f"no result within {self.timeout_s}s"

    def __enter__(self) -> "IsolatedWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- language and filters

@functools.cache
def _language_identifier():
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify_language(text: str) -> tuple[str, float]:
    language, probability = _language_identifier().classify(text[:LANGID_CHARS])
    return language, float(probability)


def count_tokens(text: str) -> int:
    return len(get_encoding().encode_ordinary(text))


def filter_reason(text: str, language: str, language_score: float, config: ExtractConfig) -> tuple[str, str] | None:
    """Why a document with this extracted text is dropped, as (reason, detail), or None to keep it."""
    if not text:
        return "extract_empty", "no main text found"
    if len(text) > config.max_chars:
        return "too_long", f"{len(text)} chars > max_chars {config.max_chars}"
    # Every whitespace-separated word is at least one GPT-2 token, so only short texts need the tokenizer.
    tokens = len(text.split())
    if tokens < config.min_tokens and (tokens := count_tokens(text)) < config.min_tokens:
        return "too_short", f"{tokens} tokens < min_tokens {config.min_tokens}"
    if config.languages and (language not in config.languages or language_score < config.min_language_score):
        return "language", f"{language} {language_score:.3f}"
    return junk_reason(text, config)


def check_config(config: ExtractConfig) -> None:
    unknown = [name for name in config.heuristics if name not in HEURISTICS]
    if unknown:
        raise ConfigError(f"extract.heuristics: unknown {unknown}; known: {', '.join(HEURISTICS)}")
    if config.timeout_s <= 0 or config.max_html_bytes <= 0:
        raise ConfigError("extract.timeout_s and extract.max_html_bytes must be positive")


# ---------------------------------------------------------------- one document

def extract_document(body: bytes, charset: str | None, url: str, worker: IsolatedWorker, config: ExtractConfig) -> dict:
    """One crawled body -> {"reason", "detail"} when dropped, else the document's extracted fields."""
    body = body[: config.max_html_bytes]
    html = decode_body(body, charset)
    if binary_share(html) > BINARY_MAX_SHARE:
        return {"reason": "binary", "detail": f"{binary_share(html):.2f} of the first characters undecodable"}
    html = scrub(html)
    status, result = worker.call(html, url, config.second_opinion_below)
    if status != "ok":
        reason = "extract_timeout" if status == "timeout" else "extract_crash"
        return {"reason": reason, "detail": str(result)[:500]}
    text = result["text"]
    language, language_score = identify_language(text) if text else ("", 0.0)
    dropped = filter_reason(text, language, language_score, config)
    if dropped:
        return {"reason": dropped[0], "detail": dropped[1]}
    return {
        "reason": None, "title": result["title"], "text": text, "date": result["date"],
        "author": result["author"], "language": language, "language_score": language_score,
        "chars": len(text), "words": len(text.split()), "extractor": result["extractor"],
        "consulted_newspaper": result["consulted_newspaper"],
    }


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


def extract_partition(spec: dict, ctx: RunContext) -> PartitionResult:
    """Crawl partition spec["index"] -> docs/part-i.parquet and docs/rejects/part-i.parquet."""
    config = ctx.config.extract
    log = storage.read_parquet(ctx.path(spec["log"])).to_pylist()
    urls = {row["url"]: row for row in storage.read_parquet(ctx.path(spec["urls"]), columns=URL_META_COLUMNS).to_pylist()}
    rows = [row for row in log if row["reason"] == "ok"]
    counts, info = Counter(), Counter()
    counts["in"] = len(rows)
    docs, rejects = [], []
    started = time.monotonic()
    with IsolatedWorker(extract_main, config.timeout_s) as worker:
        for row in rows:
            meta = urls.get(row["url"])
            if meta is None:
                raise StageError(
                    f"{spec['log']}: url {row['url']!r} is not in {spec['urls']}; the crawl and url partitions "
                    f"disagree: rerun `webtext crawl` for this run directory"
                )
            try:
                body = read_response_body(ctx.path(row["warc_file"]), row["warc_offset"])
            except Exception as err:  # noqa: BLE001 - a damaged record is counted, the partition goes on
                out = {"reason": "warc_unreadable", "detail": f"{row['warc_file']}@{row['warc_offset']}: {err}"[:500]}
            else:
                out = extract_document(body, row["charset"], row["url"], worker, config)
            if out["reason"]:
                counts[out["reason"]] += 1
                rejects.append({"url": row["url"], "reason": out["reason"], "detail": out["detail"]})
                continue
            counts["out"] += 1
            info[f"extractor_{out['extractor']}"] += 1
            info["consulted_newspaper"] += out.pop("consulted_newspaper")
            del out["reason"]
            docs.append({
                "doc_id": doc_id(row["url"]), "url": row["url"], "final_url": row["final_url"] or row["url"],
                "domain": meta["domain"] or urlsplit(row["url"]).hostname or "", **out,
                **{k: meta[k] for k in URL_META_COLUMNS[2:]},
                "warc_file": row["warc_file"], "warc_offset": row["warc_offset"], "fetched_at": row["fetched_at"],
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
    logs = sorted(ctx.path("crawl", "log").glob("part-*.parquet"))
    if not logs:
        raise StageError(f"{ctx.path('crawl', 'log')}: no crawl logs; run `webtext crawl` first")
    specs = []
    for index, log in enumerate(logs):
        urls = ctx.part_path("urls", index, "parquet")
        if log.name != f"part-{index:05d}.parquet" or not urls.exists():
            raise StageError(f"{log}: crawl partitions must be numbered 0.. and match urls/; rerun `webtext crawl`")
        specs.append({"index": index, "log": ctx.rel(log), "urls": ctx.rel(urls)})
    return specs


def run(ctx: RunContext) -> dict:
    check_config(ctx.config.extract)
    started = time.monotonic()
    commits = run_partitions(ctx, PHASE, partition_specs(ctx), extract_partition, UPSTREAM_SECTIONS)
    return write_stats(ctx, PHASE, summarize(commits, time.monotonic() - started))
