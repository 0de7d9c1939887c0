"""Crawl stage: fetch every URL of urls/ politely and safely, store HTML pages as WARC, log every outcome.

    webtext crawl --run-dir runs/x [--set crawl.per_host_delay_s=2]

Input `urls/part-NNNNN.parquet` (reddit stage; partitions are host-disjoint, so all politeness state of a
host lives in one task and needs no coordination). Crawl partition i = urls partition i, one Ray task each,
running one asyncio crawler:

- `crawl/warc/part-NNNNN.warc.gz`: a warcinfo record, then per fetched HTML page a response and a request
  record, gzip per record. The response's WARC-Target-URI is the final URL (after redirects),
  `WARC-Webtext-Source-URI` the input URL. The payload is
  the decoded body: as Common Crawl does, the transfer headers that no longer describe it are renamed
  (`Content-Encoding` -> `X-Crawler-Content-Encoding`, same for Transfer-Encoding and Content-Length) and
  Content-Length is the decoded length, so any WARC reader gets the page bytes back unchanged. Only pages
  with reason "ok" are stored. Records appear in completion order, so WARC bytes (and their record IDs and
  dates) differ between runs; the log's row order does not.
- `crawl/log/part-NNNNN.parquet`: exactly one row per input URL, in input order (sorted by url):
  url (str), final_url (str: last URL requested), status (int32, last HTTP status, 0 if none),
  reason (str, below), content_type (str or null: after sniffing for fetched pages), charset (str or null:
  Python codec name, set for "ok" rows), bytes (int64, decoded body bytes read), elapsed_ms (int64, time in
  requests for this URL, all hops and retries, not counting politeness waits), retries (int32),
  warc_file (str relative to the run dir, or null), warc_offset (int64 offset of the response record's gzip
  member, or null), fetched_at (str, ISO-8601 UTC time the outcome was decided).

Reasons (every one but "ok" is a drop key in the commit counts):
  ok                  200, HTML or XHTML (declared or sniffed), non-empty, within the size cap
  url_too_long        the URL or a redirect target is longer than max_url_length
  url_invalid         unparsable URL or redirect target, or one without a host
  url_scheme          not http or https (input or redirect target)
  robots_disallowed   robots.txt disallows the URL for our user agent
  robots_unavailable  robots.txt answered 5xx or could not be fetched: the whole host is skipped (RFC 9309)
  dns_error           the host name does not resolve
  blocked_address     the host resolves to (or redirects to) a loopback/private/reserved address
  connect_error, connect_timeout, tls_error   no connection (after retries)
  fetch_timeout       the wall-clock deadline per request passed (a slow drip cannot outlast it)
  truncated_body      the connection broke mid-body or delivered less than Content-Length (after retries)
  too_large           decoded body (or Content-Length) over max_body_bytes: compression bombs stop here
  decode_error        Content-Encoding that does not decode or that we did not ask for
  bad_response        a response aiohttp cannot parse as HTTP
  redirect_loop       a redirect leads back to a URL already visited
  too_many_redirects  more than max_redirects hops
  http_NNN            the final status was not 200 (404, 410, 429 or 503 after retries, a 3xx without Location)
  unsupported_type    not HTML/XHTML after sniffing (PDF, images, binary labelled text/html, plain text)
  empty_body          200 with no bytes
  host_given_up       the host failed host_max_failures URLs in a row; its remaining URLs are not tried
  internal_error      a bug in this module; the URL and traceback are printed on stderr

How one URL is fetched: check the URL; for each hop get the origin's robots.txt (cached per task; concurrent
requests for it share one fetch), check the rule, wait for the host's slot (at most per_host_concurrency in
flight; a request starts per_host_delay_s plus jitter, or the robots Crawl-delay up to max_crawl_delay_s,
after both the previous start and the previous end), then send the request under one wall-clock deadline.
Redirects are followed by hand so that every hop gets the scheme, length, loop and robots checks and a fresh
address check. Connection errors, 408, 429 and 5xx are retried with exponential backoff and jitter, or after
Retry-After when the server sends one (longer than max_retry_after_s gives the URL up); both pause the whole
host, not just the URL. Every new connection goes through pipeline/netsafe.py, which refuses forbidden
addresses on the socket about to connect.

Body handling: aiohttp's automatic decompression is off and the body is decoded here chunk by chunk with a
bounded output size (zlib max_length, brotli output_buffer_limit), so a gzip, deflate or brotli bomb costs at
most max_body_bytes of memory. Content type: the declared type decides unless it is missing, generic
(application/octet-stream, text/plain) or HTML whose first bytes are binary or a known file signature, in
which case the bytes decide (a subset of the WHATWG MIME sniffing rules). Charset, in browser order: byte
order mark, Content-Type charset, <meta> in the first 4 KB, then charset-normalizer on the first 64 KB;
WHATWG label rules map latin-1 and ASCII to windows-1252.

Why aiohttp (not httpx): its `socket_factory` hook hands us the exact address of every connection attempt
(the one place an address check cannot be raced by DNS), it exposes the raw byte stream with decompression
off, and its C HTTP parser keeps CPU per page low. benchmarks/crawl.py runs the stage as it runs here: 2
host-disjoint partitions crawled by crawl_partition in 2 processes at once, 1,024 hosts in flight each
(16,000 URLs on 4,000 loopback hosts, 100 ms latency, 50-150 KB pages, 2 shared cores, two runs): 926-949
pages/s with >= 1.1 s between requests to any host, 1.5-1.6 ms CPU per page including robots.txt, the WARC
and the log (the server adds 0.2); the OpenWebText-style thread pool of requests.get in one process (2,048
threads, no politeness) 143-184 pages/s at 6.5-8.7 ms CPU per page: 5.2-6.5x. At 64,000 URLs on 16,000
hosts 1,042-1,047 pages/s; peak RSS of both processes 533-555 MB at 16,000 URLs, 598-600 at 64,000 (332
of it imports). With all hosts in flight from the start (8,000 URLs on 2,000 hosts) the first ~1.8 s are
politeness rather than CPU: every robots.txt at once (a new connection costs 0.6 ms of CPU), then each
host's >= 1 s gap before its first page; that crawl ran at 857-866 pages/s, 4.2-4.4x. The CPU per page
went from 1.8-2.0 ms to 1.5-1.6 by writing the WARC records here (below), running the garbage collector's
youngest generation every 10,000 allocations instead of 700 (`fewer_gc_passes`: 0.2 -> 0.04 ms a page),
parsing each URL once (`parse_url`) and a 1 MB buffer on the WARC file. With 512 hosts in flight per task
politeness capped a crawl near 745 pages/s (207-625 measured).

WARC records are assembled here (the HTTP header blocks as warcio's StatusAndHeaders writes them) and each
is compressed as one gzip member in one call with ISA-L (the `isal` package) at its level 2. On this machine,
per 100 KB HTML page: warcio's own gzip (zlib level 9) 12 ms, zlib level 1 1.1 ms, ISA-L level 2 0.26 ms
(levels 0-2 cost the same) with output as small as zlib level 1's. Any gzip reader (warcio, zlib) reads the
result. warcio's writer, used before, made writing a page's two records cost 0.70 ms (its header bookkeeping,
16 KB payload copies and streamed compression); now 0.52, of which ISA-L is 0.27 and the two SHA-1 digests of
the body 0.12 (WARC 1.1 makes both digests optional; the block digest alone is 0.06).
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import functools
import gc
import hashlib
import random
import re
import sys
import time
import traceback
import uuid
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import BinaryIO, Callable
from urllib.parse import urldefrag, urljoin

import aiohttp
import brotli
import charset_normalizer
from isal import isal_zlib
import pyarrow as pa
import yarl
from multidict import CIMultiDictProxy
from warcio.statusandheaders import StatusAndHeaders

from pipeline import netsafe, robots, storage
from pipeline.config import CrawlConfig
from pipeline.runner import PartitionResult, RunContext, run_partitions, summarize, upstream_partitions, write_stats

LOG_SCHEMA = pa.schema([
    ("url", pa.string()),
    ("final_url", pa.string()),
    ("status", pa.int32()),
    ("reason", pa.string()),
    ("content_type", pa.string()),
    ("charset", pa.string()),
    ("bytes", pa.int64()),
    ("elapsed_ms", pa.int64()),
    ("retries", pa.int32()),
    ("warc_file", pa.string()),
    ("warc_offset", pa.int64()),
    ("fetched_at", pa.string()),
])

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Outcomes that say the host, not the URL, is in trouble; enough of them in a row give the host up.
HOST_FAILURES = frozenset({"connect_error", "connect_timeout", "tls_error", "fetch_timeout", "truncated_body"})
WARC_GZIP_LEVEL = 2  # ISA-L levels are 0-3
WARC_BUFFER = 1 << 20  # bytes gathered per write() to the WARC file: 1 system call per ~35 pages, not 2 per page
SNIFF_BYTES = 1024
META_SCAN_BYTES = 4096
DETECT_BYTES = 65536
READ_CHUNK = 262144  # asyncio receives up to 256 KB at a time; smaller reads would split those
GC_THRESHOLD = 10_000  # youngest-generation threshold while crawling (Python's default: 700)

# ----------------------------------------------------------------------------------------------------------
# Content type and charset: pure functions of headers and bytes.

# Declared types that say nothing about the bytes; the body decides instead.
GENERIC_TYPES = frozenset({"", "application/octet-stream", "text/plain", "unknown/unknown", "application/unknown",
                           "*/*", "binary/octet-stream"})
# File signatures (WHATWG MIME sniffing plus a few common formats): bytes at offset 0 -> type.
SIGNATURES = [
    (b"%PDF-", "application/pdf"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"), (b"\xff\xd8\xff", "image/jpeg"), (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b\x08", "application/gzip"), (b"OggS\x00", "application/ogg"), (b"ID3", "audio/mpeg"),
    (b"\x1aE\xdf\xa3", "video/webm"), (b"%!PS-Adobe-", "application/postscript"), (b"wOFF", "font/woff"),
    (b"wOF2", "font/woff2"), (b"\x00\x00\x01\x00", "image/x-icon"), (b"Rar!\x1a\x07", "application/x-rar"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"), (b"\x7fELF", "application/x-executable"),
]
# A document starting (after whitespace) with one of these, followed by space or ">", is HTML (WHATWG, plus
# <meta> and <link>, which real pages put first often enough).
HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<script", b"<iframe", b"<h1", b"<div", b"<font",
               b"<table", b"<a", b"<style", b"<title", b"<b", b"<body", b"<br", b"<p", b"<meta", b"<link")
BINARY_BYTE = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")
BOMS = [(codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")]
META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)
# WHATWG Encoding Standard: these labels mean windows-1252 in every browser.
WHATWG_ALIASES = {"iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
                  "l1": "cp1252", "ascii": "cp1252", "us-ascii": "cp1252", "x-sjis": "shift_jis"}


def parse_content_type(value: str | None) -> tuple[str, str | None]:
    """'text/html; charset="UTF-8"' -> ("text/html", "UTF-8"); missing -> ("", None)."""
    if not value:
        return "", None
    media, *params = value.split(";")
    charset = None
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'") or None
    return media.strip().lower(), charset


def sniff_type(body: bytes) -> str:
    """The type the first bytes show: a file signature, HTML/XHTML markup, binary bytes, else text/plain."""
    head = body[:SNIFF_BYTES]
    for signature, media in SIGNATURES:
        if head.startswith(signature):
            return media
    if head[4:8] == b"ftyp":
        return "video/mp4"
    text, had_bom = head, False
    for bom, encoding in BOMS:
        if head.startswith(bom):
            text = head[len(bom):].decode(encoding, "ignore").encode("ascii", "ignore")
            had_bom = True
            break
    start = text.lstrip(b"\t\n\x0c\r ").lower()
    if start.startswith(b"<!--"):
        return "text/html"
    for tag in HTML_STARTS:
        if start.startswith(tag) and start[len(tag):len(tag) + 1] in (b" ", b">", b"\t", b"\n", b"\r", b"/"):
            return "text/html"
    if start.startswith(b"<?xml"):
        return "application/xhtml+xml" if b"<html" in start else "text/xml"
    if not had_bom and BINARY_BYTE.search(head):
        return "application/octet-stream"
    return "text/plain"


def effective_type(declared: str, body: bytes, allowed: list[str]) -> str:
    """The content type we believe: the declared one unless it is generic or claims HTML over binary bytes."""
    if declared in GENERIC_TYPES:
        return sniff_type(body)
    if declared in allowed:
        sniffed = sniff_type(body)
        if sniffed not in ("text/html", "application/xhtml+xml", "text/xml", "text/plain"):
            return sniffed  # the header lies: a PDF, an image or binary bytes labelled as HTML
    return declared


def codec_name(label: str | None) -> str | None:
    """A charset label as a Python codec name, with the WHATWG aliases; None when Python has no such codec."""
    if not label:
        return None
    label = label.strip().lower()
    try:
        return codecs.lookup(WHATWG_ALIASES.get(label, label)).name
    except LookupError:
        return None


def detect_charset(declared: str | None, body: bytes) -> str:
    """Charset of an HTML body: BOM, then the header's, then <meta>, then detection, else UTF-8."""
    for bom, encoding in BOMS:
        if body.startswith(bom):
            return encoding
    name = codec_name(declared)
    if name:
        return name
    match = META_CHARSET.search(body[:META_SCAN_BYTES])
    name = codec_name(match.group(1).decode("ascii")) if match else None
    if name:
        # A <meta> that could be read as ASCII cannot be UTF-16 (WHATWG); such pages are really UTF-8.
        return "utf-8" if name.startswith("utf-16") else name
    best = charset_normalizer.from_bytes(body[:DETECT_BYTES]).best()
    if best is None or best.encoding == "ascii":  # pure ASCII reads the same as UTF-8
        return "utf-8"
    return codec_name(best.encoding) or "utf-8"


