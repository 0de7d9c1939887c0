"""Dedup stage: exact and MinHash-LSH near-duplicate removal, by partitions, with a deterministic survivor.

    webtext dedup --run-dir runs/x [--set dedup.threshold=0.8]

Reads `docs/part-NNNNN.parquet` (extract) and writes `dedup/docs/part-NNNNN.parquet`: the docs schema,
same partitions and order, keeping one document per duplicate cluster, plus two columns:

| column       | type   | meaning                                                              |
|--------------|--------|----------------------------------------------------------------------|
| cluster_id   | string | doc_id of the cluster's survivor (the document's own id if unique)   |
| cluster_size | int32  | documents in its cluster, itself included (1 if unique)               |

and `dedup/clusters.parquet`, one row per document in a cluster of two or more, sorted by cluster_id,
doc_id: doc_id, cluster_id, survivor (bool), kind ("exact" when the document's normalized text equals
the survivor's, else "fuzzy"; a survivor is "exact"). `dedup/stats.json` has the usual counts (removed
documents under duplicate_exact / duplicate_fuzzy), the LSH parameters with their S-curve, candidate and
edge counts, and `clusters.size_histogram` ({cluster size: number of clusters}) for the report's plot.

What counts as a duplicate. Text is normalized as in pipeline/minhash.py (NFKC, lowercase, whitespace
runs -> one space). Exact duplicates share the blake2b-128 hash of the normalized text. Near duplicates
are pairs whose word 5-gram shingle sets have a Jaccard similarity of about `threshold` or more, found with
MinHash LSH: each signature (datasketch-equal, pipeline/minhash.py) is cut into `bands` bands of `rows`
values, each keyed by `minhash.band_keys`; two documents are candidates when any band is equal. A document
with fewer words than `ngram` is one shingle (its whole text); an empty one takes part in the exact hash
only. Clusters are the connected components of the duplicate edges; the survivor is the document with the
highest Reddit score_sum, then the most characters, then the smallest doc_id.

Defaults: threshold 0.7, 256 permutations, 32 bands x 8 rows. The bands and rows come from datasketch's
optimal-parameter rule (`datasketch.lsh._optimal_param`, what `MinHashLSH(threshold, num_perm, weights)`
uses) with false negatives weighted 0.9: verification removes false positives at the cost of one
signature comparison, while a pair that shares no band is lost for good. Probability that a pair with
Jaccard J becomes a candidate, 1 - (1 - J^rows)^bands:

| J                                | 0.3    | 0.5    | 0.6    | 0.7    | 0.75   | 0.8    | 0.9    |
|----------------------------------|--------|--------|--------|--------|--------|--------|--------|
| 256, weights 0.1/0.9: 32 x 8     | 0.0021 | 0.1177 | 0.4184 | 0.8504 | 0.9658 | 0.9972 | 1.0000 |
| 256, weights 0.5/0.5: 25 x 10    | 0.0001 | 0.0241 | 0.1407 | 0.5115 | 0.7652 | 0.9416 | 1.0000 |
| 128, weights 0.5/0.5: 14 x 9     | 0.0003 | 0.0270 | 0.1322 | 0.4382 | 0.6647 | 0.8670 | 0.9990 |

0.7 because the near-duplicates that matter are the same article re-posted with small edits, and a few
edited words cost many shingles: 3% of words replaced (the dry-run web's near-duplicates) leaves
J = 0.74-0.87, mostly below 0.8. 256 permutations because verification estimates J from the signatures:
with 256 values a pair at J = 0.6 passes the 0.7 check with probability 0.0004 and one at J = 0.78 fails it
with probability 0.002 (128 values: 0.010 and 0.016), and because 256 makes the 32 x 8 curve above, which
finds 99.7% of the pairs at J = 0.8 (the equal-weight 25 x 10: 94%; 128 permutations: 87%). The cost is
the permutation step, the smaller part of signing (benchmarks/dedup.py).

Verification (`verify`, on by default): in candidate groups (documents sharing a band) of up to 64
members, every distinct pair is checked once and linked when its estimated Jaccard is >= threshold; in a
bigger group (a page copied hundreds of times) a member is linked to each "leader" it reaches the
threshold with, the leaders being the first member in doc_id order and every member that reached no
earlier leader, so the cost grows with members x leaders instead of members squared. Without verification
every member is linked to the first. Exact groups are linked without a check.

Phases, each a `run_partitions` call (resumable, one Ray task per partition), so that no process holds an
index of the whole corpus:

1. `dedup/_work/signatures` per docs partition: signatures and node facts (doc_id, score_sum, chars, text
   hash) to `part-NNNNN.npy` (a structured array read back by row with mmap), and one key row per band
   plus the exact key to `part-NNNNN.keys.parquet`, a row group per bucket (bucket = key mod num_buckets).
2. `dedup/_work/pairs` per bucket: reads its row group from every keys file, groups equal (band, key),
   reads the signatures of group members only, and writes the verified edges (`part-B.edges.parquet`: a,
   b doc_ids) and the facts of their documents (`part-B.nodes.parquet`).
3. in this process: union-find over the edges (vectorized hooking and pointer jumping), survivors, and
   `dedup/clusters.parquet` plus one `dedup/_work/clusters/part-NNNNN.parquet` per docs partition.
4. `dedup/docs` per docs partition: streams the documents and keeps survivors and unique documents.

Grouping is by exact key, members are ordered by doc_id and every decision depends only on documents, so
the number of docs partitions or buckets does not change the result (tested), and a rerun writes the same
bytes. Memory per task: phase 1 about 60 bytes per band per document of its partition plus one batch of
text; phase 2 its bucket's keys plus its candidates' signatures; the driver only documents that have a
duplicate. `dedup/_work/` is scratch (about 1.7 KB per document) kept for resuming; delete it after the run.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasketch.lsh import _optimal_param

from pipeline import minhash, storage
from pipeline.config import DedupConfig
from pipeline.runner import (
    PartitionResult, RunContext, phase_digest, run_partitions, summarize, upstream_partitions, write_stats,
)

SECTIONS = ("dedup",)
SIGN_PHASE, PAIRS_PHASE, DOCS_PHASE = "dedup/_work/signatures", "dedup/_work/pairs", "dedup/docs"
CLUSTERS_DIR = "dedup/_work/clusters"
EXACT_BAND = -1  # the band number of exact-duplicate keys (normalized-text hashes)
BATCH_DOCS = 2048  # documents signed per compiled call; bounds the text held at once
SIM_CHUNK = 16384  # signature pairs compared per numpy step in verification
# Groups up to this size are verified pair by pair (<= 2016 pairs); bigger ones (a page copied hundreds of
# times) against leaders, so their cost grows with members x leaders instead of members squared.
PAIRWISE_MAX_GROUP = 64


# --- LSH parameters -------------------------------------------------------------------------------------


def lsh_params(config: DedupConfig) -> tuple[int, int]:
    """(bands, rows): as configured, else datasketch's optimum for threshold, num_perm and the weights."""
    if config.bands or config.rows:  # both >= 1 and within num_perm: DedupConfig.check
        return config.bands, config.rows
    weight = config.false_negative_weight
    return _optimal_param(config.threshold, config.num_perm, 1.0 - weight, weight)


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """The S-curve: probability that a pair with this Jaccard similarity shares at least one band."""
    return 1.0 - (1.0 - jaccard**rows) ** bands


