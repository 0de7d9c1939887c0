"""Reddit stage: Pushshift submission dumps -> candidate URLs, one row per normalized URL.

    webtext reddit --run-dir runs/x --input 'dumps/RS_2019-*.zst' dumps/RS_2005-07.xz

Inputs are Pushshift submission dumps: .zst (streamed with the 2 GiB window real RS dumps need), .xz,
.bz2, or plain .jsonl/.ndjson/.json; directories and globs are expanded, sorted. Two phases on Ray:

1. map, one task per input file: read line by line, keep link posts that pass every rule below, normalize
   their URL and write them bucketed by a hash of the host (`urls/_map/`). Every dropped line is counted
   under its reason; lines that are bad input (malformed_json, score_missing, url_missing, url_scheme,
   url_invalid) are also kept in `urls/rejects/part-NNNNN.parquet` (file, line, reason, reddit_id, url,
   detail), NNNNN being the input file's index. Routine drops (self posts, low scores: ~90% of a real
   dump) are only counted, so a task's memory does not grow with them.
2. reduce, one task per host bucket: aggregate per normalized URL into `urls/part-NNNNN.parquet`, so that
   URL partitions are host-disjoint and one crawl task owns all of a host's politeness state.

Rules, applied in this order; a line is counted under the first that drops it:

| reason             | drops                                                                          |
|--------------------|--------------------------------------------------------------------------------|
| blank_line         | an empty line                                                                  |
| malformed_json     | a line that is not a JSON object (after removing raw NUL bytes)                |
| self_post          | `is_self` true, or a URL that points back at the post on reddit                |
| deleted_removed    | `removed_by_category` set, `_meta.removal_type` set, selftext [deleted]/[removed] |
| score_missing      | no integer `score`                                                             |
| below_min_score    | `score` < `min_score`                                                          |
| nsfw               | `over_18` true while `nsfw = "drop"` (the default: WebText is a general corpus) |
| url_missing        | no `url` string                                                                |
| url_scheme         | a scheme other than http/https                                                 |
| url_invalid        | unparseable, no or bad host, bad port, whitespace, over `max_url_length`        |
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
created_utc_invalid), missing fields, extra `_meta`, NUL bytes (stripped, counted), lone surrogates in
strings (replaced by U+FFFD, counted). A truncated compressed file keeps every complete line read before
the damage (counted as truncated_files with a warning); a file that yields nothing readable stops the
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
import glob
import lzma
import re
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import zstandard

from pipeline import storage
from pipeline.config import ConfigError, RedditConfig
from pipeline.runner import PartitionResult, RunContext, run_partitions, summarize, write_stats
from pipeline.urls import InvalidURL, domain_matches, normalize_url, path_extension, registered_domain

SUFFIXES = (".zst", ".xz", ".bz2", ".jsonl", ".ndjson", ".json")
BLOCK_BYTES = 1 << 16
_SURROGATE = re.compile("[\ud800-\udfff]")
_SELF_LINK = re.compile(r"^https?://(www\.|old\.|np\.)?reddit\.com/r/[^/]+/comments/", re.I)
# Most lines of a real dump are self posts or low-score links, and parsing a 2 KB line is most of the
# cost of dropping it. `prescreen` decides those two cases from bytes when the answer is unambiguous: the
# line is one whole object; it has exactly one is_self key (crosspost copies nested in a record carry
# their own is_self and score, so lines with several are parsed); for a low score also exactly one score
# key, no sign of removal (the rule before it), and no link back to reddit (a self post by URL).
# Everything else is parsed and goes through SubmissionFilter.check; tests hold the two to agreement.
_SCORE_VALUE = re.compile(rb"\s*(-?\d+)\s*[,}]")


def _value_after(line: bytes, key: bytes) -> bytes:
    """The first non-blank bytes after `key` (the start of its JSON value)."""
    start = line.find(key) + len(key)
    return line[start:start + 12].lstrip()


def prescreen(line: bytes, min_score: int) -> str | None:
    """"self_post" or "below_min_score" when the raw line alone decides it, else None (parse it)."""
    # bytes.count and `in` scan at memchr speed; regular expressions here cost more than the parse saved.
    key = line.find(b'"is_self":')
    if key < 0 or line.find(b'"is_self":', key + 10) >= 0 or not line.rstrip().endswith(b"}"):
        return None
    is_self = line[key + 10:key + 22].lstrip()
    if is_self.startswith(b"true"):
        return "self_post"
    if not is_self.startswith(b"false") or line.count(b'"score":') != 1:
        return None
    if (b'"[deleted]"' in line or b'"[removed]"' in line or b'"removal_type"' in line
            or b"reddit.com" in line):
        return None
    if b'"removed_by_category":' in line and not _value_after(line, b'"removed_by_category":').startswith(b"null"):
        return None
    score = _SCORE_VALUE.match(line, line.find(b'"score":') + 8)
    return "below_min_score" if score is not None and int(score.group(1)) < min_score else None


# Reasons for input that is bad rather than merely not wanted; only these lines go to the rejects table.
BAD_INPUT = frozenset({"malformed_json", "score_missing", "url_missing", "url_scheme", "url_invalid"})

MAP_SCHEMA = pa.schema(
    [
        ("url", pa.string()), ("host", pa.string()), ("bucket", pa.int32()), ("score", pa.int64()),
        ("reddit_id", pa.string()), ("subreddit", pa.string()), ("title", pa.string()),
        ("created_utc", pa.int64()), ("over_18", pa.bool_()),
    ]
)
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
        path = Path(item)
        if path.is_dir():
            found = [p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)]
        elif path.is_file():
            found = [path]
        else:
            found = [Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file()]
        if not found:
            raise ConfigError(f"--input {item}: no such file, or no {'/'.join(SUFFIXES)} files in it")
        for p in found:
            if not p.name.endswith(SUFFIXES):
                raise ConfigError(f"--input {p}: unsupported file type; expected one of {', '.join(SUFFIXES)}")
            files.add(str(p.resolve()))
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
    """Decompressed blocks of a dump file, whatever its compression."""
    with open(path, "rb") as raw:
        if path.endswith(".zst"):
            yield from _zstd_blocks(raw)
            return
        opener = {".xz": lzma.open, ".bz2": bz2.open}.get(Path(path).suffix)
        stream = opener(raw) if opener else raw
        while block := stream.read(BLOCK_BYTES):
            yield block


def read_lines(path: str, damage: list[str]):
    """Yield (line number from 1, bytes) of a dump; on a damaged stream, stop and append why to `damage`."""
    line_no, tail = 0, b""
    blocks = _blocks(path)
    while True:
        try:
            block = next(blocks, b"")
        except (EOFError, OSError, lzma.LZMAError, zstandard.ZstdError) as err:
            damage.append(f"{type(err).__name__}: {err}")
            break
        if not block:
            break
        lines = (tail + block).split(b"\n")
        tail = lines.pop()
        for line in lines:
            line_no += 1
            yield line_no, line
    if tail:
        yield line_no + 1, tail


def _scrub(value, info: Counter) -> str | None:
    """A str without NULs or lone surrogates (they break pyarrow and trafilatura); None for non-strings."""
    if not isinstance(value, str):
        return None
    if "\x00" in value:
        info["nul_chars_removed"] += 1
        value = value.replace("\x00", "")
    if _SURROGATE.search(value):
        info["surrogates_replaced"] += 1
        value = _SURROGATE.sub("\ufffd", value)
    return value


def _created_utc(value) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None


def _parse(line: bytes, info: Counter):
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    if b"\x00" in line:
        info["nul_bytes_stripped"] += 1
        line = line.replace(b"\x00", b"")
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    import json  # the stdlib parser accepts lone surrogate escapes, which orjson refuses

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

    def check(self, record, info: Counter) -> tuple[str, str] | dict:
        """(reason, detail) for a dropped record, else the kept submission's fields."""
        if not isinstance(record, dict):
            return "malformed_json", "not a JSON object"
        raw_url = record.get("url")
        if record.get("is_self") is True or (isinstance(raw_url, str) and _SELF_LINK.match(raw_url)):
            return "self_post", ""
        meta = record.get("_meta") if isinstance(record.get("_meta"), dict) else {}
        if record.get("removed_by_category") or meta.get("removal_type") or record.get("selftext") in (
            "[deleted]",
            "[removed]",
        ):
            return "deleted_removed", str(record.get("removed_by_category") or meta.get("removal_type") or "")
        score = record.get("score")
        if isinstance(score, str) and score.lstrip("-").isdigit():
            score = int(score)
        if not isinstance(score, int) or isinstance(score, bool):
            return "score_missing", repr(score)[:100]
        if score < self.config.min_score:
            return "below_min_score", str(score)
        if record.get("over_18") is True and self.config.nsfw == "drop":
            return "nsfw", ""
        url = _scrub(raw_url, info)
        if not url:
            return "url_missing", ""
        try:
            url, host = normalize_url(url, self.tracking, self.config.max_url_length)
        except InvalidURL as err:
            return err.reason, str(err)[:200]
        if domain_matches(host, self.blocked):
            return "blocked_domain", host
        extension = path_extension(url)
        if extension in self.extensions:
            return "blocked_extension", extension
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


