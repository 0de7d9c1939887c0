"""One crawl task's crawler: the URLs of one partition, many hosts at once, each host politely.

`crawl_urls(urls, hosts, config, warc_out, warc_rel)` returns one log row per URL, in input order. Hosts
are crawled hosts_in_flight at a time, the busiest first; each host's URLs by per_host_concurrency workers.
A host whose URLs fail host_max_failures times in a row (connection errors, timeouts, truncated bodies,
5xx) is given up: its remaining URLs are host_given_up. A bug on one URL is internal_error (its traceback on
stderr), never a lost partition. Kept pages go to the WARC file as they complete.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections import Counter, defaultdict
from typing import BinaryIO, Callable

from pipeline.config import CrawlConfig
from pipeline.crawl import netsafe
from pipeline.crawl.fetcher import Fetcher
from pipeline.crawl.log import LogRow, finish
from pipeline.crawl.warc import WarcFile

# Outcomes that say the host, not the URL, is in trouble; enough of them in a row give the host up.
HOST_FAILURES = frozenset({"connect_error", "connect_timeout", "tls_error", "fetch_timeout", "truncated_body"})


class Crawler:
    """One task's crawler: the fetcher (session, politeness, robots.txt), host failures and the WARC file."""

    def __init__(self, config: CrawlConfig, warc: WarcFile, warc_rel: str,
                 address_allowed: Callable[[netsafe.IPAddress], bool]):
        self.config, self.warc, self.warc_rel = config, warc, warc_rel
        self.fetcher = Fetcher(config, address_allowed)
        self.host_failures: Counter = Counter()

    async def close(self) -> None:
        await self.fetcher.close()

    async def fetch(self, url: str) -> LogRow:
        """One input URL's log row; a kept page is written to the WARC file first."""
        row, response = await self.fetcher.fetch_live(url)
        if response is not None:
            row.warc_file = self.warc_rel
            row.warc_offset = self.warc.write_page(row.url, response)
        return row

    async def crawl_host(self, host: str, items: list[tuple[int, str]], rows: list[LogRow | None]) -> None:
        """Fetch one host's URLs with per_host_concurrency workers; a failing host is given up."""
        pending = iter(items)

        async def worker():
            for index, url in pending:
                if self.host_failures[host] >= self.config.host_max_failures:
                    rows[index] = finish(LogRow(url=url, final_url=url), "host_given_up")
                    continue
                try:
                    row = await self.fetch(url)
                except Exception:  # noqa: BLE001 - one URL must not kill the partition; printed for a bug report
                    print(f"[crawl] internal error on {url}:\n{traceback.format_exc()}", file=sys.stderr)
                    row = finish(LogRow(url=url, final_url=url), "internal_error")
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
