"""The extract stage's Ray side: crawl partition i -> docs partition i, one Ray task each.

`extract_partition(spec, ctx)` reads the crawl log's "ok" rows and their WARC response records, sends the
bodies BATCH_PAGES at a time to one IsolatedWorker running process_document, joins the Reddit metadata
and writes `docs/part-i.parquet` (DOC_SCHEMA) and `docs/rejects/part-i.parquet` (REJECT_SCHEMA); the
schemas, reasons and info are in pipeline/extract/__init__.py. `run(ctx)` maps it over the partitions.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from urllib.parse import urlsplit

import pyarrow as pa
from warcio.archiveiterator import ArchiveIterator

from pipeline import storage
from pipeline.extract.document import BATCH_PAGES, extract_documents, process_document, warm_up
from pipeline.extract.isolation import IsolatedWorker
from pipeline.runner import (
    PartitionResult, RunContext, StageError, run_partitions, summarize, upstream_partitions, write_stats,
)

PHASE = "docs"

DOC_SCHEMA = pa.schema([
    ("doc_id", pa.string()), ("url", pa.string()), ("final_url", pa.string()), ("domain", pa.string()),
    ("title", pa.string()), ("text", pa.string()), ("date", pa.string()), ("author", pa.string()),
    ("language", pa.string()), ("language_score", pa.float64()), ("chars", pa.int64()), ("words", pa.int64()),
    ("extractor", pa.string()), ("score_sum", pa.int64()), ("score_max", pa.int64()),
    ("num_submissions", pa.int32()), ("reddit_ids", pa.list_(pa.string())), ("subreddits", pa.list_(pa.string())),
    ("created_utc", pa.int64()), ("warc_file", pa.string()), ("warc_offset", pa.int64()), ("fetched_at", pa.string()),
    ("source", pa.string()), ("capture_time", pa.string()), ("archive_url", pa.string()),
])
REJECT_SCHEMA = pa.schema([("url", pa.string()), ("reason", pa.string()), ("detail", pa.string())])
URL_META_COLUMNS = ["url", "domain", "score_sum", "score_max", "num_submissions", "reddit_ids", "subreddits", "created_utc"]


def read_response_body(path: storage.AnyPath, offset: int) -> bytes:
    """The HTTP body (transfer and content encodings undone) of the WARC response record at `offset` (a ranged
    read when the WARC is an object)."""
    with storage.open_read(path) as f:
        f.seek(offset)
        record = next(iter(ArchiveIterator(f)))
        if record.rec_type != "response":
            raise ValueError(f"record at offset {offset} is a {record.rec_type} record, not a response")
        return record.content_stream().read()


def doc_id(url: str) -> str:
    return hashlib.sha1(url.encode("utf-8")).hexdigest()


def batch_outcomes(batch: list[dict], worker: IsolatedWorker, ctx: RunContext) -> list[dict]:
    """One outcome per crawl-log row of `batch`: warc_unreadable, or process_document's, run in `worker`."""
    bodies, outcomes = {}, {}
    for i, row in enumerate(batch):
        try:
            bodies[i] = read_response_body(ctx.path(row["warc_file"]), row["warc_offset"])
        except Exception as err:  # noqa: BLE001 - a damaged record is counted, the partition goes on
            detail = f"{row['warc_file']}@{row['warc_offset']}: {err}"[:500]
            outcomes[i] = {"reason": "warc_unreadable", "detail": detail}
    pages = [(body, batch[i]["charset"], batch[i]["url"]) for i, body in bodies.items()]
    outcomes.update(zip(bodies, extract_documents(pages, worker, ctx.config.extract)))
    return [outcomes[i] for i in range(len(batch))]


