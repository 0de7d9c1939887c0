"""One crawl task's crawler: the URLs of one partition, many hosts at once, each host politely.

`crawl_urls(urls, hosts, config, warc_out, warc_rel)` returns one log row per URL, in input order.

- source "live": hosts are crawled hosts_in_flight at a time, the busiest first; each host's URLs by
  per_host_concurrency workers. A host whose URLs fail host_max_failures times in a row (connection errors,
  timeouts, truncated bodies, 5xx) is given up: its remaining URLs are host_given_up.
- source "archive": every URL from the archive (pipeline/crawl/archive.py) by the capture nearest its
  submission time (`times`: created_utc per URL); hosts_in_flight URLs at once, the archive's own gates
  bounding what reaches it.
- source "live_then_archive": live as above; a URL whose live outcome is in LIVE_FALLBACK (no host, no
  connection, no robots.txt answer, 404, 410, its host given up) is then fetched from the archive, and its
  row says so (source "archive", live_reason the live outcome).

A bug on one URL is internal_error (its traceback on stderr), never a lost partition. Kept pages go to the
WARC file as they complete.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections import Counter, defaultdict
from typing import BinaryIO, Callable

from pipeline.config import CrawlConfig
from pipeline.crawl import netsafe
from pipeline.crawl.archive import Archive, CdxCache, Stored
from pipeline.crawl.fetcher import Fetcher
from pipeline.crawl.log import LogRow, finish
from pipeline.crawl.warc import WarcFile

# Outcomes that say the host, not the URL, is in trouble; enough of them in a row give the host up.
HOST_FAILURES = frozenset({"connect_error", "connect_timeout", "tls_error", "fetch_timeout", "truncated_body"})
# Live outcomes after which live_then_archive asks the archive: the page or its host is gone.
LIVE_FALLBACK = frozenset({"dns_error", "connect_error", "connect_timeout", "tls_error", "robots_unavailable",
                           "http_404", "http_410", "host_given_up"})


class Crawler:
    """One task's crawler: the fetcher (session, politeness, robots.txt), the archive, host failures, the WARC."""

    def __init__(self, config: CrawlConfig, warc: WarcFile, warc_rel: str,
                 address_allowed: Callable[[netsafe.IPAddress], bool], cdx_cache: CdxCache | None = None):
        self.config, self.warc, self.warc_rel = config, warc, warc_rel
        self.fetcher = Fetcher(config, address_allowed)
        self.archive = Archive(config, self.fetcher, cdx_cache or CdxCache(None)) if config.source != "live" else None
        self.host_failures: Counter = Counter()

    async def close(self) -> None:
        await self.fetcher.close()

    async def fetch(self, url: str, when: int | None = None) -> LogRow:
        """One input URL's log row; a kept page is written to the WARC file first."""
        if self.config.source == "archive":
            row, stored = await self.archive.fetch(url, when)
        else:
            row, response = await self.fetcher.fetch_live(url)
            stored = Stored(response=response) if response is not None else None
            if self.archive is not None and row.reason in LIVE_FALLBACK:
                row, stored = await self.from_archive(row, when)
        self.store(row, stored)
        return row

    async def from_archive(self, live: LogRow, when: int | None) -> tuple[LogRow, Stored | None]:
        """The archive's outcome for a URL the live web failed; the row keeps the live reason and its cost."""
        row, stored = await self.archive.fetch(live.url, when)
        row.live_reason = live.reason
        row.retries += live.retries
        row.elapsed_s += live.elapsed_s
        row.elapsed_ms = round(row.elapsed_s * 1000)
        return row, stored

    def store(self, row: LogRow, stored: Stored | None) -> None:
        if stored is None:
            return
        row.warc_file = self.warc_rel
        if stored.record is not None:
            row.warc_offset = self.warc.copy_record(stored.record.member)
        else:
            row.warc_offset = self.warc.write_page(row.url, stored.response, stored.target_uri, stored.date,
                                                   row.archive_url or "")

    async def fetch_safely(self, url: str, when: int | None) -> LogRow:
        try:
            return await self.fetch(url, when)
        except Exception:  # noqa: BLE001 - one URL must not kill the partition; printed for a bug report
            print(f"[crawl] internal error on {url}:\n{traceback.format_exc()}", file=sys.stderr)
            return finish(LogRow(url=url, final_url=url), "internal_error")

    async def crawl_host(self, host: str, items: list[tuple[int, str, int | None]], rows: list[LogRow | None]) -> None:
        """Fetch one host's URLs with per_host_concurrency workers; a failing host is given up."""
        pending = iter(items)

        async def worker():
            for index, url, when in pending:
                if self.host_failures[host] >= self.config.host_max_failures:
                    given_up = finish(LogRow(url=url, final_url=url), "host_given_up")
                    rows[index] = given_up
                    if self.archive is not None:
                        row, stored = await self.from_archive(given_up, when)
                        self.store(row, stored)
                        rows[index] = row
                    continue
                row = await self.fetch_safely(url, when)
                live = row.live_reason or row.reason
                failed = live in HOST_FAILURES or live.startswith("http_5")
                self.host_failures[host] = self.host_failures[host] + 1 if failed else 0
                rows[index] = row

        await asyncio.gather(*(worker() for _ in range(self.config.per_host_concurrency)))

    async def crawl(self, urls: list[str], hosts: list[str], times: list[int | None]) -> list[LogRow]:
        """Log rows for `urls` in their order."""
        rows: list[LogRow | None] = [None] * len(urls)
        if self.config.source == "archive":
            pending = iter(enumerate(urls))

            async def archive_worker():
                for index, url in pending:
                    rows[index] = await self.fetch_safely(url, times[index])

            await asyncio.gather(*(archive_worker() for _ in range(min(self.config.hosts_in_flight, len(urls)))))
            return rows
        by_host: dict[str, list[tuple[int, str, int | None]]] = defaultdict(list)
        for index, (url, host, when) in enumerate(zip(urls, hosts, times)):
            by_host[host].append((index, url, when))
        queue = iter(sorted(by_host.items(), key=lambda item: -len(item[1])))

        async def host_worker():
            for host, items in queue:
                await self.crawl_host(host, items, rows)

        await asyncio.gather(*(host_worker() for _ in range(min(self.config.hosts_in_flight, len(by_host)))))
        return rows


