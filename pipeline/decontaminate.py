"""Decontaminate stage: eval passages removed from the training documents, GPT-3's way (appendix C).

    webtext decontaminate --run-dir runs/x          # between dedup and tokenize; `webtext run` runs it

Reads the documents of the nearest enabled document stage upstream (`dedup/docs/`, or `docs/` when dedup
is off) and the eval sets of `[decontaminate] tasks`, found as `webtext eval` finds them (`[eval]
data_dir` and each task's file, training/evaluation/data.py; the passage of an item is its whole text, a HellaSwag
item's context with all four endings). Writes `decontam/docs/part-NNNNN.parquet` (the input schema, the
same partitions and order, plus `piece` and `pieces`, int32: a document split into pieces becomes one row
per kept piece, each with its document's doc_id, so the pieces fall in the same train/val split; `text`,
`chars` and `words` are the piece's) and `decontam/overlap.json`:

    {"ngram": 13, "tasks": {"lambada": {"file", "data_sha256", "items", "ngrams", "ignored_ngrams",
     "overlapping": [item indices], "documents": {item index: corpus documents holding one of its n-grams}}}}

which `webtext eval --clean-only` reads to score the clean subset beside the full one.

The rule (the numbers are `[decontaminate]`'s, defaults GPT-3's):
- words: a text split on whitespace (Python's `str.split()` characters), each word lowercased and its
  punctuation (Unicode category P*, plus ASCII's `string.punctuation`) deleted; a word left empty is no
  word. An n-gram is `ngram` consecutive words. An eval item shorter than `ngram` words has none, so it
  can never be found.
- an eval n-gram found in more than `max_doc_frequency` corpus documents is a common phrase, not a leak,
  and is ignored everywhere (counted per task as ignored);
- every other match is removed from its document with `context_chars` characters on each side (from the
  match's first word to its last); overlapping removals merge into one; each removal splits the document
  there; pieces shorter than `min_piece_chars` are dropped (their characters counted), and a document
  split more than `max_splits` times is dropped whole (`contaminated`); one whose every piece was too
  short is dropped as `contaminated_fragments`. GPT-3's paper phrases the last rule as "more than 10
  pieces"; here it counts splits, as the issue states it.
Every removal is counted by task in the stats' `info` (`removed_passages.<task>`, `contaminated.<task>`,
...: a removal or drop is charged to each task whose n-gram it held).

Hashing: each word is hashed (FNV-1a, 64-bit, over its lowercased code points) and an n-gram is a
polynomial of its words' hashes mod 2^64, finished by splitmix64, so it is one 64-bit number. Two different
n-grams collide with probability ~2^-64 each; with 10^7 eval n-grams, a corpus of 10^12 n-grams expects
under one false match. The scan decodes the Parquet column's UTF-8 bytes itself, in one numba loop per
batch of documents, with no Python object per word; membership is a bitmap test, then a binary search
for the rare bitmap hits (benchmarks/eval.py measures it against a Python set of n-gram strings).

Phases (each a `run_partitions` call: resumable, lineage-tracked):
1. driver: the eval n-gram index (sorted unique hashes, a task bitmask per hash, the bitmap and the
   character tables) built once and put in Ray's object store, which every partition task reads from;
2. `decontam/_work/hits` per docs partition: every (document row, eval n-gram hash, start, end) match;
3. `decontam/_work/common`, one task: how many documents hold each matched n-gram, from every
   partition's hits (a corpus-wide count that no process builds in memory from the documents), and the
   driver writes overlap.json from it;
4. `decontam/docs` per docs partition: the documents with the non-ignored matches removed.
With no eval set configured (`eval.data_dir` empty or no tasks), phase 4 passes every partition through
unchanged (a hard link where the file system allows it, else a copy) and the stage says so.
"""

from __future__ import annotations

