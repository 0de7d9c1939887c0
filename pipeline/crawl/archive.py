"""Fetching a URL as a web archive holds it near a time: a CDX index for the captures, then the raw capture.

`Archive.fetch(url, when)` returns the URL's log row (source "archive", capture_time, archive_url) and what
to store: the replayed response, or a WARC record copied as it came.

- Which capture: the one closest to `when` (the submission's created_utc) among the 200 HTML captures
  within crawl.archive.max_distance_days. The CDX (`crawl.archive.cdx_url`) is asked for up to max_captures
  captures in that window, closest first (`closest`, `sort=closest`, `from`, `to`, `limit`, `output=json`);
  dialect "pywb" (pywb, Common Crawl's index server) answers one JSON object per line, "wayback" (the
  Wayback Machine's CDX server) a JSON array of rows after a header row. A 404 from the CDX means no capture
  (Common Crawl's server answers so). Definite answers (200, 404) are kept in the task's CDX cache, so a
  rerun of the partition does not ask again.
- Replay (`crawl.archive.replay_url`, pywb and the Wayback Machine): the capture is fetched as
  `{replay_url}{timestamp}id_/{url}` (id_: the archived bytes, not rewritten). Before asking the CDX, the
  replay is asked for the submission's own timestamp: archives answer such a request with their closest
  capture (its time in `Memento-Datetime`), so when that capture is a 200 HTML page within the window, it is
  the one the CDX would have chosen, at one request instead of two. Redirects without `Memento-Datetime` are
  the archive's own (to the capture's exact timestamp) and are followed; an archived redirect, error or other
  type sends the URL to the CDX. A 404 without `Memento-Datetime` means the archive has no capture at all.
- WARC range (`crawl.archive.warc_url`, Common Crawl): the CDX row's filename, offset and length give the
  bytes `Range: bytes=offset-(offset+length-1)` of `{warc_url}{filename}`: one gzip member holding one WARC
  response record, checked (complete, one record, a response) and then copied into our WARC as it is, with
  its own WARC-Target-URI and WARC-Date.

Politeness toward an archive is per archive host and separate from live politeness: crawl.archive's
concurrency and delay_s per task, its own retries and backoff, Retry-After on 429 and 503 honoured up to
max_retry_after_s. robots.txt is not asked of archives (their APIs are meant for this). Every archive request
and redirect goes through the same session as live fetches, so the address rules (pipeline/crawl/netsafe.py)
apply to each.

Reasons: archive_no_capture, archive_bad_capture, archive_unavailable, archive_truncated,
archive_record_invalid, submission_time_missing, and those of a page (unsupported_type, too_large, ...).
"""

from __future__ import annotations

import io
import json
import re
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode, urljoin

from warcio.archiveiterator import ArchiveIterator

from pipeline import storage
from pipeline.config import CrawlConfig
from pipeline.crawl.checks import check_url, parse_url, redirect_target
from pipeline.crawl.fetcher import Fetcher, Response, RetryPolicy, Want
from pipeline.crawl.log import LogRow, finish
from pipeline.crawl.politeness import REDIRECT_STATUSES, HostGate

# Outcomes of an archive request that mean the archive, not the page, failed.
UNAVAILABLE = frozenset({"dns_error", "connect_error", "connect_timeout", "tls_error", "fetch_timeout",
                         "bad_response", "url_invalid"})
ORIGINAL_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?original"?')
TIMESTAMP = "%Y%m%d%H%M%S"


@dataclass(frozen=True)
class Capture:
    """One CDX row: when, what (the URL as captured, its status and type) and, for WARC ranges, where."""

    timestamp: str  # 14 digits, UTC
    url: str
    status: int  # 0 when the index has none ("-", revisits)
    mime: str
    filename: str = ""
    offset: int = -1
    length: int = -1


# ----------------------------------------------------------------------------------------------------------
# CDX queries and answers: pure functions.


