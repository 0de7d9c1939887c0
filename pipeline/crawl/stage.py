"""The crawl stage: one Ray task per urls partition, through the runner (pipeline/runner.py).

    webtext crawl --run-dir runs/x

Crawl partition i = urls partition i; `crawl_partition` writes crawl/warc/part-i.warc.gz and
crawl/log/part-i.parquet (atomically) and returns the counts: in = URLs, out = "ok" pages, every other
reason a drop. Info: bytes_ok, retries, request_seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time

from pipeline import storage
from pipeline.crawl.crawler import crawl_urls
from pipeline.crawl.log import log_table, outcome_counts
from pipeline.runner import PartitionResult, RunContext, run_partitions, summarize, upstream_partitions, write_stats

WARC_BUFFER = 1 << 20  # bytes gathered per write() to the WARC file: 1 system call per ~35 pages, not 2 per page
GC_THRESHOLD = 10_000  # youngest-generation threshold while crawling (Python's default: 700)


@contextlib.contextmanager
def fewer_gc_passes():
    """Run the cyclic garbage collector's youngest generation every GC_THRESHOLD (net) allocations, not 700.

    A crawl keeps thousands of requests alive at once, so at the default every object of a request survives
    several youngest-generation passes and is traversed again in the older ones. Pages, coroutines and
    responses are freed by reference counting anyway; only garbage cycles wait a little longer.
    """
    previous = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def crawl_partition(spec: dict, ctx: RunContext) -> PartitionResult:
    """Ray task: crawl one urls partition into crawl/warc/part-N.warc.gz and crawl/log/part-N.parquet."""
    index = spec["index"]
    table = storage.read_parquet(ctx.path(spec["input"]), columns=["url", "host"])
    urls, hosts = table.column("url").to_pylist(), table.column("host").to_pylist()
    warc_path = ctx.path("crawl", "warc", f"part-{index:05d}.warc.gz")
    log_path = ctx.path("crawl", "log", f"part-{index:05d}.parquet")
    with (storage.atomic_path(warc_path) as tmp, open(tmp, "wb", buffering=WARC_BUFFER) as warc_out,
          fewer_gc_passes()):
        rows = asyncio.run(crawl_urls(urls, hosts, ctx.config.crawl, warc_out, ctx.rel(warc_path)))
    storage.write_parquet(log_path, log_table(rows))
    info = {"bytes_ok": sum(r.bytes for r in rows if r.reason == "ok"), "retries": sum(r.retries for r in rows),
            "request_seconds": round(sum(r.elapsed_s for r in rows), 3)}
    return PartitionResult(outcome_counts(rows), [warc_path, log_path], info)


def run(ctx: RunContext) -> dict:
    """Crawl every urls partition (skipping committed ones); write crawl/stats.json."""
    urls = [next(rel for rel in files if rel.startswith("urls/part-")) for files in upstream_partitions(ctx, "urls")]
    specs = [{"index": index, "input": rel, "reads": [rel]} for index, rel in enumerate(urls)]
    started = time.monotonic()
    commits = run_partitions(ctx, "crawl", specs, crawl_partition, ("crawl",))
    return write_stats(ctx, "crawl", summarize(commits, time.monotonic() - started))