async def crawl_task(urls: list[str], hosts: list[str], config: CrawlConfig, warc_out: BinaryIO, warc_rel: str,
                     address_allowed: Callable[[netsafe.IPAddress], bool] | None = None,
                     times: list[int | None] | None = None,
                     cdx_cache: CdxCache | None = None) -> tuple[list[LogRow], dict[str, int]]:
    """`crawl_urls`, plus the archive's request counts (CDX asked, CDX answers from the cache, replays, ranges)."""
    allowed = address_allowed or netsafe.address_policy(config.allow_private_networks)
    crawler = Crawler(config, WarcFile(warc_out, config), warc_rel, allowed, cdx_cache)
    try:
        rows = await crawler.crawl(urls, hosts, times or [None] * len(urls))
    finally:
        await crawler.close()
    return rows, dict(crawler.archive.counts) if crawler.archive else {}


async def crawl_urls(urls: list[str], hosts: list[str], config: CrawlConfig, warc_out: BinaryIO, warc_rel: str,
                     address_allowed: Callable[[netsafe.IPAddress], bool] | None = None,
                     times: list[int | None] | None = None, cdx_cache: CdxCache | None = None) -> list[LogRow]:
    """Crawl `urls` (grouped by `hosts`; `times`: their submissions' created_utc, for the archive) into the open
    WARC file `warc_out`; one log row per URL, in order.

    `address_allowed` defaults to the config's policy (public addresses only unless allow_private_networks).
    """
    rows, _ = await crawl_task(urls, hosts, config, warc_out, warc_rel, address_allowed, times, cdx_cache)
    return rows
