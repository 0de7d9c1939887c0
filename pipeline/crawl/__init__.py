"""Crawl stage: fetch every URL of urls/ politely and safely, store HTML pages as WARC, log every outcome.

    webtext crawl --run-dir runs/x [--set crawl.per_host_delay_s=2]
    webtext crawl --run-dir runs/x --plan      # the projected makespan and the hosts that bound it

Input `urls/part-NNNNN.parquet` (reddit stage; partitions are host-disjoint, so all politeness state of a
host lives in one task and needs no coordination). Crawl partition i = urls partition i, one Ray task each,
running one asyncio crawler. Outputs:

- `crawl/warc/part-NNNNN.warc.gz`: a warcinfo record, then per kept page a response and a request record,
  gzip per record (pipeline/crawl/warc.py). The response's WARC-Target-URI is the final URL (after
  redirects), `WARC-Webtext-Source-URI` the input URL; the payload is the decoded body. Only pages with
  reason "ok" are stored. Records appear in completion order, so WARC bytes (and their record IDs and
  dates) differ between runs; the log's row order does not.
- `crawl/log/part-NNNNN.parquet`: exactly one row per input URL, in input order (sorted by url):
  url (str), final_url (str: last URL requested), status (int32, last HTTP status, 0 if none),
  reason (str, below), content_type (str or null: after sniffing for fetched pages), charset (str or null:
  Python codec name, set for "ok" rows), bytes (int64, decoded body bytes read), elapsed_ms (int64, time in
  requests for this URL, all hops and retries, not counting politeness waits), retries (int32),
  warc_file (str relative to the run dir, or null), warc_offset (int64 offset of the response record's gzip
  member, or null), fetched_at (str, ISO-8601 UTC time the outcome was decided), source (str: "live" or
  "archive", the one that decided the row), capture_time (str or null: ISO-8601 UTC time of the archived
  capture), archive_url (str or null: the chosen capture's replay URL, or its WARC file URL with
  `#bytes=START-END`), live_reason (str or null: the live outcome when live_then_archive then asked the archive).

Sources (crawl.source): "live" (the default) fetches the web as it is now; "archive" fetches every URL from
a web archive, the capture nearest its submission's created_utc (pipeline/crawl/archive.py);
"live_then_archive" fetches live and asks the archive for URLs whose live fetch found no host, no
connection or robots.txt answer, a 404 or a 410, or whose host was given up. An archived page in the WARC
keeps its capture's URL and time (a Common Crawl record is copied as it is).

Reasons (every one but "ok" is a drop key in the commit counts; pipeline/reasons.py holds the vocabulary):
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
  internal_error      a bug in this package; the URL and traceback are printed on stderr
  submission_time_missing   an archive fetch needs the URL's created_utc, and it has none
  archive_no_capture  no capture within crawl.archive.max_distance_days of the submission
  archive_bad_capture the captures in that window are none a 200 HTML page (redirects, errors, other types)
  archive_unavailable the archive's CDX or replay failed or could not be reached (after retries)
  archive_truncated   the archived record is shorter than its index or its headers say
  archive_record_invalid    the index's filename, offset and length do not give one WARC response record

The package, in the order a request meets it:
  checks.py      URL checks, redirect targets, Retry-After          sniff.py     content types
  decode.py      bounded Content-Encoding decoding                  politeness.py  host gates, robots.txt
  netsafe.py     the address rules on every socket (SSRF)            robots.py    robots.txt rules (RFC 9309)
  fetcher.py     one URL: requests, deadlines, retries, redirects    warc.py      the WARC file
  crawler.py     one partition: hosts in flight, host give-up        stage.py     the Ray stage
  log.py         the log schema and the runner's counts             archive.py   CDX, replay, WARC ranges
  plan.py        the makespan plan (webtext crawl --plan)
Charsets come from pipeline/charsets.py (shared with extract). benchmarks/crawl.py measures the stage.
"""

from pipeline.charsets import codec_name, detect_charset
from pipeline.crawl.archive import Archive, CdxCache, choose_capture, parse_cdx
from pipeline.crawl.checks import check_url, parse_url, redirect_target, retry_after_seconds
from pipeline.crawl.crawler import Crawler, crawl_urls
from pipeline.crawl.decode import BodyDecoder
from pipeline.crawl.fetcher import Fetcher, Response
from pipeline.crawl.log import LOG_SCHEMA, FetchError, LogRow, log_table, outcome_counts
from pipeline.crawl.plan import crawl_plan, plan_lines
from pipeline.crawl.politeness import HostGate
from pipeline.crawl.sniff import effective_type, parse_content_type, sniff_type
from pipeline.crawl.stage import crawl_partition, plan_for, report_section, run
from pipeline.crawl.warc import WarcFile

__all__ = [
    "LOG_SCHEMA", "Archive", "BodyDecoder", "CdxCache", "Crawler", "FetchError", "Fetcher", "HostGate", "LogRow",
    "Response", "WarcFile", "check_url", "choose_capture", "codec_name", "crawl_partition", "crawl_plan",
    "crawl_urls", "detect_charset", "effective_type", "log_table", "outcome_counts", "parse_cdx",
    "parse_content_type", "parse_url", "plan_for", "plan_lines", "redirect_target", "report_section",
    "retry_after_seconds", "run", "sniff_type",
]