# --- per-record logic -----------------------------------------------------------------------------------


def text_hash(normalized: str) -> tuple[int, int]:
    """The exact-duplicate key: blake2b-128 of the normalized text, as two uint64."""
    digest = hashlib.blake2b(normalized.encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")


def find_groups(band: np.ndarray, k0: np.ndarray, k1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sharing (band, key) with at least one other row: (order, group sizes), groups contiguous in order."""
    order = np.lexsort((k1, k0, band))
    b, x, y = band[order], k0[order], k1[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (b[1:] != b[:-1]) | (x[1:] != x[:-1]) | (y[1:] != y[:-1])
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, len(order)))
    keep = np.repeat(sizes >= 2, sizes)
    return order[keep], sizes[sizes >= 2]


def link_groups(sizes: np.ndarray, members: np.ndarray, sigs: np.ndarray | None,
                threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Duplicate edges (a, b), a < b, among candidate groups of documents.

    `members` holds document numbers group after group, each group in ascending order; `sigs[d]` is the
    signature of document d. Without signatures every member is linked to its group's first member. With
    them, every distinct pair in groups of up to PAIRWISE_MAX_GROUP members is checked once (a pair shares
    up to `bands` groups) and linked when its estimated Jaccard is >= threshold; in a bigger group a member
    is linked to every "leader" it reaches threshold with, the leaders being the first member and each
    member that reached no earlier leader.
    """
    starts = np.cumsum(sizes) - sizes
    if sigs is None:
        return _unique_pairs(np.repeat(members[starts], sizes), members)
    left, right = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for size in np.unique(sizes[sizes <= PAIRWISE_MAX_GROUP]):
        i, j = np.triu_indices(size, 1)
        group_starts = starts[sizes == size][:, None]
        left.append(members[(group_starts + i).ravel()])
        right.append(members[(group_starts + j).ravel()])
    a, b = _unique_pairs(np.concatenate(left), np.concatenate(right))
    need = int(np.ceil(threshold * sigs.shape[1] - 1e-9))  # equal values needed to reach the threshold
    close = np.zeros(len(a), dtype=bool)
    for lo in range(0, len(a), SIM_CHUNK):
        close[lo : lo + SIM_CHUNK] = (sigs[a[lo : lo + SIM_CHUNK]] == sigs[b[lo : lo + SIM_CHUNK]]).sum(axis=1) >= need
    left, right = [a[close]], [b[close]]
    for start, size in zip(starts[sizes > PAIRWISE_MAX_GROUP], sizes[sizes > PAIRWISE_MAX_GROUP]):
        group = members[start : start + size]
        i, j = _walk_leaders(sigs[group], need)
        left.append(group[i])
        right.append(group[j])
    return _unique_pairs(np.concatenate(left), np.concatenate(right))


def _walk_leaders(sigs: np.ndarray, need: int) -> tuple[np.ndarray, np.ndarray]:
    leaders, src, dst = [0], [], []
    for m in range(1, len(sigs)):
        hits = np.flatnonzero((sigs[leaders] == sigs[m]).sum(axis=1) >= need)
        if hits.size:
            src.extend(leaders[h] for h in hits)
            dst.extend([m] * hits.size)
        else:
            leaders.append(m)
    return np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64)


def _unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct unordered pairs as (smaller, larger), sorted, without self pairs."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    n = int(hi.max()) + 1 if len(hi) else 1
    pairs = np.unique(lo[lo != hi].astype(np.int64) * n + hi[lo != hi])
    return pairs // n, pairs % n


def connected_components(num_nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component label (its smallest node) of every node: union-find by hooking roots, then pointer jumping."""
    parent = np.arange(num_nodes)
    while True:
        ra, rb = parent[a], parent[b]
        if np.array_equal(ra, rb):
            return parent
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def choose_survivors(label: np.ndarray, score_sum: np.ndarray, chars: np.ndarray, doc_id: np.ndarray) -> np.ndarray:
    """Index of each node's survivor: highest score_sum, then most chars, then smallest doc_id, per label."""
    order = np.lexsort((doc_id, -chars, -score_sum, label))
    lab = label[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = lab[1:] != lab[:-1]
    best = order[first]  # one survivor per label, labels ascending
    return best[np.searchsorted(lab[first], label)]


# --- phase 1: signatures and band keys, per docs partition ----------------------------------------------


def _node_dtype(id_width: int, num_perm: int) -> np.dtype:
    return np.dtype([("doc_id", f"S{id_width}"), ("score_sum", "<i8"), ("chars", "<i8"),
                     ("text_hash", "<u8", (2,)), ("sig", "<u4", (num_perm,))])


def _sign_partition(spec: dict, ctx: RunContext) -> PartitionResult:
    config = ctx.config.dedup
    docs = storage.parquet_file(ctx.path(spec["docs"]))
    ids = [i.encode() for i in docs.read(columns=["doc_id"]).column("doc_id").fill_null("").to_pylist()]
    num_docs = len(ids)
    id_width = max([len(i) for i in ids] + [1])
    perms = minhash.permutations(config.num_perm, config.seed)
    bands, rows, num_buckets = spec["bands"], spec["rows"], spec["num_buckets"]
    sig_path = ctx.part_path(SIGN_PHASE, spec["index"], "npy")
    keys_path = ctx.part_path(SIGN_PHASE, spec["index"], "keys.parquet")
    key_parts, null_text, empty = [], 0, 0
    with storage.atomic_path(sig_path) as tmp:
        nodes = np.lib.format.open_memmap(tmp, mode="w+", dtype=_node_dtype(id_width, config.num_perm),
                                          shape=(num_docs,))
        start = 0
        for batch in docs.iter_batches(batch_size=BATCH_DOCS, columns=["doc_id", "text", "score_sum", "chars"]):
            n = batch.num_rows
            texts = batch.column("text").to_pylist()
            null_text += sum(t is None for t in texts)
            normalized = [minhash.normalize(t or "") for t in texts]
            empty += sum(not t for t in normalized)
            sigs = minhash.signatures(normalized, config.ngram, perms)
            hashes = np.array([text_hash(t) for t in normalized], dtype=np.uint64).reshape(n, 2)
            part = nodes[start : start + n]
            part["doc_id"] = ids[start : start + n]
            part["score_sum"] = batch.column("score_sum").fill_null(0).to_numpy()
            text_length = pc.utf8_length(batch.column("text")).cast(pa.int64())
            part["chars"] = pc.coalesce(batch.column("chars"), text_length, 0).to_numpy()
            part["text_hash"] = hashes
            part["sig"] = sigs
            key_parts.append(_key_rows(start, sigs, hashes, [bool(t) for t in normalized], bands, rows))
            start += n
        nodes.flush()
        del nodes
    keys = {name: np.concatenate([k[name] for k in key_parts]) if key_parts else np.zeros(0, dtype)
            for name, dtype in (("band", np.int16), ("k0", np.uint64), ("k1", np.uint64), ("row", np.int32))}
    _write_keys(keys_path, keys, num_buckets)
    return PartitionResult(
        counts={"in": num_docs, "out": num_docs},
        files=[sig_path, keys_path],
        info={"null_text": null_text, "no_shingles": empty, "keys": len(keys["row"])},
    )


def _key_rows(start: int, sigs: np.ndarray, hashes: np.ndarray, has_words: list[bool], bands: int,
              rows: int) -> dict[str, np.ndarray]:
    """Key rows of one batch: the exact key of every document, a band key per band of those with words."""
    signed = np.flatnonzero(has_words)
    keys = minhash.band_keys(sigs[signed], bands, rows)
    n = len(sigs)
    return {
        "band": np.concatenate([np.full(n, EXACT_BAND, np.int16),
                                np.tile(np.arange(bands, dtype=np.int16), len(signed))]),
        "k0": np.concatenate([hashes[:, 0], keys[:, :, 0].ravel()]),
        "k1": np.concatenate([hashes[:, 1], keys[:, :, 1].ravel()]),
        "row": np.concatenate([np.arange(n, dtype=np.int32), np.repeat(signed.astype(np.int32), bands)]) + start,
    }


def _write_keys(path: Path, keys: dict[str, np.ndarray], num_buckets: int) -> None:
    """One row group per non-empty bucket, so a bucket task reads only its own rows."""
    bucket = (keys["k0"] % np.uint64(num_buckets)).astype(np.int32)
    order = np.argsort(bucket, kind="stable")
    table = pa.table({"bucket": bucket[order], **{name: col[order] for name, col in keys.items()}})
    bounds = np.searchsorted(table.column("bucket").to_numpy(), np.arange(num_buckets + 1))
    with storage.atomic_path(path) as tmp, pq.ParquetWriter(tmp, table.schema, **storage.PARQUET_OPTIONS) as w:
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi > lo:
                w.write_table(table.slice(lo, hi - lo))
        if table.num_rows == 0:
            w.write_table(table)


# --- phase 2: candidate groups -> verified edges, per bucket --------------------------------------------


def _read_bucket(ctx: RunContext, num_parts: int, bucket: int) -> dict[str, np.ndarray]:
    parts = []
    for p in range(num_parts):
        f = storage.parquet_file(ctx.part_path(SIGN_PHASE, p, "keys.parquet"))
        groups = [i for i in range(f.num_row_groups) if _row_group_has(f, i, bucket)]
        table = f.read_row_groups(groups, columns=["bucket", "band", "k0", "k1", "row"])
        table = table.filter(pc.equal(table.column("bucket"), bucket))
        cols = {name: table.column(name).to_numpy() for name in ("band", "k0", "k1", "row")}
        cols["part"] = np.full(table.num_rows, p, dtype=np.int32)
        parts.append(cols)
    return {name: np.concatenate([c[name] for c in parts]) for name in ("band", "k0", "k1", "row", "part")}


def _row_group_has(f: pq.ParquetFile, index: int, bucket: int) -> bool:
    stats = f.metadata.row_group(index).column(0).statistics
    return stats is None or not stats.has_min_max or stats.min <= bucket <= stats.max


def _load_nodes(ctx: RunContext, node_key: np.ndarray) -> dict[str, np.ndarray]:
    """Facts and signatures of the documents `part << 32 | row`, read by row from the signature files."""
    part, row = node_key >> 32, node_key & 0xFFFFFFFF
    fields = {"doc_id": [], "score_sum": [], "chars": [], "text_hash": [], "sig": []}
    for p in np.unique(part):
        records = np.load(storage.local_copy(ctx.part_path(SIGN_PHASE, int(p), "npy")), mmap_mode="r")[row[part == p]]
        for name in fields:
            fields[name].append(np.asarray(records[name]))
    nodes = {name: np.concatenate(values) for name, values in fields.items()} if len(node_key) else {
        "doc_id": np.zeros(0, "S1"), "score_sum": np.zeros(0, np.int64), "chars": np.zeros(0, np.int64),
        "text_hash": np.zeros((0, 2), np.uint64), "sig": np.zeros((0, ctx.config.dedup.num_perm), np.uint32)}
    nodes["doc_id"] = np.array([d.decode() for d in nodes["doc_id"]], dtype=str)
    nodes["part"] = part.astype(np.int32)
    return nodes


def _pair_bucket(spec: dict, ctx: RunContext) -> PartitionResult:
    config = ctx.config.dedup
    keys = _read_bucket(ctx, spec["num_parts"], spec["bucket"])
    order, sizes = find_groups(keys["band"], keys["k0"], keys["k1"])
    # The distinct documents among group members, loaded once each and numbered in doc_id order.
    unique_keys, member = np.unique(keys["part"][order].astype(np.int64) << 32 | keys["row"][order],
                                    return_inverse=True)
    nodes = _load_nodes(ctx, unique_keys)
    by_id = np.argsort(nodes["doc_id"], kind="stable")
    nodes = {name: values[by_id] for name, values in nodes.items()}
    renumber = np.empty(len(by_id), dtype=np.int64)
    renumber[by_id] = np.arange(len(by_id))
    member = renumber[member]
    member = member[np.lexsort((member, np.repeat(np.arange(len(sizes)), sizes)))]  # each group by doc_id
    exact = keys["band"][order][np.cumsum(sizes) - sizes] == EXACT_BAND
    in_exact = np.repeat(exact, sizes)
    a, b = _unique_pairs(*map(np.concatenate, zip(
        link_groups(sizes[exact], member[in_exact], None, config.threshold),
        link_groups(sizes[~exact], member[~in_exact], nodes["sig"] if config.verify else None, config.threshold),
    )))
    linked = np.union1d(a, b)
    edges = pa.table({"a": pa.array(nodes["doc_id"][a], pa.string()), "b": pa.array(nodes["doc_id"][b], pa.string())})
    node_table = pa.table({
        "doc_id": pa.array(nodes["doc_id"][linked], pa.string()),
        "part": nodes["part"][linked],
        "score_sum": nodes["score_sum"][linked],
        "chars": nodes["chars"][linked],
        "h0": nodes["text_hash"][linked, 0],
        "h1": nodes["text_hash"][linked, 1],
    })
    edges_path = ctx.part_path(PAIRS_PHASE, spec["bucket"], "edges.parquet")
    nodes_path = ctx.part_path(PAIRS_PHASE, spec["bucket"], "nodes.parquet")
    storage.write_parquet(edges_path, edges)
    storage.write_parquet(nodes_path, node_table)
    return PartitionResult(
        counts={"in": len(by_id), "out": len(by_id)},
        files=[edges_path, nodes_path],
        info={"keys": len(keys["row"]), "candidate_groups": len(sizes), "exact_groups": int(exact.sum()),
              "edges": edges.num_rows, "linked": len(linked), "no_similar_candidate": len(by_id) - len(linked)},
    )


# --- phase 3 (driver): clusters and survivors -----------------------------------------------------------


def _cluster(ctx: RunContext, num_buckets: int, num_parts: int) -> dict:
    """Union-find over every bucket's edges; writes clusters.parquet and the per-partition cluster files."""
    edges = storage.read_parquet([ctx.part_path(PAIRS_PHASE, b, "edges.parquet") for b in range(num_buckets)])
    nodes = storage.read_parquet([ctx.part_path(PAIRS_PHASE, b, "nodes.parquet") for b in range(num_buckets)])
    doc_id = nodes.column("doc_id").to_numpy(zero_copy_only=False).astype(str)
    doc_id, first = np.unique(doc_id, return_index=True)  # a document is a node of every bucket it is in
    facts = {name: nodes.column(name).to_numpy()[first] for name in ("part", "score_sum", "chars", "h0", "h1")}
    a = np.searchsorted(doc_id, edges.column("a").to_numpy(zero_copy_only=False).astype(str))
    b = np.searchsorted(doc_id, edges.column("b").to_numpy(zero_copy_only=False).astype(str))
    label = connected_components(len(doc_id), a, b)
    survivor = choose_survivors(label, facts["score_sum"], facts["chars"], doc_id)
    size = np.bincount(label, minlength=len(doc_id))[label].astype(np.int32)
    exact = (facts["h0"] == facts["h0"][survivor]) & (facts["h1"] == facts["h1"][survivor])
    table = pa.table({
        "doc_id": pa.array(doc_id, pa.string()),
        "cluster_id": pa.array(doc_id[survivor], pa.string()),
        "cluster_size": size,
        "survivor": survivor == np.arange(len(doc_id)),
        "kind": pa.array(np.where(exact, "exact", "fuzzy"), pa.string()),
    })
    storage.write_parquet(
        ctx.path("dedup", "clusters.parquet"),
        table.select(["doc_id", "cluster_id", "survivor", "kind"]).sort_by([("cluster_id", "ascending"),
                                                                            ("doc_id", "ascending")]),
    )
    for p in range(num_parts):
        storage.write_parquet(ctx.part_path(CLUSTERS_DIR, p, "parquet"), table.filter(facts["part"] == p))
    sizes, counts = np.unique(np.bincount(label)[np.unique(label)], return_counts=True)
    return {
        "clusters": int(counts.sum()),
        "documents_in_clusters": len(doc_id),
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "size_histogram": {str(s): int(c) for s, c in zip(sizes, counts)},
    }


# --- phase 4: survivors, per docs partition -------------------------------------------------------------


def _write_survivors(spec: dict, ctx: RunContext) -> PartitionResult:
    clusters = storage.read_parquet(ctx.path(spec["clusters"]))
    docs = storage.parquet_file(ctx.path(spec["docs"]))
    schema = docs.schema_arrow.append(pa.field("cluster_id", pa.string())).append(pa.field("cluster_size", pa.int32()))
    counts = {"in": 0, "out": 0, "duplicate_exact": 0, "duplicate_fuzzy": 0}
    out_path = ctx.part_path(DOCS_PHASE, spec["index"], "parquet")
    with storage.atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, schema, **storage.PARQUET_OPTIONS) as writer:
        for batch in docs.iter_batches(batch_size=BATCH_DOCS):
            ids = batch.column("doc_id")
            pos = pc.index_in(ids, value_set=clusters.column("doc_id"))
            in_cluster = pos.is_valid()
            keep = pc.fill_null(pc.take(clusters.column("survivor"), pos), True)
            kind = pc.take(clusters.column("kind"), pos)
            table = pa.Table.from_batches([batch]).append_column(
                "cluster_id", pc.if_else(in_cluster, pc.take(clusters.column("cluster_id"), pos), ids)
            ).append_column("cluster_size", pc.fill_null(pc.take(clusters.column("cluster_size"), pos), 1))
            writer.write_table(table.filter(keep).cast(schema))
            dropped = pc.invert(keep)
            counts["in"] += batch.num_rows
            counts["out"] += pc.sum(keep.cast(pa.int64())).as_py() or 0
            counts["duplicate_exact"] += pc.sum(pc.and_(dropped, pc.equal(kind, "exact")).cast(pa.int64())).as_py() or 0
            counts["duplicate_fuzzy"] += pc.sum(pc.and_(dropped, pc.equal(kind, "fuzzy")).cast(pa.int64())).as_py() or 0
    return PartitionResult(counts=counts, files=[out_path])


# --- the stage ------------------------------------------------------------------------------------------


def run(ctx: RunContext) -> dict:
    config = ctx.config.dedup
    started = time.monotonic()
    docs = [next(rel for rel in files if rel.startswith("docs/part-")) for files in upstream_partitions(ctx, "docs")]
    bands, rows = lsh_params(config)
    num_buckets = config.num_buckets or len(docs)
    sign = run_partitions(ctx, SIGN_PHASE, [
        {"index": i, "docs": rel, "bands": bands, "rows": rows, "num_buckets": num_buckets, "reads": [rel]}
        for i, rel in enumerate(docs)
    ], _sign_partition, SECTIONS)
    pairs = run_partitions(ctx, PAIRS_PHASE, [
        {"bucket": b, "num_parts": len(docs), "signatures": phase_digest(sign)} for b in range(num_buckets)
    ], _pair_bucket, SECTIONS)
    clusters = _cluster(ctx, num_buckets, len(docs))
    survivors = run_partitions(ctx, DOCS_PHASE, [
        {"index": i, "docs": rel, "clusters": f"{CLUSTERS_DIR}/part-{i:05d}.parquet",
         "reads": [rel, f"{CLUSTERS_DIR}/part-{i:05d}.parquet"]}
        for i, rel in enumerate(docs)
    ], _write_survivors, SECTIONS)
    stats = summarize(survivors, time.monotonic() - started)
    stats["lsh"] = {
        "threshold": config.threshold, "num_perm": config.num_perm, "ngram": config.ngram, "bands": bands,
        "rows": rows, "verify": config.verify, "num_buckets": num_buckets,
        "s_curve": {str(j): round(candidate_probability(j, bands, rows), 4) for j in (0.3, 0.5, 0.7, 0.9)},
    }
    stats["candidates"] = summarize(pairs, 0)["info"]
    stats["signatures"] = summarize(sign, 0)["info"]
    stats["clusters"] = clusters
    return write_stats(ctx, "dedup", stats)


def report_section(run_dir: Path, plots: Path):
    """The run report's dedup part: how many documents each cluster holds."""
    from pipeline.report import Section, hist, read_rows

    clusters = read_rows(run_dir, "dedup/clusters.parquet", ["cluster_id"])
    if not clusters:
        return None
    sizes = list(Counter(c["cluster_id"] for c in clusters).values())
    hist(plots / "cluster_sizes.png", sizes, "Dedup cluster sizes (documents per cluster)", "size", log=True)
    return Section("dedup", plots=[("Dedup cluster sizes", "report/cluster_sizes.png")],
                   data={"clusters": len(sizes), "clustered_documents": len(clusters)})
