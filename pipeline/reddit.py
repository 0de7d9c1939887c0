"""Reddit stage: Pushshift submission dumps -> candidate URLs, one row per normalized URL.

    webtext reddit --run-dir runs/x --input 'dumps/RS_2019-*.zst' dumps/RS_2005-07.xz

Inputs are Pushshift submission dumps: .zst (streamed with the 2 GiB window real RS dumps need), .xz,
.bz2, or plain .jsonl/.ndjson/.json; directories and globs are expanded, sorted. Two phases on Ray:

1. map, one task per input file: read line by line, keep link posts that pass every rule below, normalize
   their URL and write them bucketed by a hash of the host (`urls/_map/`). Every dropped line is counted
   under its reason; lines that are bad input (malformed_json, score_missing, url_missing, url_scheme,
   url_invalid, url_too_long) are also kept in `urls/rejects/part-NNNNN.parquet` (file, line, reason, reddit_id, url,
   detail), NNNNN being the input file's index. Routine drops (self posts, low scores: ~90% of a real
   dump) are only counted, so a task's memory does not grow with them.
2. reduce, one task per host bucket: aggregate per normalized URL into `urls/part-NNNNN.parquet`, so that
   URL partitions are host-disjoint and one crawl task owns all of a host's politeness state.

Rules, applied in this order; a line is counted under the first that drops it. The cheap rules come
first: self posts and low scores, most of a real dump (87% of the benchmark's), are decided from two
fields without parsing the rest of the line (see `SubmissionFilter.check_line`).

| reason             | drops                                                                          |
|--------------------|--------------------------------------------------------------------------------|
| blank_line         | an empty line                                                                  |
| malformed_json     | a line that is not a JSON object (after removing raw NUL bytes)                |
| self_post          | `is_self` true                                                                 |
| score_missing      | no integer `score` (or one beyond 64 bits)                                     |
| below_min_score    | `score` < `min_score`                                                          |
| reddit_post_link   | a URL that points back at a post on reddit                                     |
| deleted_removed    | `removed_by_category` set, `_meta.removal_type` set, selftext [deleted]/[removed] |
| nsfw               | `over_18` true while `nsfw = "drop"` (the default: WebText is a general corpus) |
| url_missing        | no `url` string                                                                |
| url_scheme         | a scheme other than http/https                                                 |
| url_invalid        | unparseable, no or bad host, bad port, whitespace                              |
| url_too_long       | over `max_url_length` characters                                               |
| blocked_domain     | host is, or is under, a `blocked_domains` entry (Wikipedia, reddit, media hosts) |
| blocked_extension  | path ends in a `blocked_extensions` entry (images, video, archives, ...)       |

`min_score` applies per submission, not to the sum over submissions of the same URL: GPT-2's WebText kept
links "which received at least 3 karma", a signal that one community found the page worth reading, and
OpenWebText and OpenWebText2 filtered per submission the same way. Summing would let a link spammed as
many 1-point posts in. Per-submission filtering is also a local decision, made while streaming. The sum
is still recorded (score_sum) and is what dedup uses to pick a survivor.

The reduce drops nothing a user would miss: `duplicate_url` counts submissions merged into another
submission's URL row and `duplicate_submission` counts a reddit id seen again (e.g. the same month in
two dump files). So for the stage, lines in = URLs out + every reason above.

Schema drift is absorbed: created_utc as int, string or float (unparseable -> null, counted in info as
created_utc_invalid), missing fields, extra `_meta`, NUL bytes in a line (stripped, counted as
nul_bytes_stripped), control characters and lone surrogates in strings (removed, or replaced by U+FFFD:
pipeline/text.py; counted as strings_scrubbed). A truncated compressed file keeps every complete line
read before the damage (counted as truncated_files with a warning); a file that yields nothing readable stops the
stage with its name.

Output `urls/part-NNNNN.parquet`, sorted by url:

| column          | type         | meaning                                                  |
|-----------------|--------------|----------------------------------------------------------|
| url             | string       | normalized URL (pipeline/urls.py)                        |
| host            | string       | lowercase IDNA host, no port                             |
| domain          | string       | registered domain (bbc.co.uk), or the host for IPs       |
| score_sum       | int64        | sum of scores over distinct submissions                  |
| score_max       | int64        | highest single submission score                          |
| num_submissions | int32        | distinct submissions linking the URL                     |
| reddit_ids      | list<string> | their ids, sorted                                        |
| subreddits      | list<string> | distinct subreddits, sorted                              |
| titles          | list<string> | distinct titles, in order of first appearance by time    |
| created_utc     | int64        | earliest submission time (null if none parseable)        |
| over_18         | bool         | any submission flagged NSFW (only with nsfw = "keep")    |
"""

