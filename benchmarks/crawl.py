"""Benchmark: the crawl stage against OpenWebText's crawler, as each is run.

    .venv/bin/python -m benchmarks.crawl [--hosts 4000] [--pages-per-host 4] [--latency-ms 100]
                                         [--processes CORES] [--hosts-in-flight 0] [--baseline-urls 2000]
                                         [--archive-urls 2000] [--archive-concurrency 8] [--seed 0]

The archive rows need pywb in its own venv: WEBTEXT_PYWB_BIN=/path/to/pywb-venv/bin (pipeline/devarchive.py).

The web: asyncio server processes (a bare HTTP/1.1 protocol answering with pre-built bytes, so that the
fixture takes little of the CPU the crawlers share with it) listening on one port on `4 x --hosts` loopback
addresses (127.77.x.y), each a separate host, each process on at most half its open-file limit of them.
Every response, robots.txt (404) included, is delayed by --latency-ms (100 ms, a typical far-away server);
pages are HTML of 50-150 KB (words, uniformly spread sizes, 64 distinct bodies picked by path), sent
without compression. The server logs the time each request arrives, by host, so the table shows the
per-host spacing each crawler actually produced, and reports its own CPU time.

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
  per host): the engine without the politeness delay.
- baseline: OpenWebText's downloader (jcpeterson/openwebtext download.py) as its users run it: a
  `multiprocessing.Pool` of --processes processes (the same count as ours) mapping over the URL list in
  chunks (`--chunk_size 100000`, its README's command), each URL fetched with `requests.get(url, timeout=7)`
  (what newspaper.Article.download does, with newspaper3k's default timeout) and its content read; no
  robots.txt, no per-host limits, nothing stored. Each process holds one request at a time, so it is
  latency-bound near processes / latency; it fetches the first --baseline-urls URLs of the list, as a
  16,000-URL run would take about 15 minutes (its README advises 20-100 processes on a many-core machine).

Both run at N = hosts x pages-per-host URLs (16,000), and ours again at 4N (4x the hosts), so that memory
growth with input shows. The hosts must be well above the hosts ours has in flight (2 x 1,024), or the start
(every host's robots.txt, then its first politeness delay) and the end (the last hosts' delays) leave the
cores idle for seconds and decide the time.

How to read the table: pages/s = pages with status 200 and a body / wall seconds (first process start to
last process end); CPU ms/page = user + sys CPU seconds of the crawler processes (the baseline: its pool
workers and the parent) / pages; server ms/page the same for the servers; peak RSS = VmHWM summed over the
crawler processes (RSS start likewise, after imports); request ms p50 = median time in requests of a page
(the server adds 100 ms; more is queueing in a busy crawler or server); min host gap s = the smallest time
between two requests to one host that the server saw. The politeness cap printed first is hosts in flight x
pages-per-host / the time one host takes (pages + robots.txt, each latency + delay with mean jitter). The
machine's cores are shared by the server, the crawlers and whatever else runs: the load average before each
run is printed beside it. The last lines say what differs between the two sides. Targets (issue 3): ours
>= 300 pages/s with politeness respected, memory flat as N grows.

The archive rows (crawl.source = "archive"): a real pywb (`wayback`) over a collection of --archive-urls
captures of the same 50-150 KB pages (one capture each, in 2010; each link submitted a day after its
capture), behind a TCP relay that hands on everything pywb sends --latency-ms later, as a far-away archive
would. Both sides keep at most --archive-concurrency requests in flight to the archive (the same archive
politeness): ours is one crawl task with crawl.archive.concurrency = that and delay_s = 0; the baseline is
what a user writes, a thread pool of that many threads, each link `requests.get` of the CDX API (closest
capture) and then of the replay URL of the first 200 HTML capture. Columns as above, plus requests (to the
archive: ours asks the replay for the submission's time first and the CDX only when that answer will not
do, so 1 per link here; the baseline 2), pywb ms/page and relay ms/page (their CPU per page). With both
sides latency-bound at the same in-flight cap, the ratio is near the ratio of round trips per link (2 to 1)
plus what connection reuse saves; the issue's target is >= 3x.

Measured before (2-core machine, load 0.8-6.6, two runs; the baseline then was a thread pool of
requests.get in one process with 2,048 threads, not OpenWebText's process pool): ours 926-949 pages/s at
1.5-1.6 ms CPU a page including robots.txt, the WARC and the log, >= 1.103 s between requests to any host;
at 64,000 URLs 1,042-1,047 pages/s; peak RSS 533-555 MB at 16,000 URLs, 598-600 MB at 64,000 (332 MB of it
the imports). With 512 hosts in flight per task politeness capped a crawl near 745 pages/s (207-625
measured); with all hosts in flight from the start (8,000 URLs on 2,000 hosts) the first ~1.8 s were
politeness rather than CPU (every robots.txt at once, then each host's >= 1 s gap): 857-866 pages/s. Where
ours' CPU went: from 1.8-2.0 ms a page to 1.5-1.6 by writing the WARC records in pipeline/crawl/warc.py
rather than with warcio's writer (two records 0.70 -> 0.52 ms, of which ISA-L 0.27 and the two SHA-1
digests 0.12; per 100 KB page warcio's gzip at zlib level 9 costs 12 ms, zlib level 1 1.1 ms, ISA-L level 2
0.26 ms), running the garbage collector's youngest generation every 10,000 allocations instead of 700
(`fewer_gc_passes`: 0.2 -> 0.04 ms a page), parsing each URL once (`parse_url`) and a 1 MB buffer on the
WARC file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import resource
import socket
import statistics
import tempfile
import time
import zlib
from collections import Counter, defaultdict
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


def canned_responses(seed: int) -> tuple[list[bytes], bytes]:
    """The server's answers as bytes on the wire, built once: the 64 pages and robots.txt's 404."""

    def response(status: str, content_type: str, body: bytes) -> bytes:
        head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    pages = [response("200 OK", "text/html; charset=utf-8", body) for body in page_bodies(seed)]
    return pages, response("404 Not Found", "text/plain; charset=utf-8", b"no robots.txt")


class PageServer(asyncio.Protocol):
    """One connection: HTTP/1.1 GETs with keep-alive, each answered `latency_s` after its headers arrive.

    A bare protocol with canned responses rather than aiohttp.web, whose request machinery cost 0.45 ms of CPU
    per page served (robots.txt included; this costs 0.22): the server shares the 2 cores with the crawler under
    test. Clients send one request at a time per connection (neither crawler pipelines), without a body.
    """

    def __init__(self, pages: list[bytes], not_found: bytes, latency_s: float,
                 arrivals: dict[str, list[float]]):
        self.pages, self.not_found, self.latency_s, self.arrivals = pages, not_found, latency_s, arrivals
        self.buffer = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.host_arrivals = self.arrivals[transport.get_extra_info("sockname")[0]]
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            self.host_arrivals.append(time.time())
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            path = head.split(b" ", 2)[1].split(b"?", 1)[0]  # request line: GET /path?query HTTP/1.1
            answer = self.not_found if path == b"/robots.txt" else self.pages[zlib.crc32(path) % PAGE_VARIANTS]
            self.loop.call_later(self.latency_s, self.answer, answer)

    def answer(self, response: bytes) -> None:
        if not self.transport.is_closing():  # the client may have given up (timeout) or closed
            self.transport.write(response)


def serve(hosts: list[str], port: int, latency_s: float, seed: int, control) -> None:
    """Serve pages on every host at `port` (0: a free one, sent back) until told to stop; answer ("stats",
    since) with the smallest per-host gap between requests arriving since then, and the CPU seconds so far."""
    pages, not_found = canned_responses(seed)
    arrivals: dict[str, list[float]] = defaultdict(list)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> PageServer:
            return PageServer(pages, not_found, latency_s, arrivals)

        first = await loop.create_server(protocol, hosts[0], port, backlog=1024)
        bound = first.sockets[0].getsockname()[1]
        servers = [first] + [await loop.create_server(protocol, host, bound, backlog=1024) for host in hosts[1:]]
        control.send(bound)
        while True:
            command, since = await loop.run_in_executor(None, control.recv)
            if command == "stop":
                break
            gaps = [b - a for times in arrivals.values() for a, b in zip(times, times[1:]) if a >= since]
            times = os.times()
            control.send((min(gaps) if gaps else float("nan"), times.user + times.system))
        for server in servers:
            server.close()

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


OWT_TIMEOUT_S = 7  # newspaper3k's request_timeout: OpenWebText's scrapers fetch through newspaper.Article.download
OWT_CHUNK_SIZE = 100_000  # --chunk_size in OpenWebText's README command: one pool.map per chunk of URLs


def owt_fetch(url: str) -> tuple[bool, float]:
    """One URL as OpenWebText's scraper fetches it: requests.get with newspaper3k's timeout, content read."""
    import requests

    started = time.monotonic()
    try:
        response = requests.get(url, timeout=OWT_TIMEOUT_S)
        ok = response.status_code == 200 and len(response.content) > 0
    except requests.RequestException:
        ok = False
    return ok, 1000 * (time.monotonic() - started)


def owt_worker_init(barrier) -> None:
    global WORKER_BARRIER
    WORKER_BARRIER = barrier


def owt_worker_stats(_: int) -> tuple[float, float, float]:
    """This pool worker's CPU seconds, peak and current RSS; the barrier makes each worker take exactly one."""
    WORKER_BARRIER.wait()
    return cpu_seconds(), rss_mb("VmHWM"), rss_mb("VmRSS")


