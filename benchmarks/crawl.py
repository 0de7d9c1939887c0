"""Benchmark: the crawl stage's asyncio crawler against an OpenWebText-style thread pool of requests.get.

    .venv/bin/python -m benchmarks.crawl [--hosts 2000] [--pages-per-host 4] [--latency-ms 100]
                                         [--processes CORES] [--hosts-in-flight 0] [--seed 0]

The web: one aiohttp server process listening on one port on `4 x --hosts` loopback addresses
(127.77.x.y), each a separate host. Every response, robots.txt (404) included, is delayed by --latency-ms
(100 ms, a typical far-away server); pages are HTML of 50-150 KB (words, uniformly spread sizes, 64
distinct bodies picked by path), sent without compression. The server logs the time each request arrives, by
host, so the table shows the per-host spacing each crawler actually produced, and reports its own CPU time.

Crawlers, one after another, against the same server:

- ours: the stage as it runs. The URLs are split into --processes host-disjoint partitions (hosts dealt
  round-robin, as the reddit stage's host hashing does) written as urls/part-N.parquet, and each partition is
  crawled by `pipeline.crawl.crawl_partition` in its own process, all at once, as the stage's Ray tasks do
  (one task per core; Ray itself is left out: its scheduling is not the crawler's cost, and `ray.init` would
  add ~7 s). Default CrawlConfig except allow_private_networks (the web is on loopback): robots.txt per host,
  1 request in flight per host, >= 1 s (+ up to 50% jitter) between requests to a host, hosts_in_flight hosts
  at once per task, content sniffing, charset, every page written to a gzip-per-record WARC file and the
  log Parquet written (the baseline stores nothing). Each process imports pyarrow.dataset before the clock
  starts: a Ray worker pays that once, not per partition.
- ours-nodelay (at N only): the same with per_host_delay_s = 0 (still robots.txt and one request in flight
  per host): the engine without the politeness delay, for a like-for-like look at the baseline.
- baseline: the OpenWebText scrapers' fetch loop in one process: `concurrent.futures.ThreadPoolExecutor` with
  as many threads as ours has hosts in flight in all (processes x hosts_in_flight), each running
  `requests.get(url, timeout=30)` and reading `.content`; no robots.txt, no per-host limits.

ours and baseline run at N = hosts x pages-per-host URLs and at 4N (4x the hosts), so that memory growth
with input shows. N must be well above the hosts ours has in flight, or the last hosts' politeness tail
decides the time. Columns: pages/s = pages with status 200 and a body / wall seconds (first process start to
last process end); CPU ms/page = user + sys CPU seconds of the crawler processes / pages; server ms/page the
same for the server; peak RSS = VmHWM summed over the crawler processes (RSS start likewise, after imports);
request ms p50 = median time in requests of a page (the server adds 100 ms; more is queueing in a busy
crawler or server). The politeness cap printed first is hosts in flight x pages-per-host / the time one host
takes (pages + robots.txt, each latency + delay with mean jitter). The machine has 2 cores shared by the
server, the crawlers and whatever else runs: the load average before each run is printed beside it.
Targets (issue 3): ours >= 300 pages/s with politeness respected, >= 5x the baseline, memory flat as N grows.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import resource
import statistics
import tempfile
import time
import zlib
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

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
    """Serve pages on every host until told to stop; answer ("stats", since) with the smallest per-host
    gap between requests arriving since then, and the server's CPU seconds so far."""
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
            times = os.times()
            control.send((min(gaps) if gaps else float("nan"), times.user + times.system))
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


def write_partitions(run_dir: Path, urls: list[str], processes: int) -> None:
    """urls/part-NNNNN.parquet as the reddit stage writes them: hosts dealt round-robin, sorted by url."""
    import pyarrow as pa

    from pipeline import storage

    hosts = sorted({urlsplit(u).hostname for u in urls})
    owner = {host: i % processes for i, host in enumerate(hosts)}
    for index in range(processes):
        part = sorted(u for u in urls if owner[urlsplit(u).hostname] == index)
        table = pa.table({"url": part, "host": [urlsplit(u).hostname for u in part]})
        storage.write_parquet(run_dir / "urls" / f"part-{index:05d}.parquet", table)


