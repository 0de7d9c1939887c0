"""Crawling the past: the capture nearest each submission, from a real pywb and a Common-Crawl-style index.

The test builds its web archive: WARC files (pipeline/devarchive.py, warcio) holding two captures of the
same URL years apart, a capture of a page that is dead live, a URL archived only as a 404, a URL whose
closest capture is a 404 while an older one is a page, a capture far from its submission and a truncated
record. The same captures are served two ways, each a real server on 127.0.0.x:

- pywb (`wayback`, from PyPI, in its own virtual environment: $WEBTEXT_PYWB_BIN; the pywb tests are skipped
  with a message when it is missing): its CDX API and `id_` replay;
- Common-Crawl-style: pipeline/devarchive.py's plain server, CDX JSON with filename, offset and length, and
  byte ranges of the WARC files.

A front server before either CDX answers 503 (Retry-After: 1) to the first question about one URL and
counts the questions, so retries and the CDX cache are seen from the server's side. The live web is
tests/hostile_server.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hostile_server import HostileServer
from test_crawl import warc_record as record_at
from pipeline import devarchive, storage
from pipeline.config import ArchiveConfig, Config, CrawlConfig
from pipeline.crawl import crawl_urls
from pipeline.crawl.archive import CdxCache
from pipeline.devweb import free_port
from pipeline.runner import open_run
from upstream import commit_as_upstream

LIVE, PYWB, CC, FRONT, ELSEWHERE = "127.0.0.41", "127.0.0.42", "127.0.0.43", "127.0.0.44", "127.0.0.45"


def day(year: int, month: int = 1, d: int = 1) -> datetime:
    return datetime(year, month, d, tzinfo=timezone.utc)


def html(text: str) -> bytes:
    return f"<!DOCTYPE html><html><head><title>{text}</title></head><body><p>{text}</p></body></html>".encode()


@pytest.fixture(scope="module")
def live():
    with HostileServer([LIVE], {}) as server:
        yield server


class Web:
    """The URLs of the test, their submission times, and what the archive holds for each."""

    def __init__(self, live: HostileServer):
        url = lambda path: live.url(LIVE, path)  # noqa: E731
        self.two = url("/page/two-captures")  # live 200; archived 2006 and 2010
        self.dead = url("/status/404")  # dead live; archived 2007
        self.gone = url("/status/410")  # dead live; never archived
        self.bad = url("/page/archived-as-404")  # archived only as a 404
        self.retry = url("/page/retry")  # closest capture a 404 (2008), an older page (2005): the CDX decides
        self.far = url("/page/far")  # archived 2000, submitted 2010
        self.truncated = url("/page/truncated")  # its record is cut short
        self.captures = [
            devarchive.Capture(self.two, day(2006), html("the page in 2006")),
            devarchive.Capture(self.two, day(2010), html("the page in 2010")),
            devarchive.Capture(self.dead, day(2007), html("the dead page as it was")),
            devarchive.Capture(self.bad, day(2007), b"not found", status=404, content_type="text/plain"),
            devarchive.Capture(self.retry, day(2005), html("the page before it went")),
            devarchive.Capture(self.retry, day(2008), b"not found", status=404, content_type="text/plain"),
            devarchive.Capture(self.far, day(2000), html("long ago")),
        ]
        self.submitted = {self.two: day(2006, 3), self.dead: day(2007, 2), self.gone: day(2007, 2),
                          self.bad: day(2007, 2), self.retry: day(2008, 2), self.far: day(2010),
                          self.truncated: day(2007, 2)}


@pytest.fixture(scope="module")
def web(live, tmp_path_factory) -> tuple[Web, Path, list[dict]]:
    """The archive's WARC files and CDX rows: main.warc.gz, and cut.warc.gz whose one record lost its end."""
    web = Web(live)
    folder = tmp_path_factory.mktemp("archive")
    rows = devarchive.write_warc(folder / "main.warc.gz", web.captures)
    # pywb stalls on a record shorter than its HTTP Content-Length; a range reader sees a gzip member cut short.
    body = html("x" * 5000)
    cut = devarchive.write_warc(folder / "cut.warc.gz", [devarchive.Capture(
        web.truncated, day(2007), body, headers=(("Content-Length", str(len(body) + 20000)),))])
    data = (folder / "cut.warc.gz").read_bytes()
    (folder / "cut.warc.gz").write_bytes(data[:-30])
    devarchive.write_index(folder, rows + cut)
    return web, folder, rows + cut


