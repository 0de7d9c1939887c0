"""Tokenize stage: documents -> GPT-2 BPE token shards (llm.c format) + `tokens/manifest.json`.

    webtext tokenize --run-dir runs/x

Input: the documents of the nearest enabled document stage upstream (pipeline/stages.py):
`decontam/docs/`, else `dedup/docs/` when `[decontaminate] enabled = false`, else `docs/` when
`[dedup] enabled = false` too (columns doc_id, text).
Output, in `R/tokens/`:

    train-NNNNN.bin, val-NNNNN.bin   shards of `[tokenize] shard_tokens` tokens each (the last one of a split
                                     smaller); format and reader in pipeline/shards.py
    manifest.json                    shards with split, tokens, documents, sha256; tokenizer; source
                                     fingerprint; written last, so its presence means the shards are complete
    stats.json                       documents in/out, drops, tokens, bytes, seconds
    _work/part-NNNNN.{bin,parquet}   per input partition: its tokens (a shard file) and a document index
                                     (doc_id, tokens, split_hash); kept so a rerun with another shard size or
                                     split re-assembles without re-encoding; safe to delete after the run

Two steps:

1. Encode (Ray, phase "tokens", one task per input partition): tiktoken `r50k_base` (pipeline/tokenizer.py)
   `encode_ordinary_batch`, one thread per task (Ray gives each task one CPU; parallelism comes from tasks).
   Every document becomes `<|endoftext|>` (50256) followed by its tokens; `encode_ordinary` never emits
   50256 itself, so EOTs count documents exactly. A document with no text is dropped as `empty_text`, one
   with no doc_id as `missing_doc_id`.
2. Assemble (driver, sequential reads and writes): documents in partition order, then row order within a
   partition (partitions are sorted by doc_id), are appended to their split's current shard; a shard is
   closed when it holds `shard_tokens` tokens, so a document may continue in the next shard (as in llm.c
   and nanoGPT's fineweb.py). A shard's `documents` counts the documents that start in it.

Split rule: `split_hash` = blake2b-64 of doc_id (pipeline.storage.stable_hash); a document is in val when
`split_hash < val_fraction * 2**64`. So a document's split depends only on its own id, not on which other
documents survived. If that puts no document in val (tiny runs, or val_fraction = 0), the document with the
smallest split_hash (first in document order on a tie) is moved to val, and the manifest names it in
`split.forced_val_doc`, so val is never empty. At least two documents are needed.

Lineage (pipeline/runner.py): an encode partition is redone when its input partition's content or the
tokenizer's ranks change; no config section is part of it because shard size and split do not change the
encoding. Assembly is redone when any encode partition was, or `[tokenize]` changed; otherwise the
manifest and its shards (all present, right sizes) are kept. It deterministically writes the same bytes.

Throughput (benchmarks/tokenize.py, Parquet -> shards against raw encode_ordinary_batch in memory, same
threads): per core the stage's work is no slower than raw encoding (in-process, 1.17-1.43x); through Ray on the
2-core dev box the warm median was 0.94x at its quietest and 0.60-0.74x under load average 10-20 from other
jobs (details in the benchmark's docstring).
"""

from __future__ import annotations

import array
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import stages, storage
from pipeline.config import TokenizeConfig
from pipeline.runner import (
    PartitionResult, RunContext, StageError, run_partitions, summarize, upstream_partitions, write_stats,
)
from pipeline.shards import (
    HEADER_BYTES, ShardError, ShardInfo, ShardManifest, ShardWriter, load_manifest, read_shard, write_manifest,
)
from pipeline.tokenizer import ENCODING_NAME, EOT_TOKEN, RANKS_SHA256, VOCAB_SIZE, get_encoding

PHASE = "tokens"
BATCH_DOCS = 256  # documents encoded per call; bounds the Python lists of token ids held at once
INDEX_SCHEMA = pa.schema([("doc_id", pa.string()), ("tokens", pa.int64()), ("split_hash", pa.uint64())])


# ---- per-record logic -------------------------------------------------------------------------------------


def join_with_eot(encoded: list[list[int]]) -> np.ndarray:
    """[[a, b], [c]] -> [EOT, a, b, EOT, c] as uint32 (narrowed to uint16 by the shard writer, range-checked).

    Appending to an array.array and viewing it with numpy costs about 3% of the encoding time (measured in
    one run: 58 ns/token against 150 ns for slice-assigning each list into a numpy array, and 1.8 us/token
    for encode_ordinary_batch on the same, heavily loaded, machine)."""
    joined = array.array("I")
    for tokens in encoded:
        joined.append(EOT_TOKEN)
        joined.extend(tokens)
    return np.frombuffer(joined, dtype=np.uint32)


def val_threshold(val_fraction: float) -> int:
    return min(int(val_fraction * 2**64), 2**64 - 1)