def timestamp_of(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime(TIMESTAMP)


def capture_datetime(timestamp: str) -> datetime:
    """A CDX timestamp (up to 14 digits, padded with the earliest values) as a UTC datetime."""
    digits = (timestamp + "00000101000000"[len(timestamp):])[:14]
    return datetime.strptime(digits, TIMESTAMP).replace(tzinfo=timezone.utc)


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cdx_query(cdx_url: str, url: str, when: datetime, max_distance_days: float, limit: int) -> str:
    """The CDX request for the captures of `url` within the window around `when`, closest first."""
    window = timedelta(days=max_distance_days)
    params = {"url": url, "output": "json", "closest": timestamp_of(when), "sort": "closest", "limit": limit,
              "from": timestamp_of(when - window), "to": timestamp_of(when + window)}
    return f"{cdx_url}{'&' if '?' in cdx_url else '?'}{urlencode(params)}"


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def parse_cdx(body: bytes, dialect: str) -> list[Capture]:
    """The captures of a CDX answer; ValueError when it is not the dialect's JSON."""
    if dialect == "wayback":
        rows = json.loads(body or b"[]")
        if not rows:
            return []
        header, *rows = rows
        records = [dict(zip(header, row)) for row in rows]
        return [Capture(r["timestamp"], r.get("original", ""), _int(r.get("statuscode"), 0), r.get("mimetype", ""))
                for r in records]
    captures = []
    for line in body.splitlines():
        if line.strip():
            r = json.loads(line)
            captures.append(Capture(r["timestamp"], r.get("url", ""), _int(r.get("status"), 0), r.get("mime", ""),
                                    r.get("filename", ""), _int(r.get("offset"), -1), _int(r.get("length"), -1)))
    return captures


def choose_capture(captures: list[Capture], when: datetime, max_distance_days: float,
                   content_types: list[str]) -> Capture | str:
    """The 200 HTML capture closest to `when` within the window (earlier on a tie), else the reason."""
    window = timedelta(days=max_distance_days)
    near = [c for c in captures if abs(capture_datetime(c.timestamp) - when) <= window]
    if not near:
        return "archive_no_capture"
    good = [c for c in near if c.status == 200 and c.mime.split(";")[0].strip().lower() in content_types]
    if not good:
        return "archive_bad_capture"
    return min(good, key=lambda c: (abs(capture_datetime(c.timestamp) - when), c.timestamp))


def replay_url(prefix: str, timestamp: str, url: str) -> str:
    return f"{prefix}{timestamp}id_/{url}"


def memento_time(response: Response) -> datetime | None:
    """The capture time a replay states (Memento-Datetime, RFC 7089), or None when it states none."""
    value = response.headers.get("Memento-Datetime")
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).astimezone(timezone.utc)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------------------
# A WARC record fetched by byte range.


@dataclass
class ArchivedRecord:
    """A WARC response record as fetched: its gzip member (copied as is) and what the log needs of it."""

    member: bytes
    target_uri: str
    date: str
    status: int
    content_type: str | None
    body: bytes