def run_baseline(urls: list[str], processes: int, results) -> None:
    """OpenWebText's download loop: a multiprocessing.Pool of `processes`, pool.map over chunks of URLs."""
    context = multiprocessing.get_context("fork")  # what multiprocessing.Pool uses on Linux, as OpenWebText ran it
    barrier = context.Barrier(processes)
    with context.Pool(processes, initializer=owt_worker_init, initargs=(barrier,)) as pool:
        before = pool.map(owt_worker_stats, range(processes), chunksize=1)  # workers started
        parent_cpu0, t0 = cpu_seconds(), time.monotonic()
        fetched = []
        for start in range(0, len(urls), OWT_CHUNK_SIZE):
            fetched += pool.map(owt_fetch, urls[start:start + OWT_CHUNK_SIZE], chunksize=1)
        seconds, parent_cpu = time.monotonic() - t0, cpu_seconds() - parent_cpu0
        after = pool.map(owt_worker_stats, range(processes), chunksize=1)
    # Each worker reported once before and once after, in no fixed order: sums pair them.
    cpu = parent_cpu + sum(cpu for cpu, _, _ in after) - sum(cpu for cpu, _, _ in before)
    results.put(dict(pages=sum(ok for ok, _ in fetched), seconds=seconds, cpu=cpu,
                     start_rss=sum(rss for _, _, rss in before), peak_rss=sum(peak for _, peak, _ in after),
                     warc_mb=0.0, request_ms=statistics.median([ms for ok, ms in fetched if ok] or [0.0])))