def run_partition(run_dir: str, index: int, crawl_overrides: dict, go, results) -> None:
    """One stage task: `pipeline.crawl.crawl_partition` on urls partition `index`, started on `go`."""
    import pyarrow.dataset  # noqa: F401 - what read_parquet imports (with pandas, 0.6 s of CPU) once per Ray worker

    from pipeline.config import Config, CrawlConfig
    from pipeline.crawl import crawl_partition
    from pipeline.runner import RunContext

    config = Config(crawl=CrawlConfig(allow_private_networks=True, **crawl_overrides))
    ctx = RunContext(run_dir=Path(run_dir), config=config)
    start_rss = rss_mb("VmRSS")
    results.put("ready")
    go.wait()
    cpu0, t0 = cpu_seconds(), time.time()
    result = crawl_partition({"index": index, "input": f"urls/part-{index:05d}.parquet"}, ctx)
    results.put(dict(pages=result.counts["out"], start=t0, end=time.time(), cpu=cpu_seconds() - cpu0,
                     start_rss=start_rss, peak_rss=rss_mb("VmHWM")))


def run_ours(context, urls: list[str], processes: int, crawl_overrides: dict) -> dict:
    """Crawl `urls` as the stage does: host-disjoint partitions, one process each, all at once."""
    from pipeline import storage

    with tempfile.TemporaryDirectory() as run_dir:
        write_partitions(Path(run_dir), urls, processes)
        results, go = context.Queue(), context.Event()
        workers = [context.Process(target=run_partition, args=(run_dir, i, crawl_overrides, go, results))
                   for i in range(processes)]
        for worker in workers:
            worker.start()
        for _ in workers:
            assert results.get() == "ready"
        go.set()
        parts = [results.get() for _ in workers]
        for worker in workers:
            worker.join()
        warc_mb = sum(f.stat().st_size for f in Path(run_dir, "crawl", "warc").glob("*.warc.gz")) / 1e6
        logs = storage.read_parquet(sorted(Path(run_dir, "crawl", "log").glob("*.parquet")))
        request_ms = [ms for ms, reason in zip(logs.column("elapsed_ms").to_pylist(),
                                               logs.column("reason").to_pylist()) if reason == "ok"]
    return dict(request_ms=statistics.median(request_ms), pages=sum(p["pages"] for p in parts),
                seconds=max(p["end"] for p in parts) - min(p["start"] for p in parts),
                cpu=sum(p["cpu"] for p in parts), start_rss=sum(p["start_rss"] for p in parts),
                peak_rss=sum(p["peak_rss"] for p in parts), warc_mb=warc_mb)


def run_baseline(urls: list[str], workers: int, results) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import requests

    request_ms = []

    def fetch(url: str) -> bool:
        started = time.monotonic()
        try:
            response = requests.get(url, timeout=30)
            ok = response.status_code == 200 and len(response.content) > 0
        except requests.RequestException:
            return False
        request_ms.append(1000 * (time.monotonic() - started))
        return ok

    start_rss, cpu0, t0 = rss_mb("VmRSS"), cpu_seconds(), time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pages = sum(pool.map(fetch, urls))
    seconds = time.monotonic() - t0
    results.put(dict(pages=pages, seconds=seconds, cpu=cpu_seconds() - cpu0, start_rss=start_rss,
                     peak_rss=rss_mb("VmHWM"), warc_mb=0.0, request_ms=statistics.median(request_ms)))