class Front:
    """A CDX front: 503 with Retry-After: 1 to the first question about a URL containing "retry", then the
    answer of the real CDX behind it; counts the questions per URL."""

    def __init__(self, target_cdx: str):
        self.target, self.asked = target_cdx, Counter()

    def app(self):
        import aiohttp
        from aiohttp import web

        async def cdx(request: web.Request) -> web.Response:
            url = request.query.get("url", "")
            self.asked[url] += 1
            if "retry" in url and self.asked[url] == 1:
                return web.Response(status=503, headers={"Retry-After": "1"}, text="busy")
            async with aiohttp.ClientSession() as session:
                async with session.get(self.target, params=request.query) as answer:
                    return web.Response(status=answer.status, body=await answer.read(),
                                        content_type=answer.content_type)

        async def elsewhere(request: web.Request) -> web.Response:  # a replay that redirects off the archive
            return web.Response(status=302, headers={"Location": f"http://{ELSEWHERE}:{request.url.port}/x"})

        app = web.Application()
        app.router.add_get("/cdx", cdx)
        app.router.add_get("/redirect/{tail:.*}", elsewhere)
        return app


@pytest.fixture(scope="module")
def pywb(web, tmp_path_factory):
    if devarchive.pywb_bin() is None:
        pytest.skip("pywb's `wayback` not found: pip install pywb into its own venv and set WEBTEXT_PYWB_BIN to "
                    "its bin directory (pywb cannot share the project's venv, see pipeline/devarchive.py)")
    _, folder, _ = web
    root = tmp_path_factory.mktemp("pywb")
    with devarchive.serving_pywb(root, [folder / "main.warc.gz", folder / "cut.warc.gz"], PYWB, free_port()) as server:
        base = server.base
        front = Front(base + "cdx")
        with devarchive.serve_app(front.app(), FRONT, free_port()) as front_url:
            yield {"cdx_url": front_url + "/cdx", "replay_url": base, "front": front}


@pytest.fixture(scope="module")
def common_crawl(web):
    _, folder, _ = web
    with devarchive.serving(folder, CC, free_port()) as base:
        front = Front(base + "/cdx")
        with devarchive.serve_app(front.app(), FRONT, free_port()) as front_url:
            yield {"cdx_url": front_url + "/cdx", "warc_url": base + "/warcs/", "front": front}


def config(archive: dict, source: str, **overrides) -> CrawlConfig:
    settings = {k: v for k, v in archive.items() if k in ("cdx_url", "replay_url", "warc_url")}
    values = dict(source=source, allow_private_networks=True, per_host_delay_s=0.01, delay_jitter=0.0,
                  request_deadline_s=1.5, connect_timeout_s=1.0, robots_timeout_s=1.5, backoff_base_s=0.02,
                  max_retries=0, archive=ArchiveConfig(**settings, max_distance_days=3000, delay_s=0.01,
                                                       backoff_base_s=0.05, max_retries=2, max_retry_after_s=5))
    return CrawlConfig(**{**values, **overrides})


def crawl(web: Web, urls: list[str], cfg: CrawlConfig, tmp_path: Path, when: dict | None = None,
          cache: CdxCache | None = None, address_allowed=None):
    """The crawler on `urls` with their submission times; rows by URL and the WARC written."""
    warc = tmp_path / f"{uuid.uuid4().hex}.warc.gz"
    times = [int((when or web.submitted)[u].timestamp()) for u in urls]
    with open(warc, "wb") as out:
        rows = asyncio.run(crawl_urls(urls, [LIVE] * len(urls), cfg, out, "crawl/warc/t.warc.gz", address_allowed,
                                      times, cache))
    return {r.url: r for r in rows}, warc


ARCHIVES = ["pywb", "common_crawl"]


@pytest.fixture(params=ARCHIVES)
def archive(request):
    return request.getfixturevalue(request.param) | {"name": request.param}


# ----------------------------------------------------------------------------------------------------------
# Which capture, and every way it can fail.


@pytest.mark.parametrize("submitted, year, text", [(day(2006, 3), 2006, "the page in 2006"),
                                                   (day(2009, 6), 2010, "the page in 2010")])