def measure_baseline(context, urls: list[str], processes: int) -> dict:
    results = context.Queue()
    process = context.Process(target=run_baseline, args=(urls, processes, results))
    process.start()
    result = results.get()
    process.join()
    return result


# ----------------------------------------------------------------------------------------------------------
# The archive row: a local pywb behind a relay that adds latency.


def relay(listen_host: str, target: tuple[str, int], latency_s: float, control) -> None:
    """A TCP relay to `target` that hands on everything the archive sends `latency_s` after it arrives, as a
    far-away archive would (requests go through at once); answers ("cpu",) with its CPU seconds."""

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def later(writer, data: bytes | None) -> None:
            if writer.is_closing():
                return
            if data is None:
                writer.close()
            else:
                writer.write(data)

        async def handle(reader, writer) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(*target)
            except OSError:
                writer.close()
                return

            async def upstream() -> None:
                with contextlib.suppress(OSError):
                    while data := await reader.read(65536):
                        up_writer.write(data)
                    up_writer.write_eof()

            async def downstream() -> None:
                with contextlib.suppress(OSError):
                    while data := await up_reader.read(65536):
                        loop.call_later(latency_s, later, writer, data)
                loop.call_later(latency_s, later, writer, None)

            await asyncio.gather(upstream(), downstream())
            up_writer.close()

        connections = set()

        def track(reader, writer):
            task = asyncio.ensure_future(handle(reader, writer))
            connections.add(task)
            task.add_done_callback(connections.discard)

        server = await asyncio.start_server(track, listen_host, 0, backlog=1024)
        control.send(server.sockets[0].getsockname()[1])
        while (await loop.run_in_executor(None, control.recv)) == "cpu":
            control.send(cpu_seconds())
        server.close()
        for task in list(connections):  # idle keep-alive connections of the crawlers that finished
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    asyncio.run(main())


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def archive_captures(count: int, seed: int):
    """`count` pages (the live web's 50-150 KB bodies) on 50 hosts, each captured once in 2010, and the
    submission times (a day after each capture)."""
    from datetime import datetime, timedelta, timezone

    from pipeline import devarchive

    bodies = page_bodies(seed)
    start = datetime(2010, 1, 1, tzinfo=timezone.utc)
    captures = [devarchive.Capture(f"http://site{i % 50}.example/story/{i}", start + timedelta(minutes=i),
                                   bodies[i % PAGE_VARIANTS]) for i in range(count)]
    return captures, [int((c.when + timedelta(days=1)).timestamp()) for c in captures]


