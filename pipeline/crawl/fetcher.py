"""Fetching one URL: one aiohttp session per task, requests under a wall-clock deadline, retries, redirects.

`Fetcher.request(url, gate, want, retry)` sends one GET through a host's gate, under `want.deadline_s` for
the whole request (headers and body: a slow drip cannot outlast it), retrying connection errors, 408, 429
and 5xx with exponential backoff and jitter, or after Retry-After when the server sends one (longer than
`max_retry_after_s` gives up); both pause the whole host, not just the URL. The body is read only for
`want.body_status`, decoded here chunk by chunk (aiohttp's decompression is off) and capped at `want.limit`
decoded bytes. Every new connection goes through pipeline/crawl/netsafe.py, which refuses forbidden
addresses on the socket about to connect.

`Fetcher.fetch_live(url)` follows one input URL through its redirects by hand, so that every hop gets the
scheme, length, loop and robots.txt checks and a fresh address check, and returns its log row with the
200 response when the page is kept ("ok": HTML or XHTML declared or sniffed, non-empty, under the size cap,
charset found).

aiohttp, because its `socket_factory` hook hands over the exact address of every connection attempt (the
one place an address check cannot be raced by DNS), it exposes the raw byte stream with decompression off,
and its C HTTP parser keeps the CPU per page low.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Callable

import aiohttp
from multidict import CIMultiDictProxy

from pipeline.charsets import detect_charset
from pipeline.config import CrawlConfig
from pipeline.crawl import netsafe
from pipeline.crawl.checks import check_url, parse_url, redirect_target, retry_after_seconds
from pipeline.crawl.decode import BodyDecoder
from pipeline.crawl.log import FetchError, LogRow, finish
from pipeline.crawl.politeness import REDIRECT_STATUSES, HostGate, Politeness
from pipeline.crawl.sniff import GENERIC_TYPES, effective_type, parse_content_type

READ_CHUNK = 262144  # asyncio receives up to 256 KB at a time; smaller reads would split those


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


@dataclass(frozen=True)
class Want:
    """What one request reads: its deadline, its body cap, and the rules applied before the body is read."""

    deadline_s: float
    limit: int
    html_only: bool = False  # a page: a declared non-HTML type or a Content-Length over the cap is not read
    truncate: bool = False  # over the cap: keep the first `limit` bytes (robots.txt), else too_large
    body_status: int = 200  # the status whose body is read


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    backoff_base_s: float
    max_retry_after_s: float


class Fetcher:
    """One task's HTTP client: the session, live politeness, and the request and page rules."""

    def __init__(self, config: CrawlConfig, address_allowed: Callable[[netsafe.IPAddress], bool]):
        self.config = config
        self.politeness = Politeness(config)
        self.live_retry = RetryPolicy(config.max_retries, config.backoff_base_s, config.max_retry_after_s)
        self.page = Want(config.request_deadline_s, config.max_body_bytes, html_only=True)
        self.robots_txt = Want(config.robots_timeout_s, config.robots_max_bytes, truncate=True)
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

    # -- one HTTP request ------------------------------------------------------------------------------------

    async def send(self, url: str, want: Want, headers: dict[str, str] | None = None) -> Response:
        """One GET under the wall-clock deadline; the body is read only for want.body_status."""
        got_headers = False
        try:
            async with asyncio.timeout(want.deadline_s):
                async with self.session.get(parse_url(url), allow_redirects=False, headers=headers) as resp:
                    got_headers = True
                    response = Response(
                        url=url, status=resp.status, status_text=resp.reason or "",
                        protocol=f"HTTP/{resp.version.major}.{resp.version.minor}",
                        headers=resp.headers, raw_headers=resp.raw_headers,
                        request_target=resp.request_info.url.raw_path_qs,
                        request_headers=dict(resp.request_info.headers))
                    if resp.status != want.body_status:
                        return response
                    declared, _ = parse_content_type(resp.headers.get("Content-Type"))
                    if want.html_only and declared not in GENERIC_TYPES and declared not in self.config.content_types:
                        response.rejected = "unsupported_type"
                        return response
                    if want.html_only and (resp.content_length or 0) > want.limit:
                        response.rejected = "too_large"
                        return response
                    response.body = await self._read_body(resp, want.limit, want.truncate)
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
            raise FetchError("fetch_timeout", mid_body=got_headers) from err
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

    async def request(self, url: str, gate: HostGate, want: Want, retry: RetryPolicy,
                      headers: dict[str, str] | None = None) -> Attempt:
        """GET with retries on connection errors, 408, 429 and 5xx, pausing the host between attempts."""
        attempt = Attempt()
        while True:
            async with gate.slot():
                started = time.monotonic()
                try:
                    attempt.response, attempt.error = await self.send(url, want, headers), None
                except FetchError as err:
                    attempt.response, attempt.error = None, err
                attempt.elapsed_s += time.monotonic() - started
            status = attempt.response.status if attempt.response else 0
            retryable = attempt.error.retryable if attempt.error else status in (408, 429) or status >= 500
            if not retryable or attempt.retries >= retry.max_retries:
                return attempt
            wait = retry.backoff_base_s * 2 ** attempt.retries * random.uniform(0.5, 1.5)
            if attempt.response is not None:
                retry_after = retry_after_seconds(attempt.response.headers.get("Retry-After"))
                if retry_after is not None:
                    if retry_after > retry.max_retry_after_s:
                        return attempt
                    wait = max(wait, retry_after)
            gate.pause(wait)
            attempt.retries += 1

    async def _live(self, url: str, want: Want) -> Attempt:
        """A request to a live host, through its gate, with the live retry rules."""
        return await self.request(url, self.politeness.gate(parse_url(url).host or ""), want, self.live_retry)

    # -- one live URL ----------------------------------------------------------------------------------------

    async def fetch_live(self, url: str) -> tuple[LogRow, Response | None]:
        """One input URL through its redirects: its log row, and the response when the page is kept."""
        row = LogRow(url=url, final_url=url)
        problem = check_url(url, self.config.max_url_length)
        if problem:
            return finish(row, problem), None
        current, seen = url, {url}
        for hop in range(self.config.max_redirects + 1):
            row.final_url = current
            rules = await self.politeness.robots_for(current, lambda u: self._live(u, self.robots_txt))
            if isinstance(rules, str):
                return finish(row, rules), None
            if not rules.allowed(current):
                return finish(row, "robots_disallowed"), None
            attempt = await self._live(current, self.page)
            row.retries += attempt.retries
            row.elapsed_s += attempt.elapsed_s
            if attempt.error is not None:
                return finish(row, attempt.error.reason), None
            response = attempt.response
            row.status = response.status
            location = response.headers.get("Location")
            if response.status in REDIRECT_STATUSES and location:
                target = redirect_target(current, location)
                problem = check_url(target, self.config.max_url_length)
                if problem:
                    return finish(row, problem), None
                if target in seen:
                    return finish(row, "redirect_loop"), None
                if hop == self.config.max_redirects:
                    return finish(row, "too_many_redirects"), None
                seen.add(target)
                current = target
                continue
            if response.status != 200:
                return finish(row, f"http_{response.status}"), None
            return self.page_outcome(row, response)
        raise AssertionError("unreachable: every hop returns or continues")

    def page_outcome(self, row: LogRow, response: Response) -> tuple[LogRow, Response | None]:
        """The outcome of a 200: the type and charset checks; the response comes back when the page is kept."""
        if response.rejected:
            declared, _ = parse_content_type(response.headers.get("Content-Type"))
            row.bytes, row.content_type = len(response.body), declared or None
            return finish(row, response.rejected), None
        row, kept = self.body_outcome(row, response.headers.get("Content-Type"), response.body)
        return row, response if kept else None

    def body_outcome(self, row: LogRow, content_type: str | None, body: bytes) -> tuple[LogRow, bool]:
        """The type and charset checks of a 200's body under its Content-Type; True when the page is kept."""
        declared, declared_charset = parse_content_type(content_type)
        row.bytes = len(body)
        row.content_type = declared or None
        if not body:
            return finish(row, "empty_body"), False
        row.content_type = effective_type(declared, body, self.config.content_types)
        if row.content_type not in self.config.content_types:
            return finish(row, "unsupported_type"), False
        row.charset = detect_charset(declared_charset, body)
        return finish(row, "ok"), True