from __future__ import annotations

import bz2
import contextlib
import io
import json
import lzma
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import simdjson
import zstandard

from pipeline import storage
from pipeline.config import ConfigError, RedditConfig
from pipeline.runner import PartitionResult, RunContext, StageError, run_partitions, summarize, write_stats
from pipeline.text import scrub
from pipeline.urls import InvalidURL, domain_matches, normalize_url, path_extension, registered_domain

SUFFIXES = (".zst", ".xz", ".bz2", ".jsonl", ".ndjson", ".json")
BLOCK_BYTES = 1 << 16
UTF8_BOM = b"\xef\xbb\xbf"
_SELF_LINK = re.compile(r"^https?://(www\.|old\.|np\.)?reddit\.com/r/[^/]+/comments/", re.I)
# Reasons for input that is bad rather than merely not wanted; only these lines go to the rejects table.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the output columns are int64
BAD_INPUT = frozenset({"malformed_json", "score_missing", "url_missing", "url_scheme", "url_invalid", "url_too_long"})

@dataclass(frozen=True)
class Drop:
    """Why a line was dropped; reddit_id and url are filled for bad input (BAD_INPUT), for the rejects table."""

    reason: str
    detail: str = ""
    reddit_id: str | None = None
    url: str | None = None


# The drops of nearly every line, made once.
BLANK_LINE, SELF_POST, BELOW_MIN_SCORE = Drop("blank_line"), Drop("self_post"), Drop("below_min_score")
REDDIT_POST_LINK = Drop("reddit_post_link")