def assign_val(split_hashes: list[np.ndarray], val_fraction: float) -> tuple[list[np.ndarray], tuple | None]:
    """Per partition, a bool array (True = val); plus (partition, row) of the document forced into val, if any."""
    threshold = np.uint64(val_threshold(val_fraction))
    is_val = [h < threshold for h in split_hashes]
    if any(v.any() for v in is_val):
        return is_val, None
    best = min(
        ((int(h.min()), p, int(h.argmin())) for p, h in enumerate(split_hashes) if h.size), default=None
    )
    if best is None:
        return is_val, None
    _, part, row = best
    is_val[part][row] = True
    return is_val, (part, row)


def split_runs(is_val: np.ndarray) -> list[tuple[int, int, bool]]:
    """Maximal runs of documents with the same split: [(first_doc, end_doc, is_val), ...]."""
    if not is_val.size:
        return []
    edges = np.flatnonzero(is_val[1:] != is_val[:-1]) + 1
    bounds = [0, *edges.tolist(), is_val.size]
    return [(a, b, bool(is_val[a])) for a, b in zip(bounds[:-1], bounds[1:])]


# ---- step 1: encode one partition (a Ray task) --------------------------------------------------------------


def encode_partition(spec: dict, ctx: RunContext) -> PartitionResult:
    source = ctx.path(spec["input"])
    tokens_path = ctx.part_path(f"{PHASE}/_work", spec["index"], "bin")
    index_path = ctx.part_path(f"{PHASE}/_work", spec["index"], "parquet")
    encoding = get_encoding()
    parquet = storage.parquet_file(source)
    missing = {"doc_id", "text"} - set(parquet.schema_arrow.names)
    if missing:
        raise StageError(f"{source}: missing column(s) {sorted(missing)}; expected the docs schema (doc_id, text)")
    counts = {"in": 0, "out": 0, "empty_text": 0, "missing_doc_id": 0}
    doc_ids, lengths, text_bytes, started = [], [], 0, time.monotonic()
    with ShardWriter(tokens_path) as writer:
        for batch in parquet.iter_batches(batch_size=BATCH_DOCS, columns=["doc_id", "text"]):
            ids, texts = batch.column("doc_id").to_pylist(), batch.column("text").to_pylist()
            counts["in"] += len(ids)
            keep = []
            for doc_id, text in zip(ids, texts):
                if doc_id is None:
                    counts["missing_doc_id"] += 1
                elif not text:
                    counts["empty_text"] += 1
                else:
                    keep.append((doc_id, text))
            encoded = encoding.encode_ordinary_batch([text for _, text in keep], num_threads=1)
            writer.write(join_with_eot(encoded))
            doc_ids += [doc_id for doc_id, _ in keep]
            lengths += [len(t) + 1 for t in encoded]
            text_bytes += pc.sum(pc.binary_length(batch.column("text"))).as_py() or 0
    counts["out"] = len(doc_ids)
    index = pa.table(
        [doc_ids, lengths, [storage.stable_hash(d) for d in doc_ids]], schema=INDEX_SCHEMA
    )
    storage.write_parquet(index_path, index)
    info = {"tokens": int(sum(lengths)), "text_bytes": text_bytes, "encode_seconds": time.monotonic() - started}
    return PartitionResult(counts=counts, files=[tokens_path, index_path], info=info)


# ---- step 2: assemble shards (driver) ----------------------------------------------------------------------


@dataclass
class SplitShards:
    """Appends token runs of one split to `<split>-NNNNN.bin` files of `shard_tokens` tokens each."""

    folder: Path
    split: str
    shard_tokens: int
    shards: list[ShardInfo] = field(default_factory=list)
    _writer: ShardWriter | None = None
    _documents: int = 0

    def add(self, tokens: np.ndarray, doc_starts: np.ndarray) -> None:
        """Append `tokens`; `doc_starts` are the offsets in `tokens` where a document begins (sorted)."""
        pos = 0
        while pos < tokens.size:
            if self._writer is None:
                self._writer = ShardWriter(self.folder / f"{self.split}-{len(self.shards):05d}.bin").__enter__()
                self._documents = 0
            end = min(tokens.size, pos + self.shard_tokens - self._writer.tokens)
            self._writer.write(tokens[pos:end])
            self._documents += int(np.searchsorted(doc_starts, end) - np.searchsorted(doc_starts, pos))
            pos = end
            if self._writer.tokens == self.shard_tokens:
                self.close()

    def close(self) -> None:
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        writer.__exit__(None, None, None)
        self.shards.append(
            ShardInfo(
                path=writer.path.name, split=self.split, tokens=writer.tokens, documents=self._documents,
                sha256=storage.sha256_file(writer.path),
            )
        )