def archive_ours(urls: list[str], times: list[int], base: str, concurrency: int, results) -> None:
    """The crawl task with crawl.source = "archive" against the archive at `base` (replay id_ URLs)."""
    import pyarrow.dataset  # noqa: F401 - as run_partition: imported once per Ray worker

    from pipeline.config import ArchiveConfig, CrawlConfig
    from pipeline.crawl.crawler import crawl_task

    config = CrawlConfig(allow_private_networks=True, source="archive", archive=ArchiveConfig(
        cdx_url=base + "cdx", replay_url=base, concurrency=concurrency, delay_s=0.0, max_distance_days=30))
    start_rss = rss_mb("VmRSS")
    cpu0, t0 = cpu_seconds(), time.time()
    with tempfile.TemporaryFile() as warc:
        rows, counts = asyncio.run(crawl_task(urls, [urlsplit(u).hostname for u in urls], config, warc, "a.warc.gz",
                                              times=times))
    ok = [r for r in rows if r.reason == "ok"]
    results.put(dict(pages=len(ok), seconds=time.time() - t0, cpu=cpu_seconds() - cpu0, start_rss=start_rss,
                     peak_rss=rss_mb("VmHWM"), request_ms=statistics.median([r.elapsed_ms for r in ok] or [0]),
                     requests=counts["cdx_requests"] + counts["replay_requests"],
                     reasons=dict(Counter(r.reason for r in rows))))


def archive_baseline(urls: list[str], times: list[int], base: str, threads: int, results) -> None:
    """What a user writes: a thread pool, per link requests.get of the CDX API (closest capture), then of the
    replay URL of the first 200 HTML capture."""
    import json
    from concurrent.futures import ThreadPoolExecutor
    from datetime import datetime, timezone

    import requests

    def fetch(item: tuple[str, int]) -> tuple[bool, float, int]:
        url, when = item
        started = time.monotonic()
        closest = datetime.fromtimestamp(when, timezone.utc).strftime("%Y%m%d%H%M%S")
        try:
            answer = requests.get(base + "cdx", params={"url": url, "output": "json", "closest": closest,
                                                        "sort": "closest", "limit": 25}, timeout=30)
            rows = [json.loads(line) for line in answer.text.splitlines() if line.strip()]
            good = [r for r in rows if r.get("status") == "200" and r.get("mime") == "text/html"]
            if not good:
                return False, 0.0, 1
            page = requests.get(f"{base}{good[0]['timestamp']}id_/{url}", timeout=30)
            return page.status_code == 200 and len(page.content) > 0, 1000 * (time.monotonic() - started), 2
        except requests.RequestException:
            return False, 0.0, 1

    start_rss, cpu0, t0 = rss_mb("VmRSS"), cpu_seconds(), time.time()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        fetched = list(pool.map(fetch, zip(urls, times)))
    results.put(dict(pages=sum(ok for ok, _, _ in fetched), seconds=time.time() - t0, cpu=cpu_seconds() - cpu0,
                     start_rss=start_rss, peak_rss=rss_mb("VmHWM"),
                     request_ms=statistics.median([ms for ok, ms, _ in fetched if ok] or [0]),
                     requests=sum(n for _, _, n in fetched), reasons={}))


