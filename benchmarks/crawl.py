"""Benchmark: the crawl stage's asyncio crawler against an OpenWebText-style thread pool of requests.get.

    .venv/bin/python -m benchmarks.crawl [--hosts 500] [--pages-per-host 4] [--latency-ms 100] [--seed 0]

The web: one aiohttp server process listening on one port on `4 x --hosts` loopback addresses
(127.77.x.y), each a separate host. Every response, robots.txt (404) included, is delayed by --latency-ms
(100 ms, a typical far-away server); pages are HTML of 50-150 KB (words, uniformly spread sizes, 64
distinct bodies picked by path), sent without compression. The server logs the time each request arrives, by
host, so the table shows the per-host spacing each crawler actually produced.

Crawlers, each in a fresh process, one after another, against the same server:

- ours: `pipeline.crawl.crawl_urls` with the default CrawlConfig except allow_private_networks (the web is
  on loopback): robots.txt per host, 1 request in flight per host, >= 1 s (+ up to 50% jitter) between
  requests to a host, hosts_in_flight hosts at once, content sniffing, charset, and every page written to a
  gzip-per-record WARC file (the baseline stores nothing).
- ours-nodelay (at N only): the same with per_host_delay_s = 0 (still robots.txt and one request in flight
  per host): the engine without the politeness delay, for a like-for-like look at the baseline.
- baseline: the OpenWebText scrapers' fetch loop: `concurrent.futures.ThreadPoolExecutor` with as many
  threads as our hosts_in_flight, each running `requests.get(url, timeout=30)` and reading `.content`; no
  robots.txt, no per-host limits.

ours and baseline run at N = hosts x pages-per-host URLs and at 4N (4x the hosts), so that memory growth
with input shows. pages/s = pages with status 200 and a body / wall seconds; CPU ms/page = (user + sys CPU seconds of
the crawler process) / pages; peak RSS = the process's VmHWM. The machine has 2 cores shared by the server,
the crawler and whatever else runs: the load average before each run is printed beside it.
Targets (issue 3): ours >= 300 pages/s with politeness respected, >= 5x the baseline, memory flat as N grows.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import resource
import tempfile
import time
import zlib
from collections import defaultdict

PAGE_VARIANTS = 64


def host_addresses(count: int) -> list[str]:
    return [f"127.77.{i // 250}.{i % 250 + 1}" for i in range(count)]


def page_bodies(seed: int) -> list[bytes]:
    """64 HTML pages of 50-150 KB made of words, deterministic in `seed`."""
    rng = random.Random(seed)
    words = ("the of and to in is was for on that with as by at from his an were are which this be or "
             "crawler polite robots delay host page server latency article people government year world").split()
    bodies = []
    for i in range(PAGE_VARIANTS):
        size = rng.randint(50_000, 150_000)
        paragraphs, length = [], 0
        while length < size:
            text = " ".join(rng.choice(words) for _ in range(120))
            paragraphs.append(f"<p>{text}.</p>\n")
            length += len(paragraphs[-1])
        head = f"<!DOCTYPE html><html><head><title>Page {i}</title></head><body><article>\n"
        bodies.append((head + "".join(paragraphs) + "</article></body></html>").encode()[:size])
    return bodies


# ----------------------------------------------------------------------------------------------------------
# The server process.


def serve(hosts: list[str], latency_s: float, seed: int, control) -> None:
    """Serve pages on every host until told to stop; answer ("spacing", since) with per-host request gaps."""
    from aiohttp import web

    bodies = page_bodies(seed)
    arrivals: dict[str, list[float]] = defaultdict(list)

    async def handle(request: web.Request) -> web.Response:
        arrivals[request.transport.get_extra_info("sockname")[0]].append(time.time())
        await asyncio.sleep(latency_s)
        if request.path == "/robots.txt":
            return web.Response(status=404, text="no robots.txt")
        body = bodies[zlib.crc32(request.path.encode()) % PAGE_VARIANTS]
        return web.Response(body=body, content_type="text/html", charset="utf-8")

    async def main() -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        first = web.TCPSite(runner, hosts[0], 0, backlog=1024)
        await first.start()
        port = first._server.sockets[0].getsockname()[1]
        for host in hosts[1:]:
            await web.TCPSite(runner, host, port, backlog=1024).start()
        control.send(port)
        loop = asyncio.get_running_loop()
        while True:
            command, since = await loop.run_in_executor(None, control.recv)
            if command == "stop":
                break
            gaps = [b - a for times in arrivals.values() for a, b in zip(times, times[1:]) if a >= since]
            control.send(min(gaps) if gaps else float("nan"))
        await runner.cleanup()

    asyncio.run(main())


# ----------------------------------------------------------------------------------------------------------
# The crawler processes.


def rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_ours(urls: list[str], per_host_delay_s: float, results) -> None:
    from urllib.parse import urlsplit

    from pipeline.config import CrawlConfig
    from pipeline.crawl import crawl_urls

    config = CrawlConfig(allow_private_networks=True, per_host_delay_s=per_host_delay_s)
    hosts = [urlsplit(u).hostname for u in urls]
    start_rss, cpu0, t0 = rss_mb("VmRSS"), cpu_seconds(), time.monotonic()
    with tempfile.TemporaryFile() as warc:
        rows = asyncio.run(crawl_urls(urls, hosts, config, warc, "bench.warc.gz"))
        warc_mb = warc.tell() / 1e6
    seconds = time.monotonic() - t0
    pages = sum(r.reason == "ok" for r in rows)
    results.put(dict(pages=pages, seconds=seconds, cpu=cpu_seconds() - cpu0, start_rss=start_rss,
                     peak_rss=rss_mb("VmHWM"), workers=config.hosts_in_flight, warc_mb=warc_mb))


def run_baseline(urls: list[str], workers: int, results) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import requests

    def fetch(url: str) -> bool:
        try:
            response = requests.get(url, timeout=30)
            return response.status_code == 200 and len(response.content) > 0
        except requests.RequestException:
            return False

    start_rss, cpu0, t0 = rss_mb("VmRSS"), cpu_seconds(), time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pages = sum(pool.map(fetch, urls))
    seconds = time.monotonic() - t0
    results.put(dict(pages=pages, seconds=seconds, cpu=cpu_seconds() - cpu0, start_rss=start_rss,
                     peak_rss=rss_mb("VmHWM"), workers=workers, warc_mb=0.0))


def measure(context, target, args) -> dict:
    results = context.Queue()
    process = context.Process(target=target, args=(*args, results))
    process.start()
    result = results.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=500, help="hosts at size N (4N uses 4x as many)")
    parser.add_argument("--pages-per-host", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from pipeline.config import CrawlConfig

    workers = CrawlConfig().hosts_in_flight
    context = multiprocessing.get_context("spawn")
    all_hosts = host_addresses(4 * args.hosts)
    control, child_end = context.Pipe()
    server = context.Process(target=serve, args=(all_hosts, args.latency_ms / 1000, args.seed, child_end))
    server.start()
    port = control.recv()
    print(f"server: {len(all_hosts)} hosts on port {port}, {args.latency_ms:.0f} ms latency, pages 50-150 KB; "
          f"{os.cpu_count()} cores")
    rows = []
    runs = [(args.hosts, "ours"), (args.hosts, "ours-nodelay"), (args.hosts, "baseline"),
            (4 * args.hosts, "ours"), (4 * args.hosts, "baseline")]
    for run, (host_count, name) in enumerate(runs):
        urls = [f"http://{h}:{port}/r{run}/{i}" for h in all_hosts[:host_count] for i in range(args.pages_per_host)]
        load = os.getloadavg()[0]
        since = time.time()
        if name.startswith("ours"):
            delay = 0.0 if name == "ours-nodelay" else CrawlConfig().per_host_delay_s
            result = measure(context, run_ours, (urls, delay))
        else:
            result = measure(context, run_baseline, (urls, workers))
        control.send(("spacing", since))
        result.update(name=name, urls=len(urls), load=load, min_gap=control.recv())
        rows.append(result)
        print(f"  done: {name} N={len(urls)} in {result['seconds']:.1f}s", flush=True)
    control.send(("stop", 0))
    server.join()

    print()
    print(f"{'crawler':<12} {'URLs':>6} {'workers':>7} {'pages':>6} {'seconds':>7} {'pages/s':>8} "
          f"{'CPU ms/page':>11} {'peak RSS MB':>11} {'RSS start':>9} {'min host gap s':>14} {'load':>5}")
    for r in rows:
        print(f"{r['name']:<12} {r['urls']:>6} {r['workers']:>7} {r['pages']:>6} {r['seconds']:>7.1f} "
              f"{r['pages'] / r['seconds']:>8.0f} {1000 * r['cpu'] / max(r['pages'], 1):>11.2f} "
              f"{r['peak_rss']:>11.0f} {r['start_rss']:>9.0f} {r['min_gap']:>14.3f} {r['load']:>5.1f}")
    for size in sorted({r["urls"] for r in rows}):
        base = next(r for r in rows if r["urls"] == size and r["name"] == "baseline")
        for ours in (r for r in rows if r["urls"] == size and r["name"].startswith("ours")):
            ratio = (ours["pages"] / ours["seconds"]) / max(base["pages"] / base["seconds"], 1e-9)
            print(f"N={size}: {ours['name']} / baseline pages/s = {ratio:.1f}x")


if __name__ == "__main__":
    main()