def test_archive_picks_the_capture_nearest_the_submission(web, archive, tmp_path, submitted, year, text):
    w, _, _ = web
    rows, warc = crawl(w, [w.two], config(archive, "archive"), tmp_path, when={w.two: submitted})
    row = rows[w.two]
    assert (row.reason, row.source, row.capture_time) == ("ok", "archive", f"{year}-01-01T00:00:00Z")
    record, payload = record_at(warc, row.warc_offset)
    assert payload == html(text)
    assert record.rec_headers.get_header("WARC-Target-URI") == w.two == row.final_url
    assert record.rec_headers.get_header("WARC-Date").startswith(f"{year}-01-01T00:00:00")


def test_each_archive_failure_is_counted_by_its_reason(web, archive, tmp_path):
    w, _, _ = web
    urls = [w.gone, w.bad, w.far, w.truncated, w.retry]
    rows, _ = crawl(w, urls, config(archive, "archive"), tmp_path)
    assert {u: rows[u].reason for u in urls} == {
        w.gone: "archive_no_capture", w.bad: "archive_bad_capture", w.far: "archive_no_capture",
        w.truncated: "archive_truncated", w.retry: "ok"}
    # The CDX answered 503 first; the retry after Retry-After got the 2005 page past the 2008 404 capture.
    assert rows[w.retry].retries >= 1 and rows[w.retry].capture_time == "2005-01-01T00:00:00Z"
    assert archive["front"].asked[w.retry] >= 2


def test_live_then_archive_serves_the_dead_page_from_the_archive(web, archive, live, tmp_path):
    w, _, _ = web
    urls = [w.two, w.dead, w.gone]
    rows, warc = crawl(w, urls, config(archive, "live_then_archive"), tmp_path)
    assert (rows[w.two].reason, rows[w.two].source, rows[w.two].live_reason) == ("ok", "live", None)
    assert rows[w.two].capture_time is None and rows[w.two].archive_url is None
    dead = rows[w.dead]
    assert (dead.reason, dead.source, dead.live_reason, dead.capture_time) == (
        "ok", "archive", "http_404", "2007-01-01T00:00:00Z")
    assert record_at(warc, dead.warc_offset)[1] == html("the dead page as it was")
    assert (rows[w.gone].reason, rows[w.gone].live_reason) == ("archive_no_capture", "http_410")
    _, live_payload = record_at(warc, rows[w.two].warc_offset)
    assert b"two-captures" in live_payload  # the live page, not either capture


def test_common_crawl_record_is_copied_as_it_was(web, common_crawl, tmp_path):
    w, folder, index = web
    rows, warc = crawl(w, [w.dead], config(common_crawl, "archive"), tmp_path)
    row = rows[w.dead]
    source = next(r for r in index if r["url"] == w.dead)
    start, length = int(source["offset"]), int(source["length"])
    original = (folder / source["filename"]).read_bytes()[start:start + length]
    assert row.reason == "ok" and warc.read_bytes()[row.warc_offset:row.warc_offset + length] == original
    assert row.archive_url == f"{common_crawl['warc_url']}main.warc.gz#bytes={start}-{start + length - 1}"


def test_cdx_answers_are_cached_so_a_rerun_does_not_ask_again(web, common_crawl, tmp_path):
    w, _, _ = web
    urls = [w.two, w.gone, w.bad]
    cfg = config(common_crawl, "archive")
    first_cache = CdxCache(tmp_path / "cdx.jsonl")
    first, _ = crawl(w, urls, cfg, tmp_path, cache=first_cache)
    first_cache.close()
    asked = sum(common_crawl["front"].asked[u] for u in urls)
    again_cache = CdxCache(tmp_path / "cdx.jsonl")
    again, _ = crawl(w, urls, cfg, tmp_path, cache=again_cache)
    again_cache.close()
    assert sum(common_crawl["front"].asked[u] for u in urls) == asked  # not one new question
    assert [again[u].reason for u in urls] == [first[u].reason for u in urls] == [
        "ok", "archive_no_capture", "archive_bad_capture"]


# ----------------------------------------------------------------------------------------------------------
# SSRF: the address rules hold for archive requests and their redirects.


def test_default_config_refuses_an_archive_on_loopback(web, common_crawl, tmp_path):
    w, _, _ = web
    cfg = config(common_crawl, "archive", allow_private_networks=False)
    before = sum(common_crawl["front"].asked.values())
    rows, _ = crawl(w, [w.two], cfg, tmp_path)
    assert rows[w.two].reason == "blocked_address"
    assert sum(common_crawl["front"].asked.values()) == before