def archive_rows(context, args) -> list[dict]:
    """Ours and the baseline against one local pywb with --latency-ms added by a relay; [] without pywb."""
    from pipeline import devarchive

    if devarchive.pywb_bin() is None:
        print("archive rows skipped: pywb's `wayback` not found (set WEBTEXT_PYWB_BIN to the bin directory of a "
              "venv with pywb; see pipeline/devarchive.py)")
        return []
    captures, times = archive_captures(args.archive_urls, args.seed)
    urls = [c.url for c in captures]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        warc = Path(folder) / "captures.warc.gz"
        devarchive.write_warc(warc, captures)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with devarchive.serving_pywb(Path(folder) / "pywb", [warc], "127.0.0.60", port) as pywb:
            control, child_end = context.Pipe()
            relaying = context.Process(target=relay, args=("127.0.0.61", ("127.0.0.60", port),
                                                           args.latency_ms / 1000, child_end))
            relaying.start()
            base = pywb.base.replace(f"127.0.0.60:{port}", f"127.0.0.61:{control.recv()}")
            print(f"archive: pywb over {len(urls)} captures (50-150 KB pages), {args.latency_ms:.0f} ms added by a "
                  f"relay; {args.archive_concurrency} requests in flight to the archive on both sides", flush=True)
            for name, target in (("ours-archive", archive_ours), ("baseline-archive", archive_baseline)):
                results = context.Queue()
                load, server0 = os.getloadavg()[0], process_cpu_seconds(pywb.pid)
                control.send("cpu")
                relay0 = control.recv()
                process = context.Process(target=target, args=(urls, times, base, args.archive_concurrency, results))
                process.start()
                result = results.get()
                process.join()
                control.send("cpu")
                relay_cpu = control.recv() - relay0
                result.update(name=name, urls=len(urls), load=load, server_cpu=process_cpu_seconds(pywb.pid) - server0,
                              relay_cpu=relay_cpu)
                rows.append(result)
                print(f"  done: {name} N={len(urls)} in {result['seconds']:.1f}s", flush=True)
            control.send("stop")
            relaying.join()
    return rows