def filter_dump(path: str, config: RedditConfig) -> tuple[pa.Table, list[dict], Counter, Counter]:
    """Read one dump: (kept submissions as MAP_SCHEMA less bucket, rejects of bad input, counts, info).

    Pure: no Ray, no output. Kept rows are held column-wise (far smaller than one dict per row); dropped
    lines are only counted, except bad input (BAD_INPUT), which is kept with file and line number.
    """
    rules = SubmissionFilter(config)
    columns: dict[str, list] = {name: [] for name in MAP_SCHEMA.names if name != "bucket"}
    rejects = []
    counts: Counter = Counter()
    info: Counter = Counter()
    damage: list[str] = []
    name = Path(path).name
    for line_no, line in read_lines(path, damage):
        counts["in"] += 1
        if not line.strip():
            counts["blank_line"] += 1
            continue
        decided = prescreen(line, config.min_score)
        if decided is not None:
            counts[decided] += 1
            continue
        record = _parse(line, info)
        outcome = rules.check(record, info) if record is not None else ("malformed_json", "")
        if isinstance(outcome, dict):
            counts["out"] += 1
            for key, values in columns.items():
                values.append(outcome[key])
            continue
        reason, detail = outcome
        counts[reason] += 1
        if reason not in BAD_INPUT:
            continue
        if reason == "malformed_json":
            detail = detail or line[:200].decode("utf-8", errors="replace").replace("\x00", "\\0")
        reddit_id = _scrub(record.get("id"), info) if isinstance(record, dict) else None
        url = _scrub(record.get("url"), info) if isinstance(record, dict) else None
        rejects.append(
            {"file": name, "line": line_no, "reason": reason, "reddit_id": reddit_id, "url": url,
             "detail": _SURROGATE.sub("\ufffd", detail)}
        )
    if damage:
        if counts["in"] == 0:
            raise ValueError(f"{path}: nothing readable ({damage[0]}); check that the file is a Pushshift dump")
        info["truncated_files"] += 1
        print(f"[reddit] warning: {path} is damaged after line {counts['in']} ({damage[0]}); "
              f"kept the {counts['in']} lines read before it", file=sys.stderr)
    kept = pa.table(columns, schema=pa.schema([f for f in MAP_SCHEMA if f.name != "bucket"]))
    return kept, rejects, counts, info