# ----------------------------------------------------------------------------------------------------------
# URLs, errors and decoding.


class FetchError(Exception):
    """A request that produced no usable response; `reason` is the log reason."""

    def __init__(self, reason: str, retryable: bool = False, status: int = 0):
        super().__init__(reason)
        self.reason, self.retryable, self.status = reason, retryable, status


@functools.lru_cache(maxsize=4096)  # a task has about hosts_in_flight URLs between their check and their send
def parse_url(url: str) -> yarl.URL:
    """yarl.URL(url), cached: each step of a fetch (checks, robots, host gate, request) needs the parsed URL,
    and yarl's own cache (128 URLs) is far smaller than the URLs in flight, so every step parsed it again
    (20 us each for an IP-literal host, 9 for a name)."""
    return yarl.URL(url)


def check_url(url: str, max_length: int) -> str | None:
    """The reason a URL cannot be fetched at all, or None."""
    if len(url) > max_length:
        return "url_too_long"
    try:
        parsed = parse_url(url)
        scheme, host, _ = parsed.scheme, parsed.host, parsed.port
    except (ValueError, TypeError):
        return "url_invalid"
    if scheme not in ("http", "https"):
        return "url_scheme"
    return None if host else "url_invalid"


def redirect_target(current: str, location: str) -> str:
    """Location resolved against the current URL, fragment dropped."""
    return urldefrag(urljoin(current, location.strip()))[0]


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now: a number of seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class BodyDecoder:
    """Content-Encoding decoding with bounded output: `feed` never returns more than `limit` bytes."""

    def __init__(self, encoding: str):
        self.encoding = encoding.strip().lower()
        # Some servers send "deflate" as raw deflate without the zlib header: retried as such on the first chunk.
        self.raw_deflate_fallback = self.encoding == "deflate"
        if self.encoding in ("", "identity"):
            self.inflate = None
        elif self.encoding in ("gzip", "x-gzip"):
            self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.encoding == "deflate":
            self.inflate = zlib.decompressobj(zlib.MAX_WBITS)
        elif self.encoding == "br":
            self.inflate = brotli.Decompressor()
        else:
            raise FetchError("decode_error")

    def feed(self, data: bytes, limit: int) -> bytes:
        try:
            if self.inflate is None:
                return data[:limit]
            if self.encoding == "br":
                return self.inflate.process(data, output_buffer_limit=limit)
            try:
                out = self.inflate.decompress(data, limit)
            except zlib.error:
                if not self.raw_deflate_fallback:
                    raise
                self.inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                out = self.inflate.decompress(data, limit)
            self.raw_deflate_fallback = False
            return out
        except (zlib.error, brotli.error) as err:
            raise FetchError("decode_error") from err


