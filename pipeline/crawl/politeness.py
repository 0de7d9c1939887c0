"""Per-host politeness of live fetching: a request slot per host, and each origin's robots.txt.

`HostGate`: at most `concurrency` requests in flight to a host; a request starts `delay_s` (plus up to
`jitter` x delay_s at random) after both the previous request's start and the end of the latest finished
one; `pause(seconds)` holds every request to the host back (backoff, Retry-After).

`Politeness` keeps one gate per host and one robots.txt fetch per origin (concurrent requests for it share
the fetch), for one crawl task. A host's delay is its crawl.host_overrides delay_s, else per_host_delay_s.
robots.txt follows RFC 9309: 2xx gives the rules (its Crawl-delay raises the host's delay, up to
max_crawl_delay_s, unless the host's override has force = true); 4xx or too many redirects allows everything; 5xx or no answer
skips the host (robots_unavailable); a name that does not resolve or resolves to a forbidden address gives
dns_error or blocked_address.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Awaitable, Callable

import yarl

from pipeline.config import CrawlConfig
from pipeline.crawl import robots
from pipeline.crawl.checks import check_url, parse_url, redirect_target

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


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


class Politeness:
    """One task's gates (per host) and robots.txt rules (per origin) for live fetching."""

    def __init__(self, config: CrawlConfig):
        self.config = config
        self.gates: dict[str, HostGate] = {}
        self.robots: dict[str, asyncio.Future] = {}

    def gate(self, host: str) -> HostGate:
        if host not in self.gates:
            c = self.config
            override = c.host_overrides.get(host)
            delay = override.delay_s if override is not None else c.per_host_delay_s
            self.gates[host] = HostGate(c.per_host_concurrency, delay, c.delay_jitter)
        return self.gates[host]

    async def robots_for(self, url: str, request: Callable[[str], Awaitable]) -> robots.RobotsRules | str:
        """The robots rules of the URL's origin, or the reason the origin is skipped; `request(url)` fetches
        robots.txt (an Attempt, see pipeline/crawl/fetcher.py)."""
        origin = str(parse_url(url).origin())
        if origin not in self.robots:
            self.robots[origin] = asyncio.ensure_future(self._fetch_robots(origin, request))
        return await self.robots[origin]

    async def _fetch_robots(self, origin: str, request: Callable[[str], Awaitable]) -> robots.RobotsRules | str:
        """RFC 9309: 2xx -> rules; 4xx or too many redirects -> allow all; 5xx or no answer -> skip the host."""
        url, seen = origin + "/robots.txt", set()
        for _ in range(self.config.max_redirects + 1):
            attempt = await request(url)
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
                host = yarl.URL(origin).host or ""
                override = self.config.host_overrides.get(host)
                if rules.crawl_delay and not (override is not None and override.force):
                    gate = self.gate(host)
                    gate.delay_s = max(gate.delay_s, min(rules.crawl_delay, self.config.max_crawl_delay_s))
                return rules
            if 400 <= response.status < 500:
                return robots.ALLOW_ALL
            return "robots_unavailable"
        return robots.ALLOW_ALL