def print_archive_table(rows: list[dict], concurrency: int) -> None:
    print()
    print(f"{'crawler':<17} {'URLs':>6} {'pages':>6} {'requests':>8} {'seconds':>7} {'pages/s':>8} {'CPU ms/page':>11} "
          f"{'pywb ms/page':>12} {'relay ms/page':>13} {'peak RSS MB':>11} {'page ms p50':>11} {'load':>5}")
    for r in rows:
        pages = max(r["pages"], 1)
        print(f"{r['name']:<17} {r['urls']:>6} {r['pages']:>6} {r['requests']:>8} {r['seconds']:>7.1f} "
              f"{r['pages'] / r['seconds']:>8.1f} {1000 * r['cpu'] / pages:>11.2f} {1000 * r['server_cpu'] / pages:>12.2f} "
              f"{1000 * r['relay_cpu'] / pages:>13.2f} {r['peak_rss']:>11.0f} {r['request_ms']:>11.0f} {r['load']:>5.1f}")
    ours, base = rows
    ratio = (ours["pages"] / ours["seconds"]) / max(base["pages"] / base["seconds"], 1e-9)
    print(f"ours-archive / baseline-archive: pages/s {ratio:.1f}x (target >= 3x); ours' outcomes: {ours['reasons']}")
    print(f"What differs: both keep at most {concurrency} requests in flight to the archive (ours: "
          f"crawl.archive.concurrency, delay_s 0; the baseline: {concurrency} threads). Ours asks the replay for the "
          f"submission's time first (the archive answers with its closest capture) and asks the CDX only when that "
          f"capture is not a 200 HTML page within the window, checks type and charset and writes WARC; the "
          f"baseline asks the CDX, then fetches the replay URL of the first 200 HTML capture, and stores nothing.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=4000, help="hosts at size N (4N uses 4x as many)")
    parser.add_argument("--pages-per-host", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--processes", type=int, default=os.cpu_count(),
                        help="crawl tasks running at once (the stage: one Ray task per core)")
    parser.add_argument("--hosts-in-flight", type=int, default=0, help="per task; 0 = the CrawlConfig default")
    parser.add_argument("--baseline-urls", type=int, default=2000,
                        help="URLs the baseline fetches (its first ones): it is latency-bound at processes / latency")
    parser.add_argument("--archive-urls", type=int, default=2000, help="links of the archive rows; 0 skips them")
    parser.add_argument("--archive-concurrency", type=int, default=8,
                        help="requests in flight to the archive, on both sides (its politeness)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from pipeline.config import CrawlConfig

    defaults = CrawlConfig()
    hosts_in_flight = args.hosts_in_flight or defaults.hosts_in_flight
    context = multiprocessing.get_context("spawn")
    all_hosts = host_addresses(4 * args.hosts)
    # A listening socket per host: each server process takes at most half its open-file limit of hosts and
    # keeps the other half for connections; the first picks the port, the others listen on it too.
    per_server = resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2
    servers, port = [], 0
    for start in range(0, len(all_hosts), per_server):
        control, child_end = context.Pipe()
        server = context.Process(target=serve, args=(
            all_hosts[start:start + per_server], port, args.latency_ms / 1000, args.seed, child_end))
        server.start()
        port = control.recv()
        servers.append((server, control))

    def server_stats(since: float) -> tuple[float, float]:
        """The smallest per-host gap between requests since `since`, and all servers' CPU seconds."""
        for _, control in servers:
            control.send(("stats", since))
        answers = [control.recv() for _, control in servers]
        gaps = [gap for gap, _ in answers if gap == gap]  # NaN: no host of that server got two requests
        return min(gaps, default=float("nan")), sum(cpu for _, cpu in answers)
    slot_seconds = (1 + args.pages_per_host) * args.latency_ms / 1000 + args.pages_per_host * (
        defaults.per_host_delay_s * (1 + defaults.delay_jitter / 2))
    print(f"servers: {len(servers)}, {len(all_hosts)} hosts on port {port}, {args.latency_ms:.0f} ms latency, pages 50-150 KB; "
          f"{os.cpu_count()} cores; ours: {args.processes} tasks x {hosts_in_flight} hosts in flight, "
          f"politeness cap ~{args.processes * hosts_in_flight * args.pages_per_host / slot_seconds:.0f} pages/s")
    rows = []
    runs = [(args.hosts, "ours"), (args.hosts, "ours-nodelay"), (args.hosts, "baseline"),
            (4 * args.hosts, "ours")]
    for run, (host_count, name) in enumerate(runs):
        urls = [f"http://{h}:{port}/r{run}/{i}" for h in all_hosts[:host_count] for i in range(args.pages_per_host)]
        if name == "baseline":
            urls = urls[:args.baseline_urls]
        load = os.getloadavg()[0]
        server_cpu0 = server_stats(0.0)[1]
        since = time.time()
        if name.startswith("ours"):
            overrides = {"hosts_in_flight": hosts_in_flight}
            if name == "ours-nodelay":
                overrides["per_host_delay_s"] = 0.0
            result = run_ours(context, urls, args.processes, overrides)
            result["workers"] = f"{args.processes}x{hosts_in_flight}"
        else:
            result = measure_baseline(context, urls, args.processes)
            result["workers"] = f"{args.processes}x1"
        min_gap, server_cpu = server_stats(since)
        result.update(name=name, urls=len(urls), load=load, min_gap=min_gap, server_cpu=server_cpu - server_cpu0)
        rows.append(result)
        print(f"  done: {name} N={len(urls)} in {result['seconds']:.1f}s", flush=True)
    for server, control in servers:
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
    base = next(r for r in rows if r["name"] == "baseline")
    for ours in (r for r in rows if r["name"].startswith("ours")):
        ratio = (ours["pages"] / ours["seconds"]) / max(base["pages"] / base["seconds"], 1e-9)
        print(f"{ours['name']} at {ours['urls']} URLs / baseline at {base['urls']}: pages/s {ratio:.1f}x")
    print(f"What differs: ours obeys robots.txt (one extra request per host), one request in flight per host and "
          f">= {defaults.per_host_delay_s:g} s (+ up to {defaults.delay_jitter:.0%}) between requests to a host, "
          f"sniffs types and charsets and writes WARC + log; the baseline (OpenWebText: multiprocessing.Pool of "
          f"{args.processes}, requests.get(timeout={OWT_TIMEOUT_S})) has no politeness, one request in flight per "
          f"process, and stores nothing.")
    if args.archive_urls:
        archive = archive_rows(context, args)
        if archive:
            print_archive_table(archive, args.archive_concurrency)


if __name__ == "__main__":
    main()
