"""The crawl stage: one Ray task per urls partition, through the runner (pipeline/runner.py).

    webtext crawl --run-dir runs/x            # crawl every partition not yet committed
    webtext crawl --run-dir runs/x --plan     # print the projected makespan (pipeline/crawl/plan.py), crawl nothing

Crawl partition i = urls partition i; `crawl_partition` writes crawl/warc/part-i.warc.gz and
crawl/log/part-i.parquet (atomically) and returns the counts: in = URLs, out = "ok" pages, every other
reason a drop. Info: bytes_ok, retries, request_seconds, ok_live, ok_archive, archive_fallbacks (URLs
live_then_archive sent to the archive) and the archive's requests (cdx_requests, cdx_cached,
replay_requests, range_requests). With an archive source the CDX answers are kept in
crawl/cdx/part-i.jsonl as they arrive (not an output: a rerun of the partition reads them instead of asking).

`report_section` is the stage's part of the run report: the plan beside the measured crawl time, and the
pages the archive served.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from pipeline import storage
from pipeline.crawl.archive import CdxCache
from pipeline.crawl.crawler import crawl_task
from pipeline.crawl.log import LogRow, log_table, outcome_counts
from pipeline.crawl.plan import DEFAULT_RESPONSE_S, crawl_plan, plan_lines
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


def partition_info(rows: list[LogRow], archive_counts: dict[str, int]) -> dict:
    ok = [r for r in rows if r.reason == "ok"]
    return {"bytes_ok": sum(r.bytes for r in ok), "retries": sum(r.retries for r in rows),
            "request_seconds": round(sum(r.elapsed_s for r in rows), 3),
            "ok_live": sum(r.source == "live" for r in ok), "ok_archive": sum(r.source == "archive" for r in ok),
            "archive_fallbacks": sum(r.live_reason is not None for r in rows), **archive_counts}


def crawl_partition(spec: dict, ctx: RunContext) -> PartitionResult:
    """Ray task: crawl one urls partition into crawl/warc/part-N.warc.gz and crawl/log/part-N.parquet."""
    index, config = spec["index"], ctx.config.crawl
    columns = ["url", "host"] + (["created_utc"] if config.source != "live" else [])
    table = storage.read_parquet(ctx.path(spec["input"]), columns=columns)
    urls, hosts = table.column("url").to_pylist(), table.column("host").to_pylist()
    times = table.column("created_utc").to_pylist() if config.source != "live" else None
    warc_path = ctx.path("crawl", "warc", f"part-{index:05d}.warc.gz")
    log_path = ctx.path("crawl", "log", f"part-{index:05d}.parquet")
    cache = CdxCache(ctx.path("crawl", "cdx", f"part-{index:05d}.jsonl") if config.source != "live" else None)
    with (storage.atomic_writer(warc_path, buffering=WARC_BUFFER) as warc_out, fewer_gc_passes(),
          contextlib.closing(cache)):
        rows, archive_counts = asyncio.run(crawl_task(urls, hosts, config, warc_out, ctx.rel(warc_path),
                                                      times=times, cdx_cache=cache))
    storage.write_parquet(log_path, log_table(rows))
    return PartitionResult(outcome_counts(rows), [warc_path, log_path], partition_info(rows, archive_counts))


def url_partitions(ctx: RunContext) -> list[str]:
    return [next(rel for rel in files if rel.startswith("urls/part-")) for files in upstream_partitions(ctx, "urls")]


def run(ctx: RunContext, plan: bool = False) -> dict:
    """Crawl every urls partition (skipping committed ones); write crawl/stats.json. `plan`: print the plan only."""
    if plan:
        found = plan_for(ctx.run_dir, ctx.config)
        print("\n".join(plan_lines(found)), file=sys.stderr)
        return found
    urls = url_partitions(ctx)
    specs = [{"index": index, "input": rel, "reads": [rel]} for index, rel in enumerate(urls)]
    started = time.monotonic()
    commits = run_partitions(ctx, "crawl", specs, crawl_partition, ("crawl",))
    return write_stats(ctx, "crawl", summarize(commits, time.monotonic() - started))


# ----------------------------------------------------------------------------------------------------------
# The plan and the report.


def host_counts(run_dir: Path) -> list[Counter]:
    """URL count per host of every urls partition (in partition order)."""
    files = sorted((run_dir / "urls").glob("part-*.parquet"))
    return [Counter(storage.read_parquet(f, columns=["host"]).column("host").to_pylist()) for f in files]


def measured_response_s(run_dir: Path) -> float | None:
    """The median time in requests of a kept page in this run's crawl log, per attempt; None without a log."""
    files = sorted((run_dir / "crawl" / "log").glob("part-*.parquet"))
    if not files:
        return None
    log = storage.read_parquet(files, columns=["reason", "elapsed_ms", "retries"]).to_pylist()
    times = [r["elapsed_ms"] / 1000 / (1 + r["retries"]) for r in log if r["reason"] == "ok"]
    return statistics.median(times) if times else None


def plan_for(run_dir: Path, config) -> dict:
    """The plan of this run's urls partitions under `config`, at the measured response time if there is one."""
    return crawl_plan(config, host_counts(run_dir), measured_response_s(run_dir) or DEFAULT_RESPONSE_S)


def archive_lines(stats: dict) -> list[str]:
    info = stats.get("info", {})
    if not info.get("ok_archive") and not info.get("archive_fallbacks"):
        return []
    dropped = {k: v for k, v in stats.get("dropped", {}).items() if k.startswith("archive_") and v}
    return [f"archive: {info.get('ok_archive', 0)} pages served from the archive ({info.get('archive_fallbacks', 0)} "
            f"live failures sent to it), {info.get('ok_live', 0)} live; {info.get('cdx_requests', 0)} CDX requests "
            f"({info.get('cdx_cached', 0)} answered from the cache); not archived: "
            + (", ".join(f"{k}={v}" for k, v in sorted(dropped.items())) or "-")]


def report_section(run_dir: Path, plots: Path):
    """The crawl's report section: the plan beside the measured crawl time, the archive's share."""
    from pipeline.config import load_config
    from pipeline.report import Section, read_json

    if not any((run_dir / "urls").glob("part-*.parquet")):
        return None
    plan = plan_for(run_dir, load_config(run_dir / "config.toml"))
    stats = read_json(run_dir / "crawl" / "stats.json") or {}
    commits = [read_json(p) for p in sorted((run_dir / "crawl" / "_commits").glob("part-*.json"))]
    longest = max((c["seconds"] for c in commits if c), default=None)
    measured = {"stage_s": stats.get("seconds"), "longest_partition_s": longest}
    lines = [f"crawl: projected makespan {plan['makespan_s']:.1f} s at {plan['response_s']:.2f} s per response"
             + (f"; measured: longest partition {longest:.1f} s, stage {stats['seconds']:.1f} s (this command)"
                if longest is not None and "seconds" in stats else "")]
    lines += [line for line in plan_lines(plan) if line.startswith("bounded by")]
    lines += archive_lines(stats)
    return Section("crawl", lines=lines, data={"plan": plan, "measured": measured})