def read_record(member: bytes, limit: int) -> ArchivedRecord | str:
    """The WARC response record in one gzip member, or the reason it cannot be used."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        raw = inflate.decompress(member, limit + 1)
    except zlib.error:
        return "archive_record_invalid"
    if len(raw) > limit:
        return "too_large"
    if not inflate.eof:
        return "archive_truncated"
    if inflate.unused_data:
        return "archive_record_invalid"  # more than one member: the index's length is wrong
    head_end = raw.find(b"\r\n\r\n")
    declared = re.search(rb"\r\nContent-Length:\s*(\d+)", raw[:head_end], re.IGNORECASE) if head_end > 0 else None
    if declared is None:
        return "archive_record_invalid"
    if len(raw) - (head_end + 4) < int(declared.group(1)):
        return "archive_truncated"
    try:
        record = next(iter(ArchiveIterator(io.BytesIO(raw))))
        if record.rec_type != "response" or record.http_headers is None:
            return "archive_record_invalid"
        body = record.content_stream().read()
    except Exception:  # noqa: BLE001 - warcio raises many types on bad bytes; all mean the same here
        return "archive_record_invalid"
    return ArchivedRecord(member=member, target_uri=record.rec_headers.get_header("WARC-Target-URI") or "",
                          date=record.rec_headers.get_header("WARC-Date") or "",
                          status=int(record.http_headers.get_statuscode() or 0),
                          content_type=record.http_headers.get_header("Content-Type"), body=body)


# ----------------------------------------------------------------------------------------------------------
# The task's CDX cache.


class CdxCache:
    """CDX answers (status, body) by query URL, kept in a JSON-lines file that grows as answers arrive.

    A line per answer, flushed when written, so a task killed mid-partition keeps what it learned; a torn
    last line is ignored. Without a path the cache lives in memory only. An object store has no appends:
    there the file grows locally and replaces the object when the task closes the cache.
    """

    def __init__(self, path: storage.AnyPath | None):
        self.path, self.answers = path, {}
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    self.answers[entry["query"]] = (entry["status"], entry["body"].encode("utf-8"))
                except (ValueError, KeyError, TypeError):
                    continue
        self.file = self.upload = None
        if path is not None and storage.is_object(path):
            self.upload = storage.atomic_path(path)
            local = self.upload.__enter__()
            local.write_text("".join(json.dumps({"query": q, "status": s, "body": b.decode("utf-8", "replace")}) + "\n"
                                     for q, (s, b) in self.answers.items()), encoding="utf-8")
            self.file = open(local, "a", encoding="utf-8")
        elif path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a", encoding="utf-8")

    def get(self, query: str) -> tuple[int, bytes] | None:
        return self.answers.get(query)

    def put(self, query: str, status: int, body: bytes) -> None:
        self.answers[query] = (status, body)
        if self.file is not None:
            self.file.write(json.dumps({"query": query, "status": status,
                                        "body": body.decode("utf-8", "replace")}) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.upload is not None:
            self.upload.__exit__(None, None, None)


# ----------------------------------------------------------------------------------------------------------
# Fetching from the archive.


def forget_page(row: LogRow) -> None:
    """Clear what a replay that was not used wrote into the row (its time and requests stay counted)."""
    row.final_url, row.status, row.content_type, row.charset, row.bytes = row.url, 0, None, None, 0
    row.capture_time = row.archive_url = None


@dataclass
class Stored:
    """What a fetch leaves for the WARC file: a response (live or replayed), or a record copied as is."""

    response: Response | None = None
    record: ArchivedRecord | None = None
    target_uri: str = ""
    date: str = ""


class Archive:
    """One task's archive client: its gates (per archive host), its retries, its CDX cache, the fetcher's session."""

    def __init__(self, config: CrawlConfig, fetcher: Fetcher, cache: CdxCache):
        self.config, self.settings, self.fetcher, self.cache = config, config.archive, fetcher, cache
        a = self.settings
        self.retry = RetryPolicy(a.max_retries, a.backoff_base_s, a.max_retry_after_s)
        self.gates: dict[str, HostGate] = {}
        self.cdx = Want(config.request_deadline_s, config.max_body_bytes)
        self.warc_base = urljoin(a.cdx_url, a.warc_url) if a.warc_url else ""
        self.counts = {"cdx_requests": 0, "cdx_cached": 0, "replay_requests": 0, "range_requests": 0}

    def gate(self, host: str) -> HostGate:
        if host not in self.gates:
            self.gates[host] = HostGate(self.settings.concurrency, self.settings.delay_s, 0.0)
        return self.gates[host]

    async def _get(self, url: str, want: Want, row: LogRow, headers: dict[str, str] | None = None):
        attempt = await self.fetcher.request(url, self.gate(parse_url(url).host or ""), want, self.retry, headers)
        row.retries += attempt.retries
        row.elapsed_s += attempt.elapsed_s
        return attempt

    @staticmethod
    def _failure(error) -> str:
        """The row's reason for a failed archive request: a body cut short, or stalled after its headers (pywb
        waits forever on a truncated record), is archive_truncated; no answer is archive_unavailable."""
        if error.reason == "truncated_body" or (error.reason == "fetch_timeout" and error.mid_body):
            return "archive_truncated"
        return "archive_unavailable" if error.reason in UNAVAILABLE else error.reason

    async def captures(self, url: str, when: datetime, row: LogRow) -> list[Capture] | str:
        """The CDX's captures of `url` near `when` (from the cache when it has the answer), or a reason."""
        a = self.settings
        query = cdx_query(a.cdx_url, url, when, a.max_distance_days, a.max_captures)
        answer = self.cache.get(query)
        if answer is None:
            self.counts["cdx_requests"] += 1
            attempt = await self._get(query, self.cdx, row)
            if attempt.error is not None:
                return self._failure(attempt.error)
            status = attempt.response.status
            if status not in (200, 404):
                return "archive_unavailable"
            answer = (status, attempt.response.body if status == 200 else b"")
            self.cache.put(query, *answer)
        else:
            self.counts["cdx_cached"] += 1
        try:
            return parse_cdx(answer[1], a.dialect) if answer[0] == 200 else []
        except (ValueError, KeyError, TypeError):
            return "archive_unavailable"

    async def chosen_capture(self, row: LogRow, when: datetime) -> Capture | str:
        """The CDX's choice for `row.url` at `when`, or the reason there is none."""
        captures = await self.captures(row.url, when, row)
        if isinstance(captures, str):
            return captures
        return choose_capture(captures, when, self.settings.max_distance_days, self.config.content_types)

    async def fetch(self, url: str, when_utc: int | None) -> tuple[LogRow, Stored | None]:
        """One URL from the archive: its log row, and what to store when the page is kept."""
        row = LogRow(url=url, final_url=url, source="archive")
        problem = check_url(url, self.config.max_url_length)
        if problem:
            return finish(row, problem), None
        if when_utc is None:
            return finish(row, "submission_time_missing"), None
        when = datetime.fromtimestamp(when_utc, timezone.utc)
        if self.settings.replay_url:
            return await self._fetch_replayed(row, when)
        return await self._fetch_range(row, when)

    async def _fetch_replayed(self, row: LogRow, when: datetime) -> tuple[LogRow, Stored | None]:
        a = self.settings
        query = cdx_query(a.cdx_url, row.url, when, a.max_distance_days, a.max_captures)
        if self.cache.get(query) is None:
            outcome = await self._replay(row, timestamp_of(when), when)
            if outcome is not None:
                return outcome
        chosen = await self.chosen_capture(row, when)
        if isinstance(chosen, str):
            return finish(row, chosen), None
        row.archive_url = replay_url(a.replay_url, chosen.timestamp, row.url)
        return await self._replay(row, chosen.timestamp, when, exact=True)

    async def _replay(self, row: LogRow, timestamp: str, when: datetime,
                      exact: bool = False) -> tuple[LogRow, Stored | None] | None:
        """The replay of `row.url` at `timestamp` (`exact`: a capture the CDX chose): the outcome when this
        decides one, None when the CDX must be asked."""
        current = replay_url(self.settings.replay_url, timestamp, row.url)
        seen = {current}
        for _ in range(self.config.max_redirects + 1):
            self.counts["replay_requests"] += 1
            attempt = await self._get(current, self.fetcher.page, row)
            if attempt.error is not None:
                return finish(row, self._failure(attempt.error)), None
            response = attempt.response
            captured = memento_time(response)
            if captured is None:  # not a capture: the archive's own answer
                location = response.headers.get("Location")
                if response.status in REDIRECT_STATUSES and location:  # to the capture's exact timestamp
                    current = redirect_target(current, location)
                    if current in seen or check_url(current, self.config.max_url_length):
                        return finish(row, "archive_unavailable"), None
                    seen.add(current)
                    continue
                if response.status >= 500:
                    return finish(row, "archive_unavailable"), None
                if not exact:
                    return (finish(row, "archive_no_capture"), None) if response.status == 404 else None
                if response.status != 200:
                    return finish(row, "archive_bad_capture"), None
                captured = capture_datetime(timestamp)
            if not exact and abs(captured - when) > timedelta(days=self.settings.max_distance_days):
                return finish(row, "archive_no_capture"), None  # the closest capture of all is outside the window
            if response.status != 200:
                return (finish(row, "archive_bad_capture"), None) if exact else None
            original = ORIGINAL_LINK.search(response.headers.get("Link", ""))
            row.final_url = original.group(1) if original else row.url
            exact_url = replay_url(self.settings.replay_url, timestamp_of(captured), row.url)
            row.status, row.capture_time, row.archive_url = 200, iso(captured), exact_url
            decided, kept = self.fetcher.page_outcome(row, response)
            if kept is not None:
                return decided, Stored(response=kept, target_uri=row.final_url, date=iso(captured))
            if exact:
                return decided, None
            forget_page(row)  # another capture in the window may be an HTML page: the CDX decides
            return None
        return finish(row, "archive_unavailable"), None

    async def _fetch_range(self, row: LogRow, when: datetime) -> tuple[LogRow, Stored | None]:
        chosen = await self.chosen_capture(row, when)
        if isinstance(chosen, str):
            return finish(row, chosen), None
        if chosen.offset < 0 or chosen.length <= 0 or not chosen.filename:
            return finish(row, "archive_record_invalid"), None
        if chosen.length > self.config.max_body_bytes:
            return finish(row, "too_large"), None
        file_url = urljoin(self.warc_base, chosen.filename)
        end = chosen.offset + chosen.length - 1
        row.archive_url = f"{file_url}#bytes={chosen.offset}-{end}"
        self.counts["range_requests"] += 1
        want = Want(self.config.request_deadline_s, chosen.length, body_status=206)
        attempt = await self._get(file_url, want, row, {"Range": f"bytes={chosen.offset}-{end}",
                                                        "Accept-Encoding": "identity"})
        if attempt.error is not None:
            return finish(row, self._failure(attempt.error)), None
        response = attempt.response
        if response.status != 206:
            return finish(row, "archive_unavailable"), None
        record = read_record(response.body, self.config.max_body_bytes)
        if isinstance(record, str):
            return finish(row, record), None
        row.status, row.final_url = record.status, record.target_uri or row.url
        row.capture_time = iso(capture_datetime(chosen.timestamp))
        if record.status != 200:
            return finish(row, "archive_bad_capture"), None
        decided, kept = self.fetcher.body_outcome(row, record.content_type, record.body)
        return decided, Stored(record=record) if kept else None