def assemble(ctx: RunContext, commits: list[dict], config: TokenizeConfig) -> tuple[list[ShardInfo], dict]:
    """Write every train/val shard from the per-partition work files; return the shards and the split record."""
    folder = ctx.path(PHASE)
    indexes = [storage.read_parquet(ctx.part_path(f"{PHASE}/_work", i, "parquet")) for i in range(len(commits))]
    hashes = [t.column("split_hash").to_numpy() for t in indexes]
    is_val, forced = assign_val(hashes, config.val_fraction)
    outputs = {split: SplitShards(folder, split, config.shard_tokens) for split in ("train", "val")}
    for part, (index, part_is_val) in enumerate(zip(indexes, is_val)):
        tokens = read_shard(ctx.part_path(f"{PHASE}/_work", part, "bin"))
        lengths = index.column("tokens").to_numpy()
        starts = np.concatenate([[0], np.cumsum(lengths)])
        if starts[-1] != tokens.size:
            raise StageError(
                f"{ctx.part_path(f'{PHASE}/_work', part, 'bin')}: {tokens.size} tokens but its index says "
                f"{starts[-1]}; delete {ctx.path(PHASE, '_commits')} and rerun `webtext tokenize`"
            )
        for first, end, val in split_runs(part_is_val):
            run_starts = starts[first:end] - starts[first]
            outputs["val" if val else "train"].add(tokens[starts[first] : starts[end]], run_starts)
    for out in outputs.values():
        out.close()
    if not outputs["train"].shards:
        raise StageError(f"{folder}: every document fell in val; lower tokenize.val_fraction ({config.val_fraction})")
    split = {
        "rule": "val if blake2b-64(doc_id) < val_fraction * 2**64; if none, the smallest hash is forced to val",
        "val_fraction": config.val_fraction,
        "forced_val_doc": indexes[forced[0]].column("doc_id")[forced[1]].as_py() if forced else None,
    }
    return outputs["train"].shards + outputs["val"].shards, split


# ---- the stage ---------------------------------------------------------------------------------------------


def input_files(ctx: RunContext) -> tuple[str, list[str]]:
    """The documents table tokenize reads (the nearest enabled document stage upstream) and its part files."""
    source = stages.documents_source(ctx.config, "tokenize")
    files = [next(rel for rel in sorted(files) if rel.startswith(source.dataset + "/part-"))
             for files in upstream_partitions(ctx, source.dataset)]
    return source.dataset, files


def current_manifest(path: Path, source: dict) -> ShardManifest | None:
    """The manifest at `path` if it was assembled from exactly `source` and its shards are all there."""
    try:
        manifest = load_manifest(path)
    except ShardError:
        return None
    if manifest.source != source:
        return None
    for shard in manifest.shards:
        shard_path = path.parent / shard.path
        if not shard_path.is_file() or shard_path.stat().st_size != HEADER_BYTES + 2 * shard.tokens:
            return None
    return manifest


def run(ctx: RunContext) -> dict:
    started = time.monotonic()
    config = ctx.config.tokenize
    dataset, files = input_files(ctx)
    specs = [{"index": i, "input": rel, "ranks_sha256": RANKS_SHA256, "reads": [rel]} for i, rel in enumerate(files)]
    commits = run_partitions(ctx, PHASE, specs, encode_partition, ())
    documents = sum(c["counts"]["out"] for c in commits)
    if documents < 2:
        raise StageError(
            f"{ctx.path(dataset)}: {documents} document(s) to tokenize; a train and a val split need at least 2"
        )

    manifest_path = ctx.path(PHASE, "manifest.json")
    source = {"dataset": dataset, "files": len(files), "fingerprint": hashlib.sha256(json.dumps(
        [ctx.config.fingerprint("tokenize"), [c["fingerprint"] for c in commits]]).encode()).hexdigest()}
    manifest = current_manifest(manifest_path, source)
    if manifest is None:
        manifest_path.unlink(missing_ok=True)  # shards are being rewritten: no manifest may describe them meanwhile
        shards, split = assemble(ctx, commits, config)
        written = {s.path for s in shards}
        for stale in [*ctx.path(PHASE).glob("train-*.bin"), *ctx.path(PHASE).glob("val-*.bin")]:
            if stale.name not in written:
                stale.unlink()
        manifest = ShardManifest(
            tokenizer=ENCODING_NAME, vocab_size=VOCAB_SIZE, eot_token=EOT_TOKEN, ranks_sha256=RANKS_SHA256,
            shards=shards, split={**split, "shard_tokens": config.shard_tokens}, source=source,
        )
        write_manifest(manifest_path, manifest)
    else:
        print(f"[{PHASE}] shards already assembled from these partitions, kept", file=sys.stderr)
    stats = summarize(commits, time.monotonic() - started)
    stats["shards"] = manifest.totals()
    return write_stats(ctx, PHASE, stats)


def report_section(run_dir: Path, plots: Path):
    """The run report's token line: documents, shards and tokens per split."""
    from pipeline.report import Section

    try:
        totals = load_manifest(run_dir / PHASE / "manifest.json").totals()
    except ShardError:
        return None
    return Section("tokens", lines=[f"tokens: {json.dumps(totals, sort_keys=True)}"], data=totals)