# ----------------------------------------------------------------------------------------------------------
# Politeness.


class HostGate:
    """Per-host politeness: at most `concurrency` requests in flight, starts at least `delay_s` (+ jitter) apart.

    The spacing counts from the later of the previous request's start and the end of the latest finished
    request (response read or failed). A request's bytes leave between its start and its end, so with one
    request in flight per host the spacing holds on the wire even when the event loop stalls.
    """

    def __init__(self, concurrency: int, delay_s: float, jitter: float):
        self.slots = asyncio.Semaphore(concurrency)
        self.delay_s, self.jitter = delay_s, jitter  # delay_s grows when robots.txt asks for a Crawl-delay
        self.last_start = float("-inf")  # event-loop time of the latest reserved (possibly future) start
        self.last_end = float("-inf")
        self.paused_until = float("-inf")

    @contextlib.asynccontextmanager
    async def slot(self):
        async with self.slots:
            loop = asyncio.get_running_loop()
            now = loop.time()
            gap = self.delay_s * (1 + self.jitter * random.random())
            start = max(now, max(self.last_start, self.last_end) + gap, self.paused_until)
            self.last_start = start  # reserved before sleeping: the next waiter queues up behind this start
            if start > now:
                await asyncio.sleep(start - now)
            try:
                yield
            finally:
                self.last_end = loop.time()

    def pause(self, seconds: float) -> None:
        """No request to this host starts in the next `seconds` (backoff, Retry-After)."""
        self.paused_until = max(self.paused_until, asyncio.get_running_loop().time() + seconds)


