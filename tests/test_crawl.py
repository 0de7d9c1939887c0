"""Crawl stage: every hostile behaviour gets its counted outcome, politeness holds on the server's side.

The server (tests/hostile_server.py) is real and listens on several 127.0.0.N addresses, one "host" each.
Tests that fetch from it set allow_private_networks; one shows the default config refuses loopback. No
traffic leaves 127.0.0.0/8: the only names used are `localhost` and one under `.invalid`, both answered by
pipeline/crawl/netsafe.py without a DNS query.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import quote, urlsplit

import pyarrow as pa
import pytest
from warcio.archiveiterator import ArchiveIterator

from hostile_server import JAPANESE, RUSSIAN, HostileServer, page_bytes
from pipeline import crawl, storage
from pipeline.crawl import netsafe, robots
from pipeline.config import Config, CrawlConfig
from pipeline.runner import open_run
from upstream import commit_as_upstream

MAIN, DISALLOW, ROBOTS_500, ROBOTS_404, CRAWL_DELAY, CRAWL_DELAY_CAPPED = (f"127.0.0.{n}" for n in range(1, 7))
POLITE = [f"127.0.0.{n}" for n in range(7, 10)]
GIVE_UP, REDIRECT_TARGET = "127.0.0.10", "127.0.0.11"
NOT_LISTENING = "127.0.0.99"
TOLERANCE_S = 0.01  # timer granularity and loopback delivery; both ends stamp the request on the wire


@pytest.fixture(scope="module")
def server():
    hosts = [MAIN, DISALLOW, ROBOTS_500, ROBOTS_404, CRAWL_DELAY, CRAWL_DELAY_CAPPED, *POLITE, GIVE_UP,
             REDIRECT_TARGET]
    robots_rules = {
        DISALLOW: "User-agent: *\nDisallow: /\n\n"
                  "User-agent: webtext-crawler\nDisallow: /page/private\nAllow: /page/private/open\n",
        ROBOTS_500: 500,
        ROBOTS_404: 404,
        CRAWL_DELAY: "User-agent: *\nCrawl-delay: 0.5\n",
        CRAWL_DELAY_CAPPED: "User-agent: *\nCrawl-delay: 30\n",
    }
    with HostileServer(hosts, robots_rules) as s:
        yield s


def make_config(**overrides) -> CrawlConfig:
    """Small delays and deadlines so the file runs in seconds; loopback allowed (the server lives there)."""
    values = dict(allow_private_networks=True, per_host_delay_s=0.02, delay_jitter=0.0, request_deadline_s=1.5,
                  connect_timeout_s=1.0, robots_timeout_s=1.5, backoff_base_s=0.02, max_retries=2,
                  max_body_bytes=1_000_000)
    return CrawlConfig(**{**values, **overrides})


def crawl_now(urls: list[str], tmp_path: Path, config: CrawlConfig | None = None, address_allowed=None):
    """Run the per-partition crawler directly (no Ray); rows keyed by URL, plus the WARC path."""
    warc_path = tmp_path / f"{uuid.uuid4().hex}.warc.gz"
    hosts = [urlsplit(u).hostname or "" for u in urls]
    with open(warc_path, "wb") as out:
        rows = asyncio.run(crawl.crawl_urls(urls, hosts, config or make_config(), out, "crawl/warc/test.warc.gz",
                                            address_allowed))
    assert [r.url for r in rows] == urls
    return {r.url: r for r in rows}, warc_path


def warc_record(warc_path: Path, offset: int):
    with open(warc_path, "rb") as f:
        f.seek(offset)
        record = next(iter(ArchiveIterator(f)))
        return record, record.content_stream().read()


# ----------------------------------------------------------------------------------------------------------
# Pure logic.


@pytest.mark.parametrize("address, public", [
    ("93.184.216.34", True), ("2606:2800:220:1:248:1893:25c8:1946", True),
    ("127.0.0.1", False), ("127.8.9.10", False), ("10.1.2.3", False), ("172.16.0.1", False),
    ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
    ("224.0.0.1", False), ("239.255.255.250", False), ("240.0.0.1", False), ("255.255.255.255", False),
    ("192.0.2.1", False), ("::1", False), ("::", False), ("fe80::1", False), ("fc00::1", False),
    ("ff02::1", False), ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("::ffff:8.8.8.8", True),
    ("64:ff9b::a00:1", False), ("2002:7f00:1::", False), ("2002:0808:0808::", True),
])
def test_address_policy(address, public):
    ip = ipaddress.ip_address(address)
    assert netsafe.is_public_address(ip) is public
    assert netsafe.address_policy(False)(ip) is public
    assert netsafe.address_policy(True)(ip) is True


def test_robots_rules():
    text = """
    User-agent: *
    Disallow: /

    User-agent: OtherBot
    User-agent: webtext-crawler   # our group, split over two blocks
    Disallow: /private
    Allow: /private/open
    Crawl-delay: 2

    User-agent: webtext-crawler
    Disallow: /*.php$
    Disallow: /search*q=
    """
    rules = robots.parse(text, "webtext-crawler/0.1 (+https://example.invalid)")
    assert rules.crawl_delay == 2.0
    assert rules.allowed("http://h/")  # the "*" group's Disallow: / does not apply to us
    assert not rules.allowed("http://h/private/x")
    assert rules.allowed("http://h/private/open/x")  # longer Allow wins
    assert not rules.allowed("http://h/index.php")
    assert rules.allowed("http://h/index.php?x=1")  # "$" anchors at the end of path and query
    assert not rules.allowed("http://h/search/results?q=cats")
    assert rules.allowed("http://h/robots.txt")
    everyone = robots.parse(text, "SomeoneElse/1.0")
    assert not everyone.allowed("http://h/anything") and everyone.crawl_delay is None
    tie = robots.parse("User-agent: *\nDisallow: /a\nAllow: /a\n", "x")
    assert tie.allowed("http://h/a/b")  # equal length: Allow wins (RFC 9309)


def test_sniffing_and_charset_rules():
    html = b"  <!DOCTYPE html><html><body>hi</body></html>"
    assert crawl.sniff_type(html) == "text/html"
    assert crawl.sniff_type(b"%PDF-1.7 ...") == "application/pdf"
    assert crawl.sniff_type(b"\x00\x01binary") == "application/octet-stream"
    assert crawl.sniff_type(b"just some words") == "text/plain"
    assert crawl.sniff_type(codecs_bom_utf16(b"<html><body>x</body></html>")) == "text/html"
    allowed = ["text/html", "application/xhtml+xml"]
    assert crawl.effective_type("", html, allowed) == "text/html"
    assert crawl.effective_type("text/plain", html, allowed) == "text/html"
    assert crawl.effective_type("text/html", b"\x89PNG\r\n\x1a\n....", allowed) == "image/png"
    assert crawl.effective_type("application/pdf", html, allowed) == "application/pdf"
    # BOM beats the header, the header beats <meta>, <meta> beats detection; latin-1 means windows-1252.
    meta = b'<html><head><meta charset="koi8-r"></head></html>'
    assert crawl.detect_charset("iso-8859-1", b"\xef\xbb\xbf" + meta) == "utf-8"
    assert crawl.detect_charset("iso-8859-1", meta) == "cp1252"
    assert crawl.detect_charset(None, meta) == "koi8-r"
    assert crawl.detect_charset("no-such-charset", meta) == "koi8-r"
    assert crawl.detect_charset(None, b"<html>plain ascii</html>") == "utf-8"


def codecs_bom_utf16(ascii_html: bytes) -> bytes:
    return b"\xff\xfe" + ascii_html.decode("ascii").encode("utf-16-le")


def test_body_decoder_bounds_output():
    import zlib

    bomb = zlib.compress(b"\0" * 20_000_000, 9)
    decoder = crawl.BodyDecoder("deflate")
    assert len(decoder.feed(bomb, 1000)) == 1000  # 20 MB inside, 1000 bytes out
    with pytest.raises(crawl.FetchError, match="decode_error"):
        crawl.BodyDecoder("zstd")
    with pytest.raises(crawl.FetchError, match="decode_error"):
        crawl.BodyDecoder("gzip").feed(b"definitely not gzip", 1000)


# ----------------------------------------------------------------------------------------------------------
# One outcome per hostile endpoint.


@pytest.mark.parametrize("path, reason, status, retries", [
    ("/page/a", "ok", 200, 0),
    ("/redirect/3", "ok", 200, 0),
    ("/redirect/8", "too_many_redirects", 302, 0),
    ("/loop/a", "redirect_loop", 302, 0),
    ("/status/404", "http_404", 404, 0),
    ("/status/410", "http_410", 410, 0),
    ("/flaky/{key}", "ok", 200, 1),
    ("/status/500", "http_500", 500, 2),
    ("/status/429", "http_429", 429, 2),
    ("/drip", "fetch_timeout", 0, 0),
    ("/big/3000000", "too_large", 200, 0),
    ("/bomb/gzip", "too_large", 0, 0),
    ("/bomb/deflate", "too_large", 0, 0),
    ("/bomb/br", "too_large", 0, 0),
    ("/pdf", "unsupported_type", 200, 0),
    ("/png", "unsupported_type", 200, 0),
    ("/no-type", "ok", 200, 0),
    ("/binary-as-html", "unsupported_type", 200, 0),
    ("/malformed", "ok", 200, 0),
    ("/empty", "empty_body", 200, 0),
    ("/reset", "truncated_body", 0, 2),
    ("/short", "truncated_body", 0, 2),
])
def test_endpoint_outcome(server, tmp_path, path, reason, status, retries):
    url = server.url(MAIN, path.format(key=uuid.uuid4().hex))
    rows, _ = crawl_now([url], tmp_path)
    row = rows[url]
    assert (row.reason, row.status, row.retries) == (reason, status, retries)
    page_requests = [a for a in server.requests_to(MAIN, urlsplit(url).path)]
    if reason == "ok":
        assert row.content_type == "text/html" and row.charset == "utf-8" and row.bytes > 0
        assert row.warc_offset is not None and row.warc_file == "crawl/warc/test.warc.gz"
    else:
        assert row.warc_offset is None and row.warc_file is None
    if path.startswith("/status/5") or path.startswith("/status/429") or path in ("/reset", "/short"):
        assert len(page_requests) == 1 + retries  # the server saw every retry


def test_timeout_is_a_wall_clock_deadline(server, tmp_path):
    url = server.url(MAIN, "/drip")
    rows, _ = crawl_now([url], tmp_path, make_config(request_deadline_s=0.8))
    # the drip sends a byte every 50 ms, so a per-read timeout would never fire; the deadline does, on time
    assert rows[url].reason == "fetch_timeout" and 700 <= rows[url].elapsed_ms < 1500


def test_redirect_chain_records_final_url(server, tmp_path):
    url = server.url(MAIN, "/redirect/3")
    rows, warc_path = crawl_now([url], tmp_path)
    assert rows[url].final_url == server.url(MAIN, "/page/final")
    record, payload = warc_record(warc_path, rows[url].warc_offset)
    assert record.rec_type == "response"
    assert record.rec_headers.get_header("WARC-Target-URI") == server.url(MAIN, "/page/final")
    assert record.rec_headers.get_header("WARC-Webtext-Source-URI") == url
    assert payload == page_bytes("/page/final")


def test_warc_holds_decoded_body_and_request(server, tmp_path):
    url = server.url(MAIN, "/gzipped")
    rows, warc_path = crawl_now([url], tmp_path)
    assert rows[url].reason == "ok" and rows[url].bytes == len(page_bytes("/gzipped"))
    record, payload = warc_record(warc_path, rows[url].warc_offset)
    assert payload == page_bytes("/gzipped")
    assert record.http_headers.get_header("X-Crawler-Content-Encoding") == "gzip"
    assert record.http_headers.get_header("Content-Encoding") is None
    with open(warc_path, "rb") as f:  # warcio recomputes each record's block and payload digests as it reads
        types = [r.rec_type for r in ArchiveIterator(f, check_digests="raise")]
    assert types == ["warcinfo", "response", "request"]


@pytest.mark.parametrize("path, charset, text", [
    ("/cp1251-meta", "cp1251", RUSSIAN),
    ("/cp1251-header", "cp1251", RUSSIAN),
    ("/sjis", None, JAPANESE),  # declared nowhere: detected
])
def test_charset_outcomes(server, tmp_path, path, charset, text):
    url = server.url(MAIN, path)
    rows, warc_path = crawl_now([url], tmp_path)
    row = rows[url]
    assert row.reason == "ok"
    if charset:
        assert row.charset == charset
    _, payload = warc_record(warc_path, row.warc_offset)
    assert text in payload.decode(row.charset)  # the page reads back correctly with the logged charset


def test_retry_after_is_honoured(server, tmp_path):
    short = server.url(MAIN, f"/retry-after/1/{uuid.uuid4().hex}")
    long = server.url(MAIN, f"/retry-after/3600/{uuid.uuid4().hex}")
    rows, _ = crawl_now([short, long], tmp_path, make_config(max_retry_after_s=5))
    assert (rows[short].reason, rows[short].retries) == ("ok", 1)
    first, second = server.requests_to(MAIN, urlsplit(short).path)
    assert second.start - first.start >= 1.0 - TOLERANCE_S
    assert (rows[long].reason, rows[long].status, rows[long].retries) == ("http_503", 503, 0)
    assert len(server.requests_to(MAIN, urlsplit(long).path)) == 1


# ----------------------------------------------------------------------------------------------------------
# robots.txt and politeness, checked on the server's access log.


def test_robots_rules_applied(server, tmp_path):
    urls = [server.url(DISALLOW, "/page/x"), server.url(DISALLOW, "/page/private/secret"),
            server.url(DISALLOW, "/page/private/open/x"),
            server.url(ROBOTS_500, "/page/a"), server.url(ROBOTS_500, "/page/b"),
            server.url(ROBOTS_404, "/page/a"), server.url(NOT_LISTENING, "/page/a")]
    rows, _ = crawl_now(urls, tmp_path, make_config(max_retries=1))
    assert [rows[u].reason for u in urls] == ["ok", "robots_disallowed", "ok", "robots_unavailable",
                                             "robots_unavailable", "ok", "robots_unavailable"]
    assert server.requests_to(DISALLOW, "/page/private/secret") == []
    # robots.txt fetched once per host (plus its one retry on 500), and nothing else from the 5xx host
    assert len(server.requests_to(DISALLOW, "/robots.txt")) == 1
    assert [a.path for a in server.requests_to(ROBOTS_500)] == ["/robots.txt", "/robots.txt"]


def host_spacing_and_in_flight(accesses) -> tuple[float, int]:
    starts = sorted(a.start for a in accesses)
    spacing = min(b - a for a, b in zip(starts, starts[1:]))
    events = sorted([(a.start, 1) for a in accesses] + [(a.end, -1) for a in accesses])
    in_flight = peak = 0
    for _, delta in events:
        in_flight += delta
        peak = max(peak, in_flight)
    return spacing, peak


def test_crawl_delay_honoured_up_to_cap(server, tmp_path):
    urls = [server.url(host, f"/page/{i}") for host in (CRAWL_DELAY, CRAWL_DELAY_CAPPED) for i in range(2)]
    rows, _ = crawl_now(urls, tmp_path, make_config(max_crawl_delay_s=0.7))
    assert all(r.reason == "ok" for r in rows.values())
    spacing, _ = host_spacing_and_in_flight(server.requests_to(CRAWL_DELAY))
    assert spacing >= 0.5 - TOLERANCE_S  # Crawl-delay: 0.5 beats per_host_delay_s = 0.02
    capped = sorted(a.start for a in server.requests_to(CRAWL_DELAY_CAPPED))
    gaps = [b - a for a, b in zip(capped, capped[1:])]
    assert min(gaps) >= 0.7 - TOLERANCE_S and max(gaps) < 1.5  # Crawl-delay: 30 capped at 0.7 s


def test_host_overrides_set_the_delay_and_crawl_delay_wins_unless_forced(server, tmp_path):
    from pipeline.config import HostOverride

    tag = uuid.uuid4().hex
    urls = [server.url(host, f"/page/{tag}/{i}") for host in (POLITE[0], CRAWL_DELAY, CRAWL_DELAY_CAPPED)
            for i in range(2)]
    overrides = {POLITE[0]: HostOverride(delay_s=0.3), CRAWL_DELAY: HostOverride(delay_s=0.05),
                 CRAWL_DELAY_CAPPED: HostOverride(delay_s=0.05, force=True)}
    rows, _ = crawl_now(urls, tmp_path, make_config(host_overrides=overrides, max_crawl_delay_s=0.7))
    assert all(r.reason == "ok" for r in rows.values())

    def gaps(host):
        starts = sorted(a.start for a in server.requests_to(host) if tag in a.path)
        return [b - a for a, b in zip(starts, starts[1:])]

    assert min(gaps(POLITE[0])) >= 0.3 - TOLERANCE_S  # the override, not per_host_delay_s = 0.02
    assert min(gaps(CRAWL_DELAY)) >= 0.5 - TOLERANCE_S  # Crawl-delay: 0.5 beats an override that is not forced
    assert max(gaps(CRAWL_DELAY_CAPPED)) < 0.5  # forced: 0.05 s although robots.txt asks for 30 (capped at 0.7)


# With one request in flight per host the delay counts from the previous request's end, so it holds on the
# wire; with two, starts are scheduled delay apart and a request's connection setup can shift its bytes by
# a few milliseconds on a loaded machine.
@pytest.mark.parametrize("concurrency, delay, slow_ms, tolerance", [(1, 0.2, 100, TOLERANCE_S), (2, 0.05, 300, 0.03)])
def test_politeness_seen_by_server(server, tmp_path, concurrency, delay, slow_ms, tolerance):
    tag = uuid.uuid4().hex
    urls = sorted(server.url(host, f"/slow/{slow_ms}/{tag}/{i}") for host in POLITE for i in range(5))
    config = make_config(per_host_concurrency=concurrency, per_host_delay_s=delay, delay_jitter=0.5)
    rows, _ = crawl_now(urls, tmp_path, config)
    assert all(r.reason == "ok" for r in rows.values())
    everything = []
    for host in POLITE:
        accesses = [a for a in server.requests_to(host) if tag in a.path or a.path == "/robots.txt"][-6:]
        everything += accesses
        spacing, peak = host_spacing_and_in_flight(accesses)
        assert spacing >= delay - tolerance
        assert peak == concurrency  # never above the limit, and the limit is used
    _, overall_peak = host_spacing_and_in_flight(everything)
    assert overall_peak >= len(POLITE)  # hosts are crawled at the same time


def test_failing_host_is_given_up(server, tmp_path):
    urls = [server.url(GIVE_UP, f"/status/500?{i}") for i in range(4)]
    rows, _ = crawl_now(urls, tmp_path, make_config(max_retries=0, host_max_failures=2))
    assert [rows[u].reason for u in urls] == ["http_500", "http_500", "host_given_up", "host_given_up"]
    assert len(server.requests_to(GIVE_UP, "/status/500")) == 2


# ----------------------------------------------------------------------------------------------------------
# SSRF safety and bad URLs.


def test_default_config_refuses_loopback(server, tmp_path):
    before = len(server.access_log)
    urls = [server.url(MAIN, "/page/a"), f"http://localhost:{server.port}/page/a", f"http://[::1]:{server.port}/x"]
    rows, _ = crawl_now(urls, tmp_path, CrawlConfig(request_deadline_s=2, connect_timeout_s=1))
    assert [rows[u].reason for u in urls] == ["blocked_address"] * 3
    assert len(server.access_log) == before  # not even robots.txt was requested


def test_every_redirect_hop_is_checked(server, tmp_path):
    before = len(server.requests_to(REDIRECT_TARGET))
    to_private = server.url(MAIN, "/to?url=" + quote(server.url(REDIRECT_TARGET, "/page/x"), safe=""))
    to_file = server.url(MAIN, "/to?url=" + quote("file:///etc/passwd", safe=""))
    to_long = server.url(MAIN, "/to?url=" + quote("/" + "a" * 3000, safe=""))
    only_main = lambda ip: str(ip) == MAIN  # noqa: E731 - the policy under test: 127.0.0.1 is "public" here
    rows, _ = crawl_now([to_private, to_file, to_long], tmp_path, address_allowed=only_main)
    assert rows[to_private].reason == "blocked_address"
    assert rows[to_private].final_url == server.url(REDIRECT_TARGET, "/page/x")
    assert len(server.requests_to(REDIRECT_TARGET)) == before  # refused before connecting
    assert rows[to_file].reason == "url_scheme"
    assert rows[to_long].reason == "url_too_long"


def test_bad_urls_fail_without_traffic(server, tmp_path):
    urls = ["http://no-such-host.invalid/page", f"ftp://{MAIN}/file", "javascript:alert(1)",
            server.url(MAIN, "/page/" + "a" * 3000), "http:///no-host"]
    before = len(server.access_log)
    rows, _ = crawl_now(urls, tmp_path)
    assert [rows[u].reason for u in urls] == ["dns_error", "url_scheme", "url_scheme", "url_too_long",
                                             "url_invalid"]
    assert len(server.access_log) == before


# ----------------------------------------------------------------------------------------------------------
# The stage through the runner and Ray.


def write_urls(run_dir: Path, index: int, urls: list[str]) -> None:
    urls = sorted(urls)
    table = pa.table({"url": urls, "host": [urlsplit(u).hostname for u in urls]})
    storage.write_parquet(run_dir / "urls" / f"part-{index:05d}.parquet", table)


def test_stage_runs_partitions_through_ray(server, tmp_path, ray_session):
    config = Config()
    config.crawl = make_config()
    ctx = open_run(tmp_path / "run", config)
    write_urls(ctx.run_dir, 0, [server.url(MAIN, "/page/one"), server.url(MAIN, "/status/404"),
                                server.url(MAIN, "/pdf")])
    write_urls(ctx.run_dir, 1, [server.url(ROBOTS_404, "/page/two"), server.url(ROBOTS_404, "/redirect/1"),
                                "http://gone.invalid/x"])
    commit_as_upstream(ctx.run_dir, "urls", [["urls/part-00000.parquet"], ["urls/part-00001.parquet"]])
    stats = crawl.run(ctx)
    assert stats["records_in"] == 6 and stats["records_out"] == 3
    assert stats["dropped"] == {"dns_error": 1, "http_404": 1, "unsupported_type": 1}
    for index in (0, 1):
        urls = storage.read_parquet(ctx.run_dir / "urls" / f"part-{index:05d}.parquet").column("url").to_pylist()
        log = storage.read_parquet(ctx.run_dir / "crawl" / "log" / f"part-{index:05d}.parquet")
        assert log.schema == crawl.LOG_SCHEMA
        assert log.column("url").to_pylist() == urls  # one row per input URL, in input order
        commit = json.loads((ctx.run_dir / "crawl" / "_commits" / f"part-{index:05d}.json").read_text())
        reasons = Counter(log.column("reason").to_pylist())
        assert commit["counts"]["out"] == reasons.pop("ok", 0)
        assert {k: v for k, v in commit["counts"].items() if k not in ("in", "out")} == dict(reasons)
        for row in log.to_pylist():
            if row["reason"] == "ok":
                assert row["warc_file"] == f"crawl/warc/part-{index:05d}.warc.gz"
                record, payload = warc_record(ctx.run_dir / row["warc_file"], row["warc_offset"])
                assert record.rec_headers.get_header("WARC-Target-URI") == row["final_url"]
                assert b"A plain page" in payload
    served = len(server.access_log)
    assert crawl.run(ctx)["records_in"] == 6  # committed partitions are skipped: no new requests
    assert len(server.access_log) == served