def extract_partition(spec: dict, ctx: RunContext) -> PartitionResult:
    """Crawl partition spec["index"] -> docs/part-i.parquet and docs/rejects/part-i.parquet."""
    config = ctx.config.extract
    try:
        log = storage.read_parquet(ctx.path(spec["log"])).to_pylist()
    except (OSError, ValueError) as err:  # pyarrow's errors for a cut-short or foreign file
        raise StageError(f"{spec['log']}: unreadable crawl log ({err}); rerun {ctx.command('crawl')} to rebuild "
                         "it") from None
    urls = {row["url"]: row for row in storage.read_parquet(ctx.path(spec["urls"]), columns=URL_META_COLUMNS).to_pylist()}
    rows = [row for row in log if row["reason"] == "ok"]
    missing = [row["url"] for row in rows if row["url"] not in urls]
    if missing:
        raise StageError(
            f"{spec['log']}: url {missing[0]!r} ({len(missing)} in all) is not in {spec['urls']}; the crawl and url "
            f"partitions disagree: rerun `webtext crawl` for this run directory"
        )
    counts, info = Counter(), Counter()
    counts["in"] = len(rows)
    docs, rejects = [], []
    started = time.monotonic()
    with IsolatedWorker(process_document, config.timeout_s, warm_up) as worker:
        for start in range(0, len(rows), BATCH_PAGES):
            batch = rows[start:start + BATCH_PAGES]
            for row, out in zip(batch, batch_outcomes(batch, worker, ctx)):
                if out["reason"]:
                    counts[out["reason"]] += 1
                    rejects.append({"url": row["url"], "reason": out["reason"], "detail": out["detail"]})
                    continue
                counts["out"] += 1
                info[f"extractor_{out['extractor']}"] += 1
                info["consulted_newspaper"] += out.pop("consulted_newspaper")
                del out["reason"]
                meta = urls[row["url"]]
                docs.append({
                    "doc_id": doc_id(row["url"]), "url": row["url"], "final_url": row["final_url"] or row["url"],
                    "domain": meta["domain"] or urlsplit(row["url"]).hostname or "", **out,
                    **{k: meta[k] for k in URL_META_COLUMNS[2:]},
                    "warc_file": row["warc_file"], "warc_offset": row["warc_offset"], "fetched_at": row["fetched_at"],
                    **{k: row.get(k) for k in ("source", "capture_time", "archive_url")},
                })
        info["worker_starts"] = worker.starts
    info["extract_seconds"] = time.monotonic() - started
    docs.sort(key=lambda d: d["doc_id"])
    rejects.sort(key=lambda r: (r["url"], r["reason"]))
    docs_path = ctx.part_path(PHASE, spec["index"], "parquet")
    rejects_path = ctx.path(PHASE, "rejects", docs_path.name)
    storage.write_parquet(docs_path, pa.Table.from_pylist(docs, schema=DOC_SCHEMA))
    storage.write_parquet(rejects_path, pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA))
    return PartitionResult(counts=dict(counts), files=[docs_path, rejects_path], info=dict(info))


def partition_specs(ctx: RunContext) -> list[dict]:
    """One spec per crawl partition: its log, its WARC and the urls partition it crawled (Reddit metadata)."""
    crawled, urls = upstream_partitions(ctx, "crawl"), upstream_partitions(ctx, "urls")
    if len(crawled) != len(urls):
        raise StageError(f"{ctx.path('crawl')}: {len(crawled)} crawl partitions for {len(urls)} urls partitions; "
                         f"rerun {ctx.command('crawl')}")
    specs = []
    for index, (files, url_files) in enumerate(zip(crawled, urls)):
        log = next(rel for rel in files if rel.startswith("crawl/log/"))
        url_part = next(rel for rel in url_files if rel.startswith("urls/part-"))
        specs.append({"index": index, "log": log, "urls": url_part, "reads": sorted(files) + [url_part]})
    return specs


def run(ctx: RunContext) -> dict:
    started = time.monotonic()
    commits = run_partitions(ctx, PHASE, partition_specs(ctx), extract_partition, ("extract",))
    return write_stats(ctx, PHASE, summarize(commits, time.monotonic() - started))