import functools
import os
import shutil
import string
import sys
import time
import unicodedata
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from pipeline import stages, storage
from pipeline.runner import (
    PartitionResult, RunContext, ensure_ray, phase_digest, run_partitions, summarize, upstream_partitions,
    write_stats,
)

SECTIONS = ("decontaminate",)
HITS_PHASE, COMMON_PHASE, DOCS_PHASE = "decontam/_work/hits", "decontam/_work/common", "decontam/docs"
OVERLAP = "decontam/overlap.json"
BATCH_DOCS = 1024
WORD, SPACE, PUNCT = 0, 1, 2
FNV_OFFSET, FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)
NGRAM_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial's base
HITS_SCHEMA = pa.schema([("row", pa.int64()), ("hash", pa.uint64()), ("start", pa.int64()), ("end", pa.int64())])


def log(message: str) -> None:
    print(f"[decontaminate] {message}", file=sys.stderr, flush=True)


# ---- words and n-gram hashes ---------------------------------------------------------------------------


@functools.cache
def char_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per code point: its class (word, whitespace, punctuation) and its lowercase code point."""
    classes = np.zeros(0x110000, dtype=np.uint8)
    lower = np.arange(0x110000, dtype=np.uint32)
    ascii_punct = set(string.punctuation)
    for code in range(0x110000):
        char = chr(code)
        if char.isspace():
            classes[code] = SPACE
        elif char in ascii_punct or unicodedata.category(char).startswith("P"):
            classes[code] = PUNCT
        low = char.lower()
        if low != char:
            lower[code] = ord(low[0])
    return classes, lower


@numba.njit(cache=True, inline="always")
def _splitmix(x):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True)
def _contains(keys, bitmap, shift, h):
    bit = h >> shift
    if not (bitmap[bit >> np.uint64(6)] >> (bit & np.uint64(63))) & np.uint64(1):
        return False
    i = np.searchsorted(keys, h)
    return i < keys.shape[0] and keys[i] == h


@numba.njit(cache=True)
def _scan(data, offsets, first, n, classes, lower, keys, bitmap, shift, emit_all, out_doc, out_hash, out_start,
          out_end):
    """Fill the out arrays from documents `first`.. with (doc, hash, first char, end char) of every n-gram
    (emit_all) or of those in `keys`; return (matches written, the document to continue from). The arrays
    are never reassigned here (a loop-carried array costs a reference count per byte): when they are full,
    the current document's matches are dropped and the caller continues from it with fresh arrays."""
    cap = out_doc.shape[0]
    found = 0
    base_n1 = np.uint64(1)
    for _ in range(n - 1):
        base_n1 *= NGRAM_BASE
    ring_hash = np.zeros(n, np.uint64)
    ring_start = np.zeros(n, np.int64)
    code = np.uint32(0)
    for doc in range(first, offsets.shape[0] - 1):
        pos, end = offsets[doc], offsets[doc + 1]
        doc_found = found
        char, count, window = 0, 0, np.uint64(0)
        in_word, has_letters, word_hash, word_start, word_end = False, False, FNV_OFFSET, 0, 0
        while pos <= end:
            if pos < end:
                b0 = np.uint32(data[pos])
                if b0 < 0x80:
                    code, size = b0, 1
                elif b0 < 0xE0:
                    code, size = b0 & np.uint32(0x1F), 2
                elif b0 < 0xF0:
                    code, size = b0 & np.uint32(0x0F), 3
                else:
                    code, size = b0 & np.uint32(0x07), 4
                for k in range(1, size):
                    code = (code << np.uint32(6)) | (np.uint32(data[min(pos + k, end - 1)]) & np.uint32(0x3F))
                code = min(code, np.uint32(0x10FFFF))
                cls = classes[code]
                pos += size
            else:
                cls, pos = SPACE, end + 1  # the end of the text closes its last word
            if cls == SPACE:
                if in_word and has_letters:
                    slot = count % n
                    if count >= n:
                        window -= ring_hash[slot] * base_n1
                    window = window * NGRAM_BASE + word_hash
                    ring_hash[slot], ring_start[slot] = word_hash, word_start
                    count += 1
                    if count >= n:
                        h = _splitmix(window)
                        if emit_all or _contains(keys, bitmap, shift, h):
                            if found == cap:
                                return doc_found, doc
                            out_doc[found], out_hash[found] = doc, h
                            out_start[found], out_end[found] = ring_start[count % n], word_end
                            found += 1
                in_word = False
            else:
                if not in_word:
                    in_word, has_letters, word_hash, word_start = True, False, FNV_OFFSET, char
                if cls == WORD:
                    word_hash = (word_hash ^ np.uint64(lower[code])) * FNV_PRIME
                    has_letters = True
                word_end = char + 1
            char += 1
    return found, offsets.shape[0] - 1