# ----------------------------------------------------------------------------------------------------------
# WARC output.


def sha1_digest(*parts: bytes) -> str:
    """A WARC digest label as warcio writes it ("sha1:" + base32), of the concatenated parts."""
    digest = hashlib.sha1()
    for part in parts:
        digest.update(part)
    return "sha1:" + base64.b32encode(digest.digest()).decode("ascii")


EMPTY_DIGEST = sha1_digest()
# HTTP transfer headers that no longer describe the stored (decoded) payload: renamed, as Common Crawl does.
TRANSFER_HEADERS = frozenset({"content-encoding", "transfer-encoding", "content-length"})


def http_head(statusline: str, headers: list[tuple[str, str]], *, protocol: str = "",
              request: bool = False) -> bytes:
    """An HTTP header block as warcio's StatusAndHeaders writes it (non-ASCII values %-encoded, RFC 8187)."""
    block = StatusAndHeaders(statusline, headers, protocol=protocol, is_http_request=request)
    block.compute_headers_buffer()
    return block.headers_buff


def record_id() -> str:
    return f"<urn:uuid:{uuid.uuid4()}>"


def warc_record(fields: list[tuple[str, str]], block: list[bytes]) -> bytes:
    """One WARC/1.1 record, uncompressed: `fields`, then WARC-Date and Content-Length, then the block."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # microseconds, as warcio writes 1.1
    head = "".join(f"{name}: {value}\r\n" for name, value in fields)
    length = sum(len(part) for part in block)
    return b"".join([f"WARC/1.1\r\n{head}WARC-Date: {date}\r\nContent-Length: {length}\r\n\r\n".encode(),
                     *block, b"\r\n\r\n"])


class WarcFile:
    """Appends gzip-per-record WARC records to an open binary file and returns response-record offsets.

    The records are assembled here rather than by warcio's writer: its per-record header bookkeeping, 16 KB
    payload copies and streamed compression cost more than the compression itself (see the module docstring).
    Each record is one ISA-L gzip member compressed in one call; the digests are hashed once per byte string.
    """

    def __init__(self, out: BinaryIO, config: CrawlConfig):
        self.out = out
        info = (f"software: webtext crawl (pipeline/crawl.py)\r\nhttp-header-user-agent: {config.user_agent}\r\n"
                f"format: WARC File Format 1.1\r\nrobots: obey\r\n").encode()
        self._append(warc_record([("WARC-Type", "warcinfo"), ("WARC-Record-ID", record_id()),
                                  ("Content-Type", "application/warc-fields"),
                                  ("WARC-Block-Digest", sha1_digest(info))], [info]))

    def _append(self, record: bytes) -> int:
        offset = self.out.tell()
        self.out.write(isal_zlib.compress(record, WARC_GZIP_LEVEL, 16 + isal_zlib.MAX_WBITS))
        return offset

    def write_page(self, source_url: str, response: "Response") -> int:
        """Write the response and request records of a fetched page; return the response record's offset."""
        headers = []
        for name, value in response.raw_headers:
            name = name.decode("latin-1")
            if name.lower() in TRANSFER_HEADERS:
                name = "X-Crawler-" + name
            headers.append((name, value.decode("latin-1")))
        headers.append(("Content-Length", str(len(response.body))))
        head = http_head(f"{response.status} {response.status_text}", headers, protocol=response.protocol)
        response_id = record_id()
        offset = self._append(warc_record([
            ("WARC-Type", "response"), ("WARC-Record-ID", response_id), ("WARC-Target-URI", response.url),
            ("WARC-Webtext-Source-URI", source_url), ("Content-Type", "application/http; msgtype=response"),
            ("WARC-Payload-Digest", sha1_digest(response.body)),
            ("WARC-Block-Digest", sha1_digest(head, response.body))], [head, response.body]))
        request = http_head(f"GET {response.request_target} HTTP/1.1", list(response.request_headers.items()),
                            request=True)
        self._append(warc_record([
            ("WARC-Type", "request"), ("WARC-Record-ID", record_id()), ("WARC-Target-URI", response.url),
            ("WARC-Concurrent-To", response_id),
            ("Content-Type", "application/http; msgtype=request"), ("WARC-Payload-Digest", EMPTY_DIGEST),
            ("WARC-Block-Digest", sha1_digest(request))], [request]))
        return offset