def measure_baseline(context, urls: list[str], workers: int) -> dict:
    results = context.Queue()
    process = context.Process(target=run_baseline, args=(urls, workers, results))
    process.start()
    result = results.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=2000, help="hosts at size N (4N uses 4x as many)")
    parser.add_argument("--pages-per-host", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--processes", type=int, default=os.cpu_count(),
                        help="crawl tasks running at once (the stage: one Ray task per core)")
    parser.add_argument("--hosts-in-flight", type=int, default=0, help="per task; 0 = the CrawlConfig default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from pipeline.config import CrawlConfig

    defaults = CrawlConfig()
    hosts_in_flight = args.hosts_in_flight or defaults.hosts_in_flight
    workers = args.processes * hosts_in_flight
    context = multiprocessing.get_context("spawn")
    all_hosts = host_addresses(4 * args.hosts)
    control, child_end = context.Pipe()
    server = context.Process(target=serve, args=(all_hosts, args.latency_ms / 1000, args.seed, child_end))
    server.start()
    port = control.recv()
    slot_seconds = (1 + args.pages_per_host) * args.latency_ms / 1000 + args.pages_per_host * (
        defaults.per_host_delay_s * (1 + defaults.delay_jitter / 2))
    print(f"server: {len(all_hosts)} hosts on port {port}, {args.latency_ms:.0f} ms latency, pages 50-150 KB; "
          f"{os.cpu_count()} cores; ours: {args.processes} tasks x {hosts_in_flight} hosts in flight, "
          f"politeness cap ~{args.processes * hosts_in_flight * args.pages_per_host / slot_seconds:.0f} pages/s")
    rows = []
    runs = [(args.hosts, "ours"), (args.hosts, "ours-nodelay"), (args.hosts, "baseline"),
            (4 * args.hosts, "ours"), (4 * args.hosts, "baseline")]
    for run, (host_count, name) in enumerate(runs):
        urls = [f"http://{h}:{port}/r{run}/{i}" for h in all_hosts[:host_count] for i in range(args.pages_per_host)]
        load = os.getloadavg()[0]
        control.send(("stats", 0.0))
        server_cpu0 = control.recv()[1]
        since = time.time()
        if name.startswith("ours"):
            overrides = {"hosts_in_flight": hosts_in_flight}
            if name == "ours-nodelay":
                overrides["per_host_delay_s"] = 0.0
            result = run_ours(context, urls, args.processes, overrides)
            result["workers"] = f"{args.processes}x{hosts_in_flight}"
        else:
            result = measure_baseline(context, urls, workers)
            result["workers"] = str(workers)
        control.send(("stats", since))
        min_gap, server_cpu = control.recv()
        result.update(name=name, urls=len(urls), load=load, min_gap=min_gap, server_cpu=server_cpu - server_cpu0)
        rows.append(result)
        print(f"  done: {name} N={len(urls)} in {result['seconds']:.1f}s", flush=True)
    control.send(("stop", 0))
    server.join()

    print()
    print(f"{'crawler':<12} {'URLs':>6} {'workers':>8} {'pages':>6} {'seconds':>7} {'pages/s':>8} "
          f"{'CPU ms/page':>11} {'server ms/page':>14} {'peak RSS MB':>11} {'RSS start':>9} "
          f"{'request ms p50':>14} {'min host gap s':>14} {'load':>5}")
    for r in rows:
        pages = max(r["pages"], 1)
        print(f"{r['name']:<12} {r['urls']:>6} {r['workers']:>8} {r['pages']:>6} {r['seconds']:>7.1f} "
              f"{r['pages'] / r['seconds']:>8.0f} {1000 * r['cpu'] / pages:>11.2f} "
              f"{1000 * r['server_cpu'] / pages:>14.2f} {r['peak_rss']:>11.0f} {r['start_rss']:>9.0f} "
              f"{r['request_ms']:>14.0f} {r['min_gap']:>14.3f} {r['load']:>5.1f}")
    for size in sorted({r["urls"] for r in rows}):
        base = next(r for r in rows if r["urls"] == size and r["name"] == "baseline")
        for ours in (r for r in rows if r["urls"] == size and r["name"].startswith("ours")):
            ratio = (ours["pages"] / ours["seconds"]) / max(base["pages"] / base["seconds"], 1e-9)
            print(f"N={size}: {ours['name']} / baseline pages/s = {ratio:.1f}x")


if __name__ == "__main__":
    main()