def utf8_buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes and int64 offsets of a string column (nulls as empty texts), without Python strings."""
    column = pc.fill_null(texts.cast(pa.large_string()), "")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offsets = np.frombuffer(column.buffers()[1], np.int64)[column.offset : column.offset + len(column) + 1]
    data = column.buffers()[2]
    return (np.frombuffer(data, np.uint8) if data is not None else np.zeros(1, np.uint8)), offsets


def scan(texts: pa.Array, index: dict, emit_all: bool = False) -> dict[str, np.ndarray]:
    """The n-grams of `texts` that are in the index (or every one): row, hash, start and end characters."""
    data, offsets = utf8_buffers(texts)
    parts, first, capacity = [], 0, 4096
    while True:
        out = (np.empty(capacity, np.int64), np.empty(capacity, np.uint64), np.empty(capacity, np.int64),
               np.empty(capacity, np.int64))
        found, stopped = _scan(data, offsets, first, index["ngram"], index["classes"], index["lower"], index["keys"],
                               index["bitmap"], np.uint64(index["shift"]), emit_all, *out)
        parts.append([a[:found] for a in out])
        if stopped == len(offsets) - 1:
            break
        capacity *= 2 if stopped == first and not found else 1  # one document holds more than fit: grow
        first = stopped
    return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(("row", "hash", "start", "end"))}


def ngram_hashes(texts: list[str], ngram: int) -> dict[str, np.ndarray]:
    """Every n-gram of every text: row, hash, start and end characters."""
    classes, lower = char_tables()
    everything = {"ngram": ngram, "keys": np.zeros(0, np.uint64), "bitmap": np.zeros(1, np.uint64), "shift": 63,
                  "classes": classes, "lower": lower}
    return scan(pa.array(texts, pa.large_string()), everything, emit_all=True)


def make_index(hashes: np.ndarray, tasks: np.ndarray, ngram: int) -> dict:
    """The lookup structure shared with every task: sorted unique hashes, task bitmasks, a bitmap over them."""
    order = np.argsort(hashes, kind="stable")
    hashes, tasks = hashes[order], tasks[order]
    keys, first = np.unique(hashes, return_index=True)
    masks = np.bitwise_or.reduceat(np.left_shift(np.uint32(1), tasks.astype(np.uint32)), first) if len(keys) else \
        np.zeros(0, np.uint32)
    bits = int(min(32, max(16, np.ceil(np.log2(max(len(keys), 1) * 32)))))  # ~32 bits per key: ~3% to search
    bitmap = np.zeros(2 ** bits // 64, dtype=np.uint64)
    slots = keys >> np.uint64(64 - bits)
    np.bitwise_or.at(bitmap, (slots >> np.uint64(6)).astype(np.int64), np.left_shift(np.uint64(1), slots & np.uint64(63)))
    classes, lower = char_tables()
    return {"ngram": ngram, "keys": keys, "masks": masks, "bitmap": bitmap, "shift": 64 - bits,
            "classes": classes, "lower": lower}


# ---- removal -------------------------------------------------------------------------------------------


def removal_spans(starts: list[int], ends: list[int], length: int, context: int) -> list[tuple[int, int]]:
    """Each match widened by `context` characters on both sides, clipped to the text, overlaps merged."""
    spans: list[list[int]] = []
    for start, end in sorted(zip(starts, ends)):
        start, end = max(0, start - context), min(length, end + context)
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    return [(a, b) for a, b in spans]


def pieces_of(text: str, spans: list[tuple[int, int]]) -> list[str]:
    """The text between the removed spans (before the first, between each two, after the last)."""
    bounds = [0, *[x for span in spans for x in span], len(text)]
    return [text[a:b] for a, b in zip(bounds[::2], bounds[1::2])]


def clean_text(text: str, starts: list[int], ends: list[int], config) -> tuple[list[str], int, int]:
    """(kept pieces, splits, characters in pieces dropped as too short) for one text and its matches."""
    spans = removal_spans(starts, ends, len(text), config.context_chars)
    if len(spans) > config.max_splits:
        return [], len(spans), 0
    pieces = pieces_of(text, spans)
    kept = [p for p in pieces if len(p) >= config.min_piece_chars]
    return kept, len(spans), sum(len(p) for p in pieces if len(p) < config.min_piece_chars)


# ---- phase 1 (driver): the eval index ------------------------------------------------------------------


def eval_files(ctx: RunContext) -> dict[str, Path]:
    """task -> file for every task in decontaminate.tasks; {} when no eval data folder is configured."""
    from training.evaluation.data import eval_data_dir, task_file

    data_dir = eval_data_dir(ctx.run_dir, ctx.config.eval)
    if data_dir is None:
        return {}
    return {task: task_file(ctx.config.eval, data_dir, task) for task in ctx.config.decontaminate.tasks}


def build_index(files: dict[str, Path], ngram: int) -> tuple[dict, dict]:
    """(the shared index, the driver's item map): every n-gram of every eval item's passage, hashed."""
    from training.evaluation.tasks import read_items

    hashes, tasks, items, described = [], [], [], {}
    for number, (task, path) in enumerate(files.items()):
        passages = [item.passage for item in read_items(task, path)]
        found = ngram_hashes(passages, ngram)
        hashes.append(found["hash"])
        tasks.append(np.full(len(found["hash"]), number, np.uint8))
        items.append(found["row"])
        described[task] = {"file": str(path), "data_sha256": storage.sha256_file(path), "items": len(passages),
                           "ngrams": int(len(np.unique(found["hash"])))}
    hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    tasks = np.concatenate(tasks) if tasks else np.zeros(0, np.uint8)
    items = np.concatenate(items) if items else np.zeros(0, np.int64)
    order = np.lexsort((items, tasks, hashes))
    item_map = {"hash": hashes[order], "task": tasks[order], "item": items[order], "names": list(files),
                "described": described}
    return make_index(hashes, tasks, ngram), item_map


# ---- phase 2: matches per docs partition ---------------------------------------------------------------


def hits_partition(spec: dict, ctx: RunContext, index_ref) -> PartitionResult:
    index = ray.get(index_ref)
    docs = storage.parquet_file(ctx.path(spec["docs"]))
    parts, row0 = [], 0
    for batch in docs.iter_batches(batch_size=BATCH_DOCS, columns=["text"]):
        found = scan(batch.column("text"), index)
        found["row"] = found["row"] + row0
        parts.append(found)
        row0 += batch.num_rows
    hits = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, t)
            for k, t in (("row", np.int64), ("hash", np.uint64), ("start", np.int64), ("end", np.int64))}
    path = ctx.part_path(HITS_PHASE, spec["index"], "parquet")
    storage.write_parquet(path, pa.table(hits, schema=HITS_SCHEMA))
    return PartitionResult(counts={"in": row0, "out": row0}, files=[path],
                           info={"matches": len(hits["row"]), "documents_matched": len(np.unique(hits["row"]))})


# ---- phase 3: corpus-wide document frequency of the matched n-grams ------------------------------------


def common_partition(spec: dict, ctx: RunContext) -> PartitionResult:
    per_doc = []
    for rel in spec["hits"]:
        table = storage.read_parquet(ctx.path(rel), columns=["row", "hash"])
        pairs = np.unique(np.stack([table.column("row").to_numpy().astype(np.uint64),
                                    table.column("hash").to_numpy()], axis=1), axis=0) if table.num_rows else None
        if pairs is not None:
            per_doc.append(pairs[:, 1])
    hashes, docs = np.unique(np.concatenate(per_doc), return_counts=True) if per_doc else (
        np.zeros(0, np.uint64), np.zeros(0, np.int64))
    path = ctx.part_path(COMMON_PHASE, 0, "parquet")
    storage.write_parquet(path, pa.table({"hash": hashes, "docs": docs.astype(np.int64)}))
    return PartitionResult(counts={"in": len(hashes), "out": len(hashes)}, files=[path])


def write_overlap(ctx: RunContext, item_map: dict, common: pa.Table) -> dict:
    """overlap.json: per task, the eval items holding an n-gram found in the corpus and not ignored."""
    config = ctx.config.decontaminate
    hashes, docs = common.column("hash").to_numpy(), common.column("docs").to_numpy()
    ignored = hashes[docs > config.max_doc_frequency]
    kept, kept_docs = hashes[docs <= config.max_doc_frequency], docs[docs <= config.max_doc_frequency]
    counts = dict(zip(kept.tolist(), kept_docs.tolist()))
    tasks = {}
    for number, task in enumerate(item_map["names"]):
        mine = item_map["task"] == number
        task_hashes, task_items = item_map["hash"][mine], item_map["item"][mine]
        hit = np.isin(task_hashes, kept)
        documents: dict[int, int] = {}
        for h, item in zip(task_hashes[hit].tolist(), task_items[hit].tolist()):
            documents[item] = max(documents.get(item, 0), counts[h])
        tasks[task] = {**item_map["described"][task], "ignored_ngrams": int(len(np.unique(task_hashes[np.isin(task_hashes, ignored)]))),
                       "overlapping": sorted(documents), "documents": {str(k): v for k, v in sorted(documents.items())}}
    overlap = {"ngram": config.ngram, "max_doc_frequency": config.max_doc_frequency, "tasks": tasks}
    storage.write_json(ctx.path(OVERLAP), overlap)
    return overlap


# ---- phase 4: the cleaned documents --------------------------------------------------------------------


def clean_partition(spec: dict, ctx: RunContext, index_ref) -> PartitionResult:
    config = ctx.config.decontaminate
    index = ray.get(index_ref)
    names = spec["tasks"]
    common = storage.read_parquet(ctx.path(spec["common"]))
    ignored = common.column("hash").to_numpy()[common.column("docs").to_numpy() > config.max_doc_frequency]
    hits = storage.read_parquet(ctx.path(spec["hits"]))
    live = ~np.isin(hits.column("hash").to_numpy(), ignored)
    by_row: dict[int, list[tuple[int, int, int]]] = {}
    for row, h, start, end in zip(*(hits.column(c).to_numpy()[live].tolist() for c in ("row", "hash", "start", "end"))):
        by_row.setdefault(row, []).append((h, start, end))
    docs = storage.parquet_file(ctx.path(spec["docs"]))
    schema = docs.schema_arrow.append(pa.field("piece", pa.int32())).append(pa.field("pieces", pa.int32()))
    counts = {"in": 0, "out": 0, "contaminated": 0, "contaminated_fragments": 0}
    info = {"pieces_out": 0, "removed_passages": 0, "removed_chars": 0, "short_piece_chars": 0}
    out_path = ctx.part_path(DOCS_PHASE, spec["index"], "parquet")
    row0 = 0
    with storage.atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, schema, **storage.PARQUET_OPTIONS) as writer:
        for batch in docs.iter_batches(batch_size=BATCH_DOCS):
            rows = batch.to_pylist()
            out = []
            for offset, record in enumerate(rows):
                matches = by_row.get(row0 + offset)
                counts["in"] += 1
                if not matches:
                    out.append({**record, "piece": 0, "pieces": 1})
                    continue
                text = record["text"] or ""
                kept, splits, short_chars = clean_text(text, [m[1] for m in matches], [m[2] for m in matches], config)
                charged = _tasks_of([m[0] for m in matches], index, names)
                reason = "contaminated" if splits > config.max_splits else None if kept else "contaminated_fragments"
                for task in charged:
                    info[f"removed_passages.{task}"] = info.get(f"removed_passages.{task}", 0) + splits
                    if reason:
                        info[f"{reason}.{task}"] = info.get(f"{reason}.{task}", 0) + 1
                info["removed_passages"] += splits
                info["removed_chars"] += len(text) - sum(len(p) for p in kept)
                info["short_piece_chars"] += short_chars
                if reason:
                    counts[reason] += 1
                    continue
                for k, piece in enumerate(kept):
                    out.append({**record, "text": piece, "chars": len(piece), "words": len(piece.split()),
                                "piece": k, "pieces": len(kept)} if "chars" in record else
                               {**record, "text": piece, "piece": k, "pieces": len(kept)})
            row0 += len(rows)
            info["pieces_out"] += len(out)
            writer.write_table(pa.Table.from_pylist(out, schema=schema))
    counts["out"] = counts["in"] - counts["contaminated"] - counts["contaminated_fragments"]
    return PartitionResult(counts=counts, files=[out_path], info=info)


def _tasks_of(hashes: list[int], index: dict, names: list[str]) -> list[str]:
    """The tasks whose eval n-grams are among `hashes` (each hash's bitmask in the index)."""
    positions = np.searchsorted(index["keys"], np.array(hashes, dtype=np.uint64))
    mask = int(np.bitwise_or.reduce(index["masks"][positions])) if len(hashes) else 0
    return [name for number, name in enumerate(names) if mask >> number & 1]


def pass_partition(spec: dict, ctx: RunContext) -> PartitionResult:
    """No eval set: the partition's file unchanged (a hard link, else a copy; no piece columns added)."""
    source, target = ctx.path(spec["docs"]), ctx.part_path(DOCS_PHASE, spec["index"], "parquet")
    if storage.is_object(source) or storage.is_object(target):
        with storage.open_read(source) as src, storage.atomic_writer(target) as out:
            shutil.copyfileobj(src, out, storage.COPY_BLOCK)
    else:
        with storage.atomic_path(target) as tmp:
            try:
                os.link(source, tmp)
            except OSError:  # another file system, or one without hard links
                shutil.copyfile(source, tmp)
    rows = storage.parquet_file(target).metadata.num_rows
    return PartitionResult(counts={"in": rows, "out": rows}, files=[target], info={"pieces_out": rows})


# ---- the stage -----------------------------------------------------------------------------------------


def input_files(ctx: RunContext) -> tuple[str, list[str]]:
    source = stages.documents_source(ctx.config, "decontaminate")
    files = [next(rel for rel in sorted(files) if rel.startswith(source.dataset + "/part-"))
             for files in upstream_partitions(ctx, source.dataset)]
    return source.dataset, files


def run(ctx: RunContext) -> dict:
    started = time.monotonic()
    config = ctx.config.decontaminate
    dataset, docs = input_files(ctx)
    files = eval_files(ctx)
    if not files:
        why = "eval.data_dir is empty" if not ctx.config.eval.data_dir else "decontaminate.tasks is empty"
        log(f"no eval sets configured ({why}): {dataset} passes through unchanged")
        commits = run_partitions(ctx, DOCS_PHASE, [{"index": i, "docs": rel, "reads": [rel]}
                                                   for i, rel in enumerate(docs)], pass_partition, SECTIONS)
        ctx.path(OVERLAP).unlink(missing_ok=True)
        stats = summarize(commits, time.monotonic() - started)
        return write_stats(ctx, "decontam", {**stats, "passed_through": why})
    index, item_map = build_index(files, config.ngram)
    log(f"eval index: {len(index['keys']):,} distinct {config.ngram}-grams from "
        + ", ".join(f"{t} ({d['items']} items)" for t, d in item_map["described"].items()))
    ensure_ray(ctx.config)
    index_ref = ray.put(index)
    eval_reads = [str(p) for p in files.values()]
    hits = run_partitions(ctx, HITS_PHASE, [{"index": i, "docs": rel, "reads": [rel, *eval_reads]}
                                            for i, rel in enumerate(docs)],
                          functools.partial(hits_partition, index_ref=index_ref), SECTIONS)
    hits_files = [f"{HITS_PHASE}/part-{i:05d}.parquet" for i in range(len(docs))]
    run_partitions(ctx, COMMON_PHASE, [{"index": 0, "hits": hits_files, "digest": phase_digest(hits),
                                        "reads": hits_files}], common_partition, SECTIONS)
    common_file = f"{COMMON_PHASE}/part-00000.parquet"
    overlap = write_overlap(ctx, item_map, storage.read_parquet(ctx.path(common_file)))
    cleaned = run_partitions(ctx, DOCS_PHASE, [
        {"index": i, "docs": rel, "hits": hits_files[i], "common": common_file, "tasks": list(files),
         "reads": [rel, hits_files[i], common_file]} for i, rel in enumerate(docs)
    ], functools.partial(clean_partition, index_ref=index_ref), SECTIONS)
    stats = summarize(cleaned, time.monotonic() - started)
    stats["index"] = item_map["described"]
    stats["overlap"] = {t: {"items": d["items"], "overlapping": len(d["overlapping"]), "ignored_ngrams": d["ignored_ngrams"]}
                        for t, d in overlap["tasks"].items()}
    stats["matches"] = summarize(hits, 0)["info"]
    return write_stats(ctx, "decontam", stats)


def report_section(run_dir: Path, plots: Path):
    """The run report's decontamination line and a chart of the overlapping eval items per task."""
    from pipeline.report import Section, bar, read_json

    stats = read_json(run_dir / "decontam" / "stats.json")
    if stats is None or stats.get("enabled") is False:
        return None
    if "passed_through" in stats:
        return Section("decontaminate", lines=[f"decontaminate: no eval sets ({stats['passed_through']}): "
                                               f"{stats['records_out']} documents passed through unchanged"], data=stats)
    info, overlap = stats["info"], stats["overlap"]
    removed = ", ".join(f"{t} {info.get(f'removed_passages.{t}', 0)}" for t in overlap)
    dropped = ", ".join(f"{k}={v}" for k, v in stats["dropped"].items() if v) or "none"
    ignored = sum(d["ignored_ngrams"] for d in overlap.values())
    items = ", ".join(f"{t} {d['overlapping']}/{d['items']}" for t, d in overlap.items())
    line = (f"decontaminate: {info.get('removed_passages', 0)} passages removed ({removed}), documents dropped: "
            f"{dropped}, {stats['records_out']} documents out as {info.get('pieces_out', 0)} pieces, {ignored} common "
            f"n-grams ignored; eval items overlapping the corpus: {items}")
    names = list(overlap)
    bar(plots / "decontam_overlap.png", names, [overlap[n]["overlapping"] / max(overlap[n]["items"], 1) for n in names],
        "Eval items overlapping the training corpus", "share of items")
    return Section("decontaminate", lines=[line], plots=[("Eval overlap", "report/decontam_overlap.png")], data=stats)