def _map_dump(spec: dict, ctx: RunContext) -> PartitionResult:
    config = ctx.config.reddit
    kept, rejects, counts, info = filter_dump(spec["path"], config)
    buckets = pa.array([storage.stable_hash(h) % config.num_partitions for h in kept.column("host").to_pylist()],
                       pa.int32())
    table = kept.append_column("bucket", buckets).select(MAP_SCHEMA.names)
    files = []
    for bucket in sorted(set(buckets.to_pylist())):
        path = ctx.path("urls", "_map", f"part-{spec['index']:05d}-{bucket:05d}.parquet")
        storage.write_parquet(path, table.filter(pc.equal(table["bucket"], bucket)))
        files.append(path)
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
    table = storage.read_parquet([ctx.path(p) for p in spec["files"]]) if spec["files"] else MAP_SCHEMA.empty_table()
    rows, counts = aggregate_urls(table.to_pylist())
    path = ctx.part_path("urls", spec["index"], "parquet")
    storage.write_parquet(path, pa.Table.from_pylist(rows, schema=URL_SCHEMA))
    return PartitionResult(counts=counts, files=[path])


def run(ctx: RunContext, inputs: list[str]) -> dict:
    """Map every dump, reduce per host bucket, write urls/stats.json; returns the stats."""
    started = time.monotonic()
    config = ctx.config.reddit
    if config.nsfw not in ("drop", "keep"):
        raise ConfigError(f"reddit.nsfw: expected \"drop\" or \"keep\", got {config.nsfw!r}")
    files = expand_inputs(inputs)
    map_specs = [{"index": i, "path": p, "size": Path(p).stat().st_size} for i, p in enumerate(files)]
    map_commits = run_partitions(ctx, "urls/_map", map_specs, _map_dump, ("reddit",))
    by_bucket: dict[int, list[str]] = {b: [] for b in range(config.num_partitions)}
    for commit in map_commits:
        for rel in commit["files"]:
            if "/_map/" in rel:
                by_bucket[int(Path(rel).stem.split("-")[2])].append(rel)
    reduce_specs = [{"index": b, "files": sorted(by_bucket[b])} for b in range(config.num_partitions)]
    reduce_commits = run_partitions(ctx, "urls", reduce_specs, _reduce_bucket, ("reddit",))
    mapped = summarize(map_commits, 0)
    reduced = summarize(reduce_commits, 0)
    stats = {
        "inputs": files,
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