# ----------------------------------------------------------------------------------------------------------
# The crawler.


@dataclass
class Response:
    url: str
    status: int
    status_text: str
    protocol: str
    headers: CIMultiDictProxy  # aiohttp's parsed headers, still readable after the connection is released
    raw_headers: tuple
    request_target: str
    request_headers: dict[str, str]
    body: bytes = b""
    rejected: str | None = None  # a reason decided from the headers alone (type, Content-Length)


@dataclass
class Attempt:
    """A request with its retries: the last response or error, and what it cost."""

    response: Response | None = None
    error: FetchError | None = None
    retries: int = 0
    elapsed_s: float = 0.0


@dataclass
class LogRow:
    url: str
    final_url: str
    status: int = 0
    reason: str = ""
    content_type: str | None = None
    charset: str | None = None
    bytes: int = 0
    elapsed_ms: int = 0
    retries: int = 0
    warc_file: str | None = None
    warc_offset: int | None = None
    fetched_at: str = ""
    elapsed_s: float = field(default=0.0, repr=False)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Crawler:
    """One task's crawler: an aiohttp session, politeness and robots state per host, and the WARC file."""

    def __init__(self, config: CrawlConfig, warc: WarcFile, warc_rel: str,
                 address_allowed: Callable[[netsafe.IPAddress], bool]):
        self.config, self.warc, self.warc_rel = config, warc, warc_rel
        self.gates: dict[str, HostGate] = {}
        self.robots: dict[str, asyncio.Task] = {}
        self.host_failures: Counter = Counter()
        # Ours to close: a connector never closes a resolver it was given, and an unclosed one lets pycares
        # answer lookups still pending (cancelled by a deadline) on the closed loop, a traceback each.
        self.resolver = netsafe.SpecialNameResolver()
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=0,  # HostGate bounds concurrency per host; hosts_in_flight bounds hosts
            # Long enough to reuse a connection for the host's next request, short enough that finished
            # hosts (most Reddit hosts have one URL) do not pile up idle sockets.
            keepalive_timeout=config.per_host_delay_s * (1 + config.delay_jitter) + 1.0,
            resolver=self.resolver,
            socket_factory=netsafe.guarded_socket_factory(address_allowed),
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # decoded here, counting decoded bytes (compression bombs)
            timeout=aiohttp.ClientTimeout(total=None, connect=config.connect_timeout_s),
            headers={"User-Agent": config.user_agent,
                     "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
                     "Accept-Encoding": "gzip, deflate, br"},
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # never route through a proxy from the environment
            max_line_size=65536, max_field_size=65536,  # real sites send long Set-Cookie and CSP headers
        )

    async def close(self) -> None:
        await self.session.close()
        await self.resolver.close()

    def gate(self, host: str) -> HostGate:
        if host not in self.gates:
            c = self.config
            self.gates[host] = HostGate(c.per_host_concurrency, c.per_host_delay_s, c.delay_jitter)
        return self.gates[host]

    # -- one HTTP request ------------------------------------------------------------------------------------

    async def _send(self, url: str, *, page: bool) -> Response:
        """One GET under the wall-clock deadline. Pages: body read only for a 200 that may be HTML."""
        config = self.config
        deadline = config.request_deadline_s if page else config.robots_timeout_s
        limit = config.max_body_bytes if page else config.robots_max_bytes
        got_headers = False
        try:
            async with asyncio.timeout(deadline):
                async with self.session.get(parse_url(url), allow_redirects=False) as resp:
                    got_headers = True
                    response = Response(
                        url=url, status=resp.status, status_text=resp.reason or "",
                        protocol=f"HTTP/{resp.version.major}.{resp.version.minor}",
                        headers=resp.headers, raw_headers=resp.raw_headers,
                        request_target=resp.request_info.url.raw_path_qs,
                        request_headers=dict(resp.request_info.headers))
                    if resp.status != 200:
                        return response
                    declared, _ = parse_content_type(resp.headers.get("Content-Type"))
                    if page and declared not in GENERIC_TYPES and declared not in config.content_types:
                        response.rejected = "unsupported_type"
                        return response
                    if page and (resp.content_length or 0) > limit:
                        response.rejected = "too_large"
                        return response
                    response.body = await self._read_body(resp, limit, truncate=not page)
                    return response
        except FetchError:
            raise
        except aiohttp.ClientConnectorDNSError as err:
            raise FetchError("dns_error") from err
        except aiohttp.ClientConnectorError as err:
            if isinstance(err.os_error, netsafe.BlockedAddressError):
                raise FetchError("blocked_address") from err
            if isinstance(err, aiohttp.ClientSSLError):
                raise FetchError("tls_error", retryable=False) from err
            raise FetchError("connect_error", retryable=True) from err
        except aiohttp.ConnectionTimeoutError as err:
            raise FetchError("connect_timeout", retryable=True) from err
        except TimeoutError as err:
            raise FetchError("fetch_timeout") from err
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
                ConnectionError) as err:
            raise FetchError("truncated_body" if got_headers else "connect_error", retryable=True) from err
        except (aiohttp.InvalidURL, ValueError) as err:
            raise FetchError("url_invalid") from err
        except aiohttp.ClientError as err:
            raise FetchError("bad_response") from err

    async def _read_body(self, resp: aiohttp.ClientResponse, limit: int, truncate: bool) -> bytes:
        """Decoded body, at most `limit` bytes; over it: cut when `truncate`, else FetchError("too_large")."""
        decoder = BodyDecoder(resp.headers.get("Content-Encoding", ""))
        parts, size, raw_size = [], 0, 0
        async for chunk in resp.content.iter_chunked(READ_CHUNK):
            raw_size += len(chunk)
            out = decoder.feed(chunk, limit + 1 - size)
            size += len(out)
            parts.append(out)
            if size > limit or raw_size > limit:
                if truncate:
                    return b"".join(parts)[:limit]
                raise FetchError("too_large")
        return b"".join(parts)

    async def _request(self, url: str, *, page: bool) -> Attempt:
        """GET with retries on connection errors, 408, 429 and 5xx, pausing the host between attempts."""
        config = self.config
        gate = self.gate(parse_url(url).host or "")
        attempt = Attempt()
        while True:
            async with gate.slot():
                started = time.monotonic()
                try:
                    attempt.response, attempt.error = await self._send(url, page=page), None
                except FetchError as err:
                    attempt.response, attempt.error = None, err
                attempt.elapsed_s += time.monotonic() - started
            status = attempt.response.status if attempt.response else 0
            retryable = attempt.error.retryable if attempt.error else status in (408, 429) or status >= 500
            if not retryable or attempt.retries >= config.max_retries:
                return attempt
            wait = config.backoff_base_s * 2 ** attempt.retries * random.uniform(0.5, 1.5)
            if attempt.response is not None:
                retry_after = retry_after_seconds(attempt.response.headers.get("Retry-After"))
                if retry_after is not None:
                    if retry_after > config.max_retry_after_s:
                        return attempt
                    wait = max(wait, retry_after)
            gate.pause(wait)
            attempt.retries += 1

    # -- robots.txt ------------------------------------------------------------------------------------------

    async def robots_for(self, url: str) -> robots.RobotsRules | str:
        """The robots rules of the URL's origin, or the reason the origin is skipped."""
        origin = str(parse_url(url).origin())
        if origin not in self.robots:
            self.robots[origin] = asyncio.ensure_future(self._fetch_robots(origin))
        return await self.robots[origin]

    async def _fetch_robots(self, origin: str) -> robots.RobotsRules | str:
        """RFC 9309: 2xx -> rules; 4xx or too many redirects -> allow all; 5xx or no answer -> skip the host."""
        url, seen = origin + "/robots.txt", set()
        for _ in range(self.config.max_redirects + 1):
            attempt = await self._request(url, page=False)
            if attempt.error is not None:
                reason = attempt.error.reason
                return reason if reason in ("dns_error", "blocked_address") else "robots_unavailable"
            response = attempt.response
            if response.status in REDIRECT_STATUSES and response.headers.get("Location"):
                seen.add(url)
                url = redirect_target(url, response.headers["Location"])
                if url in seen or check_url(url, self.config.max_url_length):
                    return robots.ALLOW_ALL
                continue
            if 200 <= response.status < 300:
                rules = robots.parse(response.body.decode("utf-8", "replace"), self.config.user_agent)
                if rules.crawl_delay:
                    gate = self.gate(yarl.URL(origin).host or "")
                    gate.delay_s = max(gate.delay_s, min(rules.crawl_delay, self.config.max_crawl_delay_s))
                return rules
            if 400 <= response.status < 500:
                return robots.ALLOW_ALL
            return "robots_unavailable"
        return robots.ALLOW_ALL

    # -- one URL ---------------------------------------------------------------------------------------------

    async def fetch(self, url: str) -> LogRow:
        """Fetch one input URL through its redirects; return its log row (the page is in the WARC if ok)."""
        row = LogRow(url=url, final_url=url)
        problem = check_url(url, self.config.max_url_length)
        if problem:
            return self._finish(row, problem)
        current, seen = url, {url}
        for hop in range(self.config.max_redirects + 1):
            row.final_url = current
            rules = await self.robots_for(current)
            if isinstance(rules, str):
                return self._finish(row, rules)
            if not rules.allowed(current):
                return self._finish(row, "robots_disallowed")
            attempt = await self._request(current, page=True)
            row.retries += attempt.retries
            row.elapsed_s += attempt.elapsed_s
            if attempt.error is not None:
                return self._finish(row, attempt.error.reason)
            response = attempt.response
            row.status = response.status
            location = response.headers.get("Location")
            if response.status in REDIRECT_STATUSES and location:
                target = redirect_target(current, location)
                problem = check_url(target, self.config.max_url_length)
                if problem:
                    return self._finish(row, problem)
                if target in seen:
                    return self._finish(row, "redirect_loop")
                if hop == self.config.max_redirects:
                    return self._finish(row, "too_many_redirects")
                seen.add(target)
                current = target
                continue
            if response.status != 200:
                return self._finish(row, f"http_{response.status}")
            return self._page(row, response)
        raise AssertionError("unreachable: every hop returns or continues")

    def _page(self, row: LogRow, response: Response) -> LogRow:
        """The outcome of a 200: type and charset checks, then the WARC records."""
        declared, declared_charset = parse_content_type(response.headers.get("Content-Type"))
        row.bytes = len(response.body)
        row.content_type = declared or None
        if response.rejected:
            return self._finish(row, response.rejected)
        if not response.body:
            return self._finish(row, "empty_body")
        row.content_type = effective_type(declared, response.body, self.config.content_types)
        if row.content_type not in self.config.content_types:
            return self._finish(row, "unsupported_type")
        row.charset = detect_charset(declared_charset, response.body)
        row.warc_file = self.warc_rel
        row.warc_offset = self.warc.write_page(row.url, response)
        return self._finish(row, "ok")

    @staticmethod
    def _finish(row: LogRow, reason: str) -> LogRow:
        row.reason = reason
        row.elapsed_ms = round(row.elapsed_s * 1000)
        row.fetched_at = utc_now()
        return row

    # -- many URLs -------------------------------------------------------------------------------------------

    async def crawl_host(self, host: str, items: list[tuple[int, str]], rows: list[LogRow | None]) -> None:
        """Fetch one host's URLs with per_host_concurrency workers; a failing host is given up."""
        pending = iter(items)

        async def worker():
            for index, url in pending:
                if self.host_failures[host] >= self.config.host_max_failures:
                    rows[index] = self._finish(LogRow(url=url, final_url=url), "host_given_up")
                    continue
                try:
                    row = await self.fetch(url)
                except Exception:  # noqa: BLE001 - one URL must not kill the partition; printed for a bug report
                    print(f"[crawl] internal error on {url}:\n{traceback.format_exc()}", file=sys.stderr)
                    row = self._finish(LogRow(url=url, final_url=url), "internal_error")
                failed = row.reason in HOST_FAILURES or row.reason.startswith("http_5")
                self.host_failures[host] = self.host_failures[host] + 1 if failed else 0
                rows[index] = row

        await asyncio.gather(*(worker() for _ in range(self.config.per_host_concurrency)))

    async def crawl(self, urls: list[str], hosts: list[str]) -> list[LogRow]:
        """Log rows for `urls` in their order; hosts_in_flight hosts at once, the busiest hosts first."""
        by_host: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for index, (url, host) in enumerate(zip(urls, hosts)):
            by_host[host].append((index, url))
        queue = iter(sorted(by_host.items(), key=lambda item: -len(item[1])))
        rows: list[LogRow | None] = [None] * len(urls)

        async def host_worker():
            for host, items in queue:
                await self.crawl_host(host, items, rows)

        await asyncio.gather(*(host_worker() for _ in range(min(self.config.hosts_in_flight, len(by_host)))))
        return rows