MAP_SCHEMA = pa.schema(
    [
        ("url", pa.string()), ("host", pa.string()), ("bucket", pa.int32()), ("score", pa.int64()),
        ("reddit_id", pa.string()), ("subreddit", pa.string()), ("title", pa.string()),
        ("created_utc", pa.int64()), ("over_18", pa.bool_()),
    ]
)
KEPT_SCHEMA = pa.schema([f for f in MAP_SCHEMA if f.name != "bucket"])  # what filter_dump returns
KEPT_BATCH_ROWS = 4096  # kept rows per batch handed from the reader to the writer
FLUSH_ROWS = 16384  # kept rows a map task holds before writing them to their bucket files
REJECT_SCHEMA = pa.schema(
    [
        ("file", pa.string()), ("line", pa.int64()), ("reason", pa.string()), ("reddit_id", pa.string()),
        ("url", pa.string()), ("detail", pa.string()),
    ]
)
URL_SCHEMA = pa.schema(
    [
        ("url", pa.string()), ("host", pa.string()), ("domain", pa.string()), ("score_sum", pa.int64()),
        ("score_max", pa.int64()), ("num_submissions", pa.int32()), ("reddit_ids", pa.list_(pa.string())),
        ("subreddits", pa.list_(pa.string())), ("titles", pa.list_(pa.string())),
        ("created_utc", pa.int64()), ("over_18", pa.bool_()),
    ]
)


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files, directories and globs -> sorted, de-duplicated list of dump files; errors say which input."""
    files: set[str] = set()
    for item in inputs:
        try:
            found = storage.expand(item)
        except ValueError as err:
            raise ConfigError(f"--input {err}") from None
        except storage.StorageError as err:
            raise ConfigError(f"--input {err}") from None
        single = len(found) == 1 and str(found[0]) in (item, str(storage.location(item)))
        if not single:  # a folder or a glob: the dumps in it
            found = [p for p in found if p.name.endswith(SUFFIXES)]
        if not found:
            raise ConfigError(f"--input {item}: no such file, or no {'/'.join(SUFFIXES)} files in it; check the path")
        for p in found:
            if not p.name.endswith(SUFFIXES):
                raise ConfigError(f"--input {p}: unsupported file type; expected one of {', '.join(SUFFIXES)}")
            files.add(str(p))
    return sorted(files)


def _zstd_blocks(raw):
    """Decompressed blocks of a (multi-frame) zstd file; EOFError when the last frame is cut short."""
    dctx = zstandard.ZstdDecompressor(max_window_size=2**31)
    frame = dctx.decompressobj()
    while chunk := raw.read(BLOCK_BYTES):
        yield frame.decompress(chunk)
        while frame.eof and frame.unused_data:
            rest, frame = frame.unused_data, dctx.decompressobj()
            yield frame.decompress(rest)
    if not frame.eof:
        raise EOFError("zstd stream ended before the end of its frame")


def _blocks(path: str):
    """Decompressed blocks of a dump file (local or an object, streamed), whatever its compression."""
    with storage.open_read(storage.location(path)) as raw:
        if path.endswith(".zst"):
            yield from _zstd_blocks(raw)
            return
        opener = {".xz": lzma.open, ".bz2": bz2.open}.get(Path(path).suffix)
        stream = opener(raw) if opener else raw
        while block := stream.read(BLOCK_BYTES):
            yield block


def read_line_batches(path: str, damage: list[tuple[str, bool]]):
    """Yield the lines of a dump a decompressed block at a time, as lists of bytes (each with its newline
    but perhaps the file's last); a UTF-8 byte order mark at the start is skipped. On a damaged stream,
    stop and append (why, whether the last line yielded was cut short) to `damage`.

    Lists rather than single lines, and BytesIO.readlines rather than bytes.split: each was a measurable
    share of the stage's cost (readlines divides a block ~3x faster than split here).
    """
    tail = b""
    blocks = _blocks(path)
    first = True
    while True:
        try:
            block = next(blocks, None)
        except (EOFError, OSError, lzma.LZMAError, zstandard.ZstdError) as err:
            damage.append((f"{type(err).__name__}: {err}", bool(tail)))
            break
        if block is None:
            break
        if first and block:
            block, first = block.removeprefix(UTF8_BOM), False
        if not block:  # a compressed chunk that completed no block yet: not the end of the stream
            continue
        lines = io.BytesIO(block).readlines()
        lines[0] = tail + lines[0]
        tail = b"" if lines[-1].endswith(b"\n") else lines.pop()
        yield lines
    if tail:
        yield [tail]


def _scrub(value, info: Counter) -> str | None:
    """A str without NULs, other C0 controls or lone surrogates (pipeline/text.py); None for non-strings."""
    if not isinstance(value, str):
        return None
    clean = scrub(value)
    if clean is not value:
        info["strings_scrubbed"] += 1
    return clean


def _created_utc(value) -> int | None:
    try:
        seconds = int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None
    return seconds if INT64_MIN <= seconds <= INT64_MAX else None


def _parse_repaired(line: bytes, info: Counter):
    """A line simdjson refused, parsed leniently: raw NULs removed, bad UTF-8 replaced, and lone surrogate
    escapes accepted (the stdlib parser allows them; _scrub replaces them later). None if still not JSON."""
    if b"\x00" in line:
        info["nul_bytes_stripped"] += 1
        line = line.replace(b"\x00", b"")
    try:
        return json.loads(line.decode("utf-8", errors="replace"))
    except ValueError:
        return None


class SubmissionFilter:
    """The rules of the module docstring as one function of a parsed record; built once per task."""

    def __init__(self, config: RedditConfig):
        self.config = config
        self.blocked = frozenset(d.lower() for d in config.blocked_domains)
        self.extensions = frozenset(e.lower().lstrip(".") for e in config.blocked_extensions)
        self.tracking = tuple(p.lower() for p in config.tracking_params)
        self.parser = simdjson.Parser()
        self.is_blocked = lru_cache(maxsize=65536)(partial(domain_matches, rules=self.blocked))

    def check_line(self, line: bytes, info: Counter) -> Drop | dict:
        """Parse one dump line and apply the rules: a Drop, or the kept submission's fields.

        Two parsers, each where it is fastest. simdjson parses a 2 KB line in ~2 µs and reads single
        fields without building the rest: enough for the first rules, which drop most of a real dump
        (self posts, low scores). A line that passes them is parsed whole by orjson (~8 µs), because the
        remaining rules read a dozen fields and a simdjson field read costs ~1 µs (~5 µs for a missing
        key). A line both refuse (NULs, bad UTF-8, lone surrogate escapes, broken JSON) is repaired and
        parsed by the stdlib.
        """
        try:
            view = self.parser.parse(line)
        except (ValueError, RuntimeError):  # RuntimeError: an integer beyond 64 bits
            view = None
        if isinstance(view, simdjson.Object):
            screened = self.kind_and_score(view)
            if isinstance(screened, Drop) and screened.reason in BAD_INPUT:
                screened = replace(screened, reddit_id=_scrub(view.get("id"), info), url=_scrub(view.get("url"), info))
            del view  # simdjson refuses to parse the next line while a view of this one is alive
            if isinstance(screened, Drop):
                return screened
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = _parse_repaired(line, info)
        if record is None:
            start = line[:200].rstrip(b"\r\n").decode("utf-8", errors="replace")
            return Drop("malformed_json", start.replace("\x00", "\\0"))
        outcome = self.check(record, info)
        if isinstance(outcome, Drop) and outcome.reason in BAD_INPUT and isinstance(record, dict):
            return replace(outcome, reddit_id=_scrub(record.get("id"), info), url=_scrub(record.get("url"), info))
        return outcome

    def kind_and_score(self, record) -> Drop | int:
        """The rules up to below_min_score, on a dict or a simdjson view of one: a Drop, or the score."""
        if record.get("is_self") is True:
            return SELF_POST
        score = record.get("score")
        if isinstance(score, str) and score.lstrip("-").isdigit():
            score = int(score)
        if not isinstance(score, int) or isinstance(score, bool) or not INT64_MIN <= score <= INT64_MAX:
            return Drop("score_missing", repr(score)[:100])
        if score < self.config.min_score:
            return BELOW_MIN_SCORE
        return score

    def check(self, record, info: Counter) -> Drop | dict:
        """Every rule, on a parsed line: a Drop, or the kept submission's fields."""
        if not isinstance(record, dict):
            return Drop("malformed_json", "not a JSON object")
        score = self.kind_and_score(record)
        if isinstance(score, Drop):
            return score
        raw_url = record.get("url")
        if isinstance(raw_url, str) and _SELF_LINK.match(raw_url):
            return REDDIT_POST_LINK
        meta = record.get("_meta")
        meta = meta if isinstance(meta, dict) else {}
        removal = record.get("removed_by_category") or meta.get("removal_type")
        if removal or record.get("selftext") in ("[deleted]", "[removed]"):
            return Drop("deleted_removed", str(removal or ""))
        if record.get("over_18") is True and self.config.nsfw == "drop":
            return Drop("nsfw")
        url = _scrub(raw_url, info)
        if not url:
            return Drop("url_missing")
        try:
            url, host = normalize_url(url, self.tracking, self.config.max_url_length)
        except InvalidURL as err:
            return Drop(err.reason, str(err)[:200])
        if self.is_blocked(host):
            return Drop("blocked_domain", host)
        extension = path_extension(url)
        if extension in self.extensions:
            return Drop("blocked_extension", extension)
        created = _created_utc(record.get("created_utc"))
        if created is None:
            info["created_utc_invalid"] += 1
        return {
            "url": url,
            "host": host,
            "score": score,
            "reddit_id": _scrub(record.get("id"), info) or "",
            "subreddit": _scrub(record.get("subreddit"), info) or "",
            "title": _scrub(record.get("title"), info) or "",
            "created_utc": created,
            "over_18": record.get("over_18") is True,
        }


def filter_dump(path: str, config: RedditConfig, emit) -> tuple[list[dict], Counter, Counter]:
    """Read one dump, pass its kept submissions to `emit` as KEPT_SCHEMA batches; (rejects, counts, info).

    Pure: no Ray, no output of its own. Dropped lines are only counted, except bad input (BAD_INPUT), which
    is returned with file and line number. Kept rows are gathered column-wise and handed on every
    KEPT_BATCH_ROWS rows, so what the reader holds does not grow with the dump.
    """
    rules = SubmissionFilter(config)
    columns: dict[str, list] = {name: [] for name in KEPT_SCHEMA.names}
    rejects = []
    counts: Counter = Counter()
    info: Counter = Counter()
    damage: list[tuple[str, bool]] = []
    name = Path(path).name
    line_no = kept = 0
    for lines in read_line_batches(path, damage):
        for line in lines:
            line_no += 1
            outcome = rules.check_line(line, info) if line and not line.isspace() else BLANK_LINE
            if isinstance(outcome, Drop):
                counts[outcome.reason] += 1
                if outcome.reason in BAD_INPUT:
                    rejects.append({"file": name, "line": line_no, "reason": outcome.reason,
                                    "reddit_id": outcome.reddit_id, "url": outcome.url,
                                    "detail": scrub(outcome.detail)})
                continue
            for key, values in columns.items():
                values.append(outcome[key])
            kept += 1
            if kept % KEPT_BATCH_ROWS == 0:
                emit(_pack(columns))
    if kept % KEPT_BATCH_ROWS:
        emit(_pack(columns))
    counts["in"], counts["out"] = line_no, kept
    if damage:
        why, cut_short = damage[0]
        if line_no == 0:
            raise ValueError(f"{path}: nothing readable ({why}); check that the file is a Pushshift dump")
        info["truncated_files"] += 1
        complete = line_no - cut_short
        partial = f"; line {line_no} was cut short and is counted under its reason" if cut_short else ""
        print(f"[reddit] warning: {path} is damaged after line {complete} ({why}); its {complete} complete "
              f"lines were read{partial}", file=sys.stderr)
    return rejects, counts, info


def _pack(columns: dict[str, list]) -> pa.RecordBatch:
    """The gathered rows as one Arrow batch (~3x smaller than the Python strings); the lists are emptied."""
    batch = pa.RecordBatch.from_pydict(columns, KEPT_SCHEMA)
    for values in columns.values():
        values.clear()
    return batch


class BucketWriter:
    """Kept submissions -> one Parquet file per host bucket, written while the dump is read.

    Batches wait until FLUSH_ROWS rows are pending, then each bucket's share is appended to its file as a
    row group, so a map task's memory stays bounded whatever the dump's size. Files are written under
    temporary names and renamed when the writer closes without error; a bucket with no rows has no file.
    """

    def __init__(self, path_for_bucket, num_buckets: int):
        self.path_for_bucket = path_for_bucket
        self.num_buckets = num_buckets
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.writers: dict[int, pq.ParquetWriter] = {}
        self.files = contextlib.ExitStack()

    def __enter__(self) -> BucketWriter:
        return self

    def add(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.pending_rows += len(batch)
        if self.pending_rows >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        table = pa.Table.from_batches(self.pending, KEPT_SCHEMA)
        self.pending, self.pending_rows = [], 0
        buckets = pa.array([_bucket(host, self.num_buckets) for host in table.column("host").to_pylist()], pa.int32())
        table = table.append_column("bucket", buckets).select(MAP_SCHEMA.names)
        for bucket in sorted(set(buckets.to_pylist())):
            self._writer(bucket).write_table(table.filter(pc.equal(table["bucket"], bucket)))

    def _writer(self, bucket: int) -> pq.ParquetWriter:
        if bucket not in self.writers:
            tmp = self.files.enter_context(storage.atomic_path(self.path_for_bucket(bucket)))
            self.writers[bucket] = pq.ParquetWriter(tmp, MAP_SCHEMA, **storage.PARQUET_OPTIONS)
            self.files.callback(self.writers[bucket].close)  # closed before atomic_path renames the file
        return self.writers[bucket]

    def __exit__(self, *exc) -> None:
        if exc[0] is None and self.pending:
            self.flush()
        self.files.__exit__(*exc)

    @property
    def paths(self) -> list[Path]:
        return [self.path_for_bucket(bucket) for bucket in sorted(self.writers)]


@lru_cache(maxsize=65536)
def _bucket(host: str, num_buckets: int) -> int:
    return storage.stable_hash(host) % num_buckets


def map_dump(path: str, config: RedditConfig, path_for_bucket) -> tuple[list[Path], list[dict], Counter, Counter]:
    """The map side for one dump: filter it, write kept rows per host bucket; (files, rejects, counts, info)."""
    with BucketWriter(path_for_bucket, config.num_partitions) as out:
        rejects, counts, info = filter_dump(path, config, out.add)
    return out.paths, rejects, counts, info


def _map_dump(spec: dict, ctx: RunContext) -> PartitionResult:
    files, rejects, counts, info = map_dump(
        spec["path"], ctx.config.reddit, lambda b: ctx.path("urls", "_map", f"part-{spec['index']:05d}-{b:05d}.parquet")
    )
    rejects_path = ctx.part_path("urls/rejects", spec["index"], "parquet")
    storage.write_parquet(rejects_path, pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA))
    return PartitionResult(counts=counts, files=[*files, rejects_path], info=info)


def aggregate_urls(rows: list[dict]) -> tuple[list[dict], Counter]:
    """Submissions -> one row per URL (URL_SCHEMA), sorted by url; counts duplicate_url/_submission."""
    counts: Counter = Counter(**{"in": len(rows)})
    by_url: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r["url"], r["created_utc"] or 0, r["reddit_id"])):
        by_url.setdefault(row["url"], []).append(row)
    out = []
    for url, subs in by_url.items():
        distinct = list({s["reddit_id"]: s for s in subs}.values())
        counts["duplicate_submission"] += len(subs) - len(distinct)
        counts["duplicate_url"] += len(distinct) - 1
        times = [s["created_utc"] for s in distinct if s["created_utc"] is not None]
        out.append(
            {
                "url": url,
                "host": distinct[0]["host"],
                "domain": registered_domain(distinct[0]["host"]),
                "score_sum": sum(s["score"] for s in distinct),
                "score_max": max(s["score"] for s in distinct),
                "num_submissions": len(distinct),
                "reddit_ids": sorted(s["reddit_id"] for s in distinct),
                "subreddits": sorted({s["subreddit"] for s in distinct}),
                "titles": list(dict.fromkeys(s["title"] for s in distinct)),
                "created_utc": min(times) if times else None,
                "over_18": any(s["over_18"] for s in distinct),
            }
        )
    counts["out"] = len(out)
    return out, counts