def test_archive_redirects_are_checked_like_live_ones(web, pywb, tmp_path):
    w, _, _ = web
    front = pywb["cdx_url"].removesuffix("/cdx")
    cfg = config(pywb | {"replay_url": front + "/redirect/"}, "archive")
    only_archive = lambda ip: str(ip) in (FRONT, PYWB)  # noqa: E731 - the policy under test
    rows, _ = crawl(w, [w.two], cfg, tmp_path, address_allowed=only_archive)
    assert rows[w.two].reason == "blocked_address"  # the replay's redirect to another host was refused


# ----------------------------------------------------------------------------------------------------------
# The stage: provenance columns in the log, the CDX cache in the run directory.


@pytest.mark.slow
def test_stage_logs_provenance_and_keeps_its_cdx_cache(web, common_crawl, tmp_path, ray_session):
    import pyarrow as pa

    from pipeline.crawl import LOG_SCHEMA, run

    w, _, _ = web
    full = Config()
    full.crawl = config(common_crawl, "archive")
    ctx = open_run(tmp_path / "run", full)
    urls = sorted([w.two, w.dead, w.gone])
    table = pa.table({"url": urls, "host": [LIVE] * 3, "created_utc": [int(w.submitted[u].timestamp()) for u in urls]})
    storage.write_parquet(ctx.run_dir / "urls" / "part-00000.parquet", table)
    commit_as_upstream(ctx.run_dir, "urls", [["urls/part-00000.parquet"]])
    stats = run(ctx)
    assert stats["records_out"] == 2 and stats["dropped"] == {"archive_no_capture": 1}
    assert stats["info"]["ok_archive"] == 2 and stats["info"]["cdx_requests"] == 3
    log = storage.read_parquet(ctx.run_dir / "crawl" / "log" / "part-00000.parquet")
    assert log.schema == LOG_SCHEMA
    by_url = {r["url"]: r for r in log.to_pylist()}
    assert by_url[w.dead]["capture_time"] == "2007-01-01T00:00:00Z" and by_url[w.dead]["source"] == "archive"
    assert len((ctx.run_dir / "crawl" / "cdx" / "part-00000.jsonl").read_text().splitlines()) == 3


def test_dry_run_web_serves_its_dead_links_from_its_archive(devweb_site, tmp_path):
    from pipeline.devweb import ARCHIVE_HOST

    port = devweb_site["site"]["port"]
    dead = sorted(t["url"] for t in devweb_site["truth"] if t["kind"] == "archived")
    cfg = config({"cdx_url": f"http://{ARCHIVE_HOST}:{port}/cdx", "warc_url": "/warcs/"}, "live_then_archive")
    warc = tmp_path / "dry.warc.gz"
    with open(warc, "wb") as out:
        # a submission time within the test config's 3000-day window of every capture
        rows = asyncio.run(crawl_urls(dead, [u.split("/")[2].split(":")[0] for u in dead], cfg, out, "w.warc.gz",
                                      times=[1800000000] * len(dead)))
    assert len(dead) == 3 and [(r.reason, r.live_reason) for r in rows] == [("ok", "http_404")] * 3
    truth = {t["url"]: t for t in devweb_site["truth"]}
    for row in rows:
        _, payload = record_at(warc, row.warc_offset)
        assert truth[row.url]["text"].split("\n")[0][:60] in payload.decode()


def test_wayback_cdx_answers_are_read_in_their_own_format():
    from pipeline.crawl import choose_capture, parse_cdx

    # The Wayback Machine's CDX server, output=json: a header row, then one array per capture.
    answer = (b'[["urlkey","timestamp","original","mimetype","statuscode","digest","length"],'
              b'["com,example)/a","20050301000000","http://example.com/a","text/html","301","X","300"],'
              b'["com,example)/a","20050101000000","http://example.com/a","text/html","200","Y","9000"],'
              b'["com,example)/a","20070101000000","http://example.com/a","text/html","200","Z","9100"]]')
    captures = parse_cdx(answer, "wayback")
    assert [(c.timestamp, c.status) for c in captures] == [
        ("20050301000000", 301), ("20050101000000", 200), ("20070101000000", 200)]
    chosen = choose_capture(captures, day(2005, 3, 2), 3000, ["text/html"])
    assert chosen.timestamp == "20050101000000"  # the closer 301 is skipped; 2005-01 is nearer than 2007
    assert parse_cdx(b"[]", "wayback") == []