async def crawl_urls(urls: list[str], hosts: list[str], config: CrawlConfig, warc_out: BinaryIO, warc_rel: str,
                     address_allowed: Callable[[netsafe.IPAddress], bool] | None = None) -> list[LogRow]:
    """Crawl `urls` (grouped by `hosts`) into the open WARC file `warc_out`; one log row per URL, in order.

    `address_allowed` defaults to the config's policy (public addresses only unless allow_private_networks).
    """
    allowed = address_allowed or netsafe.address_policy(config.allow_private_networks)
    crawler = Crawler(config, WarcFile(warc_out, config), warc_rel, allowed)
    try:
        return await crawler.crawl(urls, hosts)
    finally:
        await crawler.close()


def log_table(rows: list[LogRow]) -> pa.Table:
    columns = {name: [getattr(row, name) for row in rows] for name in LOG_SCHEMA.names}
    return pa.table(columns, schema=LOG_SCHEMA)


def outcome_counts(rows: list[LogRow]) -> dict[str, int]:
    """Runner counts: in = URLs, out = "ok" pages, every other reason a drop key."""
    counts = Counter(row.reason for row in rows)
    return {"in": len(rows), "out": counts.pop("ok", 0), **counts}


# ----------------------------------------------------------------------------------------------------------
# The stage.