def _reduce_bucket(spec: dict, ctx: RunContext) -> PartitionResult:
    table = storage.read_parquet([ctx.path(p) for p in spec["reads"]]) if spec["reads"] else MAP_SCHEMA.empty_table()
    rows, counts = aggregate_urls(table.to_pylist())
    path = ctx.part_path("urls", spec["index"], "parquet")
    storage.write_parquet(path, pa.Table.from_pylist(rows, schema=URL_SCHEMA))
    return PartitionResult(counts=counts, files=[path])


def unusable_inputs(files: list[str], map_commits: list[dict]) -> list[str]:
    """One warning per input file from which nothing was kept or that is mostly not JSON."""
    warnings = []
    for path, commit in zip(files, map_commits):
        counts = commit["counts"]
        lines, kept, malformed = counts.get("in", 0), counts.get("out", 0), counts.get("malformed_json", 0)
        if lines == 0:
            warnings.append(f"{path}: empty (0 lines)")
        elif malformed * 2 > lines:
            warnings.append(f"{path}: {malformed} of {lines} lines are not JSON; is it a Pushshift submission dump?")
        elif kept == 0:
            warnings.append(f"{path}: 0 URLs kept from {lines} lines ({_top_reasons(counts)})")
    return warnings


def _top_reasons(counts: dict) -> str:
    drops = sorted(((v, k) for k, v in counts.items() if k not in ("in", "out") and v), reverse=True)
    return ", ".join(f"{k}={v}" for v, k in drops[:3])