@contextlib.contextmanager
def fewer_gc_passes():
    """Run the cyclic garbage collector's youngest generation every GC_THRESHOLD (net) allocations, not 700.

    A crawl keeps thousands of requests alive at once, so at the default every object of a request survives
    several youngest-generation passes and is traversed again in the older ones: 0.20 ms of CPU per page, a
    tenth of the crawler's; at 10,000, 0.04. Pages, coroutines and responses are freed by reference counting
    anyway; only garbage cycles wait a little longer.
    """
    previous = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def crawl_partition(spec: dict, ctx: RunContext) -> PartitionResult:
    """Ray task: crawl one urls partition into crawl/warc/part-N.warc.gz and crawl/log/part-N.parquet."""
    index = spec["index"]
    table = storage.read_parquet(ctx.path(spec["input"]), columns=["url", "host"])
    urls, hosts = table.column("url").to_pylist(), table.column("host").to_pylist()
    warc_path = ctx.path("crawl", "warc", f"part-{index:05d}.warc.gz")
    log_path = ctx.path("crawl", "log", f"part-{index:05d}.parquet")
    with (storage.atomic_path(warc_path) as tmp, open(tmp, "wb", buffering=WARC_BUFFER) as warc_out,
          fewer_gc_passes()):
        rows = asyncio.run(crawl_urls(urls, hosts, ctx.config.crawl, warc_out, ctx.rel(warc_path)))
    storage.write_parquet(log_path, log_table(rows))
    info = {"bytes_ok": sum(r.bytes for r in rows if r.reason == "ok"), "retries": sum(r.retries for r in rows),
            "request_seconds": round(sum(r.elapsed_s for r in rows), 3)}
    return PartitionResult(outcome_counts(rows), [warc_path, log_path], info)


def run(ctx: RunContext) -> dict:
    """Crawl every urls partition (skipping committed ones); write crawl/stats.json."""
    urls = [next(rel for rel in files if rel.startswith("urls/part-")) for files in upstream_partitions(ctx, "urls")]
    specs = [{"index": index, "input": rel, "reads": [rel]} for index, rel in enumerate(urls)]
    started = time.monotonic()
    commits = run_partitions(ctx, "crawl", specs, crawl_partition, ("crawl",))
    return write_stats(ctx, "crawl", summarize(commits, time.monotonic() - started))