def run(ctx: RunContext, inputs: list[str]) -> dict:
    """Map every dump, reduce per host bucket, write urls/stats.json; returns the stats."""
    started = time.monotonic()
    config = ctx.config.reddit
    files = expand_inputs(inputs)
    map_specs = [{"index": i, "path": p, "reads": [p]} for i, p in enumerate(files)]
    map_commits = run_partitions(ctx, "urls/_map", map_specs, _map_dump, ("reddit",))
    warnings = unusable_inputs(files, map_commits)
    for warning in warnings:
        print(f"[reddit] warning: {warning}", file=sys.stderr)
    if len(warnings) == len(files):
        raise StageError(f"no usable input: every file given to --input was empty, not a submission dump or had "
                         f"nothing kept ({'; '.join(warnings)[:1000]}); check --input")
    by_bucket: dict[int, list[str]] = {b: [] for b in range(config.num_partitions)}
    for commit in map_commits:
        for rel in commit["files"]:
            if "/_map/" in rel:
                by_bucket[int(Path(rel).stem.split("-")[2])].append(rel)
    reduce_specs = [{"index": b, "reads": sorted(by_bucket[b])} for b in range(config.num_partitions)]
    reduce_commits = run_partitions(ctx, "urls", reduce_specs, _reduce_bucket, ("reddit",))
    mapped = summarize(map_commits, 0)
    reduced = summarize(reduce_commits, 0)
    stats = {
        "inputs": files,
        "unusable_inputs": warnings,
        "partitions": len(reduce_commits),
        "records_in": mapped["records_in"],
        "records_out": reduced["records_out"],
        "submissions_kept": mapped["records_out"],
        "dropped": dict(sorted({**mapped["dropped"], **reduced["dropped"]}.items())),
        "info": mapped["info"],
        "bytes_written": mapped["bytes_written"] + reduced["bytes_written"],
        "seconds": round(time.monotonic() - started, 3),
    }
    return write_stats(ctx, "urls", stats)
