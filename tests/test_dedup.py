"""Dedup: datasketch-equal signatures and candidates, recall and precision against exact Jaccard, survivors,
determinism across partition counts and runs, a huge cluster, and the dry-run web's duplicate groups."""

from __future__ import annotations

import hashlib
import itertools
import random
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash, MinHashLSH

from pipeline import dedup, minhash
from pipeline.config import Config, ConfigError, DedupConfig, load_config
from pipeline.runner import open_run
from upstream import commit_as_upstream

CONFIG = DedupConfig()


# --- generated corpora ----------------------------------------------------------------------------------


def _vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(size)]


def _edit(rng: random.Random, words: list[str], vocab: list[str], rate: float) -> list[str]:
    """A near-duplicate: about `rate` of the words replaced by random words."""
    out = list(words)
    for i in rng.sample(range(len(out)), max(1, round(len(out) * rate))):
        out[i] = rng.choice(vocab)
    return out


def make_corpus(seed: int = 0, sources: int = 120) -> list[str]:
    """A few hundred texts: unique articles, near-duplicates at edit rates on both sides of the threshold,
    case/whitespace variants (exact duplicates after normalization), half-overlapping texts, degenerate ones."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    texts = []
    for s in range(sources):
        words = [rng.choice(vocab) for _ in range(rng.randint(80, 300))]
        texts.append(" ".join(words))
        for _ in range(s % 4):
            rate = rng.choice([0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12])
            texts.append(" ".join(_edit(rng, words, vocab, rate)))
        if s % 9 == 0:
            texts.append("  ".join(words).upper() + "\n")
        if s % 10 == 0:
            half = words[: len(words) // 2]
            texts.append(" ".join(half + [rng.choice(vocab) for _ in range(len(words) - len(half))]))
    texts += ["", "   ", "two words", "Two  WORDS", "x"]
    return texts


def doc_rows(texts: list[str | None], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = [
        {"doc_id": hashlib.sha1(f"doc-{i}".encode()).hexdigest(), "url": f"http://example.org/{i}", "text": t,
         "score_sum": rng.randint(3, 50), "chars": None if t is None else len(t)}
        for i, t in enumerate(texts)
    ]
    return sorted(rows, key=lambda r: r["doc_id"])


DOCS_SCHEMA = pa.schema([("doc_id", pa.string()), ("url", pa.string()), ("text", pa.string()),
                         ("score_sum", pa.int64()), ("chars", pa.int64())])


def write_docs(run_dir: Path, rows: list[dict], num_parts: int) -> None:
    """docs/ partitions as extract writes them (each sorted by doc_id); row i goes to partition i % n."""
    (run_dir / "docs").mkdir(parents=True, exist_ok=True)
    for p in range(num_parts):
        part = rows[p::num_parts]
        pq.write_table(pa.Table.from_pylist(part, schema=DOCS_SCHEMA), run_dir / "docs" / f"part-{p:05d}.parquet")
    commit_as_upstream(run_dir, "docs", [[f"docs/part-{p:05d}.parquet"] for p in range(num_parts)])


def run_stage(run_dir: Path, rows: list[dict], num_parts: int, **dedup_config) -> dict:
    write_docs(run_dir, rows, num_parts)
    config = Config()
    for key, value in dedup_config.items():
        setattr(config.dedup, key, value)
    return dedup.run(open_run(run_dir, config))


def shingle_sets(texts: list[str | None]) -> list[set[bytes]]:
    return [set(minhash.shingles(minhash.normalize(t or ""), CONFIG.ngram)) for t in texts]


def true_jaccard(sets: list[set[bytes]]) -> dict[tuple[int, int], float]:
    """Exact Jaccard of every pair sharing a shingle (all other pairs are 0), from an inverted index."""
    postings = defaultdict(list)
    for i, s in enumerate(sets):
        for sh in s:
            postings[sh].append(i)
    shared = Counter(pair for ids in postings.values() for pair in itertools.combinations(ids, 2))
    return {(i, j): n / len(sets[i] | sets[j]) for (i, j), n in shared.items()}


# --- signatures -----------------------------------------------------------------------------------------


def test_normalize_and_shingle_rule():
    assert minhash.normalize("  The\u00a0QUICK\tbrown\n\nfox ") == "the quick brown fox"
    assert minhash.normalize("ﬁne Ｆｕｌｌ") == "fine full"  # NFKC folds ligatures and full-width forms
    assert minhash.shingles("a b c d e f", 5) == [b"a b c d e", b"b c d e f"]
    assert minhash.shingles("too short", 5) == [b"too short"]  # fewer words than ngram: the whole text
    assert minhash.shingles("", 5) == []


def test_signatures_equal_datasketch():
    rng = random.Random(1)
    vocab = _vocabulary(rng) + ["naïve", "日本語のテキスト", "x" * 70, "emoji🙂", "ß"]
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 120))) for _ in range(40)]
    texts += ["", "one", "a b c d", "Ünïcödé   text with   ＦＵＬＬ width"]
    texts += ["y" * 300]  # a 300-byte shingle: 5 SHA-1 blocks
    normalized = [minhash.normalize(t) for t in texts]
    for num_perm, seed in ((256, 1), (64, 7)):
        perms = minhash.permutations(num_perm, seed)
        assert np.array_equal(perms, MinHash(num_perm, seed).permutations)
        sigs = minhash.signatures(normalized, 5, perms)
        for text, sig in zip(normalized, sigs):
            expected = MinHash(num_perm, seed)
            expected.update_batch(minhash.shingles(text, 5))
            assert np.array_equal(sig, expected.hashvalues), text[:60]
    one = MinHash(256, 1)
    for shingle in minhash.shingles(normalized[0], 5):
        one.update(shingle)
    assert np.array_equal(minhash.signatures(normalized[:1], 5, minhash.permutations(256, 1))[0], one.hashvalues)


def test_band_keys_are_sha1_of_band_values():
    sigs = minhash.signatures(["a b c d e f g", "another text of several words", ""], 5, minhash.permutations(256, 1))
    keys = minhash.band_keys(sigs, 32, 8)
    for doc, band in itertools.product(range(3), range(32)):
        digest = hashlib.sha1(sigs[doc, band * 8 : (band + 1) * 8].tobytes()).digest()
        assert keys[doc, band].tolist() == [int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:16], "big")]
    assert minhash.band_keys(sigs[:0], 32, 8).shape == (0, 32, 2)


# --- LSH parameters and candidates ----------------------------------------------------------------------


def test_lsh_params_follow_datasketch():
    weights = (1 - CONFIG.false_negative_weight, CONFIG.false_negative_weight)
    lsh = MinHashLSH(threshold=CONFIG.threshold, num_perm=CONFIG.num_perm, weights=weights)
    assert dedup.lsh_params(CONFIG) == (lsh.b, lsh.r) == (32, 8)
    assert dedup.lsh_params(DedupConfig(bands=16, rows=8)) == (16, 8)
    with pytest.raises(ConfigError, match="dedup.bands=40 x dedup.rows=10 must"):
        load_config(None, ["dedup.bands=40", "dedup.rows=10"])
    bands, rows = dedup.lsh_params(CONFIG)
    assert dedup.candidate_probability(0.3, bands, rows) < 0.01 and dedup.candidate_probability(0.8, bands, rows) > 0.99


def _candidate_pairs(normalized: list[str], bands: int, rows: int) -> set[tuple[int, int]]:
    """Pairs sharing a band, found the way the stage finds them (band keys, then equal-key groups)."""
    sigs = minhash.signatures(normalized, CONFIG.ngram, minhash.permutations(CONFIG.num_perm, CONFIG.seed))
    signed = np.flatnonzero([bool(t) for t in normalized])
    keys = minhash.band_keys(sigs[signed], bands, rows)
    band = np.tile(np.arange(bands, dtype=np.int16), len(signed))
    doc = np.repeat(signed, bands)
    order, sizes = dedup.find_groups(band, keys[:, :, 0].ravel(), keys[:, :, 1].ravel())
    pairs = set()
    for group in np.split(doc[order], np.cumsum(sizes)[:-1]):
        pairs.update(itertools.combinations(sorted(set(group.tolist())), 2))
    return pairs


def test_candidates_equal_datasketch_minhashlsh():
    texts = make_corpus(seed=3, sources=50)
    normalized = [minhash.normalize(t) for t in texts]
    bands, rows = dedup.lsh_params(CONFIG)
    lsh = MinHashLSH(threshold=CONFIG.threshold, num_perm=CONFIG.num_perm, params=(bands, rows))
    sketches = {}
    for i, text in enumerate(normalized):
        if text:
            sketches[i] = MinHash(CONFIG.num_perm, CONFIG.seed)
            sketches[i].update_batch(minhash.shingles(text, CONFIG.ngram))
            lsh.insert(i, sketches[i])
    expected = {tuple(sorted((i, j))) for i, m in sketches.items() for j in lsh.query(m) if j != i}
    found = _candidate_pairs(normalized, bands, rows)
    assert found == expected
    assert len(found) > 50  # the corpus does have near-duplicates


# --- linking, components, survivors (plain arrays) ------------------------------------------------------


def test_link_groups_verifies_pairs_and_big_groups_against_leaders():
    rng = np.random.default_rng(0)
    base, other = rng.integers(0, 2**32, (2, 100), dtype=np.uint32)

    def near(sig, donor, n):  # a copy whose estimated Jaccard with `sig` is 1 - n/100
        out = sig.copy()
        out[:n] = donor[:n]
        return out

    # group 1: a chain a~b~c with a !~ c (0.4 apart), plus an unrelated member; group 2: two copies
    a, b, c = base, near(base, other, 20), near(base, other, 40)
    sigs = np.stack([a, b, c, other, base, base])
    sizes, members = np.array([4, 2]), np.arange(6)
    src, dst = dedup.link_groups(sizes, members, sigs, threshold=0.7)
    assert list(zip(src.tolist(), dst.tolist())) == [(0, 1), (1, 2), (4, 5)]
    src, dst = dedup.link_groups(sizes, members, None, threshold=0.7)  # verify off: star to the first
    assert list(zip(src.tolist(), dst.tolist())) == [(0, 1), (0, 2), (0, 3), (4, 5)]
    # a pair met in several groups (bands) is one edge
    src, dst = dedup.link_groups(np.array([2, 2, 3]), np.array([4, 5, 4, 5, 0, 4, 5]), sigs, threshold=0.7)
    assert list(zip(src.tolist(), dst.tolist())) == [(0, 4), (0, 5), (4, 5)]
    # a group bigger than PAIRWISE_MAX_GROUP: 100 copies and 10 unrelated members -> linked to the leaders
    big = np.stack([base] * 100 + [rng.integers(0, 2**32, 100, dtype=np.uint32) for _ in range(10)])
    src, dst = dedup.link_groups(np.array([110]), np.arange(110), big, threshold=0.7)
    assert dedup.PAIRWISE_MAX_GROUP < 110
    assert list(zip(src.tolist(), dst.tolist())) == [(0, m) for m in range(1, 100)]


def test_components_and_survivor_rule():
    label = dedup.connected_components(7, np.array([0, 5, 3, 2]), np.array([5, 1, 4, 4]))
    assert label.tolist() == [0, 0, 2, 2, 2, 0, 6]
    doc_id = np.array(["a", "b", "c", "d", "e", "f", "g"])
    score = np.array([5, 9, 1, 1, 1, 9, 0])
    chars = np.array([10, 10, 50, 70, 70, 20, 5])
    survivors = dedup.choose_survivors(label, score, chars, doc_id)
    # {a, b, f}: b and f tie on score, f is longer; {c, d, e}: d and e tie on score and length, d is smaller
    assert survivors.tolist() == [5, 5, 3, 3, 3, 5, 6]


# --- the stage on Ray -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_run(ray_session, tmp_path_factory):
    texts = make_corpus() + [None]
    rows = doc_rows(texts)
    run_dir = tmp_path_factory.mktemp("dedup-corpus")
    stats = run_stage(run_dir, rows, num_parts=3)
    return {"dir": run_dir, "rows": rows, "texts": [r["text"] for r in rows], "stats": stats}


def _clusters(run_dir: Path) -> dict[str, dict]:
    return {r["doc_id"]: r for r in pq.read_table(run_dir / "dedup" / "clusters.parquet").to_pylist()}


def test_recall_and_verified_edges(corpus_run):
    rows = corpus_run["rows"]
    jaccard = true_jaccard(shingle_sets(corpus_run["texts"]))
    clusters = _clusters(corpus_run["dir"])
    cluster_of = [clusters.get(r["doc_id"], {"cluster_id": r["doc_id"]})["cluster_id"] for r in rows]
    close = [pair for pair, j in jaccard.items() if j >= CONFIG.threshold + 0.1]
    found = sum(cluster_of[i] == cluster_of[j] for i, j in close)
    assert len(close) > 60 and found / len(close) >= 0.95, (found, len(close))
    index = {r["doc_id"]: i for i, r in enumerate(rows)}
    edges = pq.read_table(sorted((corpus_run["dir"] / "dedup" / "_work" / "pairs").glob("*.edges.parquet")))
    edge_pairs = [tuple(sorted((index[a], index[b]))) for a, b in zip(edges["a"].to_pylist(), edges["b"].to_pylist())]
    normalized = [minhash.normalize(t or "") for t in corpus_run["texts"]]
    similarities = [1.0 if normalized[i] == normalized[j] else jaccard.get((i, j), 0.0) for i, j in edge_pairs]
    assert min(similarities) >= CONFIG.threshold - 0.1
    assert any(CONFIG.threshold - 0.1 <= j < CONFIG.threshold + 0.1 for j in jaccard.values())  # borderline exists


def test_survivors_and_output_schema(corpus_run):
    run_dir, rows, stats = corpus_run["dir"], corpus_run["rows"], corpus_run["stats"]
    clusters = _clusters(run_dir)
    by_id = {r["doc_id"]: r for r in rows}
    members = defaultdict(list)
    for doc_id, c in clusters.items():
        members[c["cluster_id"]].append(doc_id)
    for cluster_id, ids in members.items():
        best = min(ids, key=lambda d: (-by_id[d]["score_sum"], -len(by_id[d]["text"] or ""), d))
        assert cluster_id == best and [d for d in ids if clusters[d]["survivor"]] == [best]
        for d in ids:
            same = minhash.normalize(by_id[d]["text"] or "") == minhash.normalize(by_id[best]["text"] or "")
            assert clusters[d]["kind"] == ("exact" if same else "fuzzy")
    out = pq.read_table(sorted((run_dir / "dedup" / "docs").glob("part-*.parquet")))
    assert out.schema.names == DOCS_SCHEMA.names + ["cluster_id", "cluster_size"]
    assert out.schema.field("cluster_size").type == pa.int32()
    kept = {d for d in by_id if d not in clusters or clusters[d]["survivor"]}
    assert set(out["doc_id"].to_pylist()) == kept
    for r in out.to_pylist():
        assert r["cluster_size"] == len(members.get(r["doc_id"], [r["doc_id"]]))
        assert r["cluster_id"] == r["doc_id"]
    dropped = [c["kind"] for c in clusters.values() if not c["survivor"]]
    assert stats["records_in"] == len(rows) and stats["records_out"] == len(kept)
    assert stats["dropped"] == {"duplicate_exact": dropped.count("exact"), "duplicate_fuzzy": dropped.count("fuzzy")}
    histogram = Counter(len(ids) for ids in members.values())
    assert stats["clusters"]["size_histogram"] == {str(k): v for k, v in sorted(histogram.items())}
    assert stats["signatures"]["null_text"] == 1 and stats["signatures"]["no_shingles"] == 3
    # the empty texts (None, "", "   ") are one exact cluster
    empty = {d for d, r in by_id.items() if not (r["text"] or "").strip()}
    assert len({clusters[d]["cluster_id"] for d in empty}) == 1 and len(empty) == 3


def _output_bytes(run_dir: Path) -> dict[str, bytes]:
    files = [run_dir / "dedup" / "clusters.parquet", *sorted((run_dir / "dedup" / "docs").glob("part-*.parquet"))]
    return {str(f.relative_to(run_dir)): f.read_bytes() for f in files}


def test_partition_count_and_rerun_do_not_change_output(corpus_run, tmp_path):
    run_dir, rows = corpus_run["dir"], corpus_run["rows"]
    again = run_stage(tmp_path / "again", rows, num_parts=3)
    assert _output_bytes(tmp_path / "again") == _output_bytes(run_dir)
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in corpus_run["stats"].items() if k != "seconds"}
    run_stage(tmp_path / "one", rows, num_parts=1, num_buckets=2)
    assert (tmp_path / "one" / "dedup" / "clusters.parquet").read_bytes() == (
        run_dir / "dedup" / "clusters.parquet").read_bytes()
    merged = pq.read_table(sorted((run_dir / "dedup" / "docs").glob("part-*.parquet"))).sort_by("doc_id")
    assert pq.read_table(tmp_path / "one" / "dedup" / "docs" / "part-00000.parquet").equals(merged)


def test_rerun_skips_done_work_and_redoes_what_changed(corpus_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(corpus_run["dir"], run_dir)
    commits = sorted((run_dir / "dedup").rglob("_commits/*.json"))
    before = {p: p.stat().st_mtime_ns for p in commits}
    dedup.run(open_run(run_dir, Config()))
    assert {p: p.stat().st_mtime_ns for p in commits} == before
    # a new exact copy of a unique document in partition 0 -> redone downstream, the pair found
    docs0 = pq.read_table(run_dir / "docs" / "part-00000.parquet")
    clusters = _clusters(run_dir)
    unique = next(r for r in docs0.to_pylist() if r["doc_id"] not in clusters and (r["text"] or "").strip())
    copy = dict(unique, doc_id="f" * 40, score_sum=unique["score_sum"] + 1)
    pq.write_table(pa.Table.from_pylist(docs0.to_pylist() + [copy], schema=docs0.schema),
                   run_dir / "docs" / "part-00000.parquet")
    stats = dedup.run(open_run(run_dir, Config()))
    clusters = _clusters(run_dir)
    assert clusters[unique["doc_id"]]["cluster_id"] == "f" * 40 and clusters["f" * 40]["survivor"]
    assert stats["records_in"] == corpus_run["stats"]["records_in"] + 1
    assert stats["records_out"] == corpus_run["stats"]["records_out"]


def test_huge_cluster(ray_session, tmp_path):
    rng = random.Random(5)
    vocab = _vocabulary(rng)
    page = [rng.choice(vocab) for _ in range(200)]
    texts = [" ".join(page) for _ in range(300)]
    texts += [" ".join(_edit(rng, page, vocab, 0.01)) for _ in range(200)]
    texts += [" ".join(rng.choice(vocab) for _ in range(150)) for _ in range(40)]
    rows = doc_rows(texts, seed=5)
    winner = hashlib.sha1(b"doc-420").hexdigest()  # one of the edited copies
    for r in rows:
        r["score_sum"] = 1000 if r["doc_id"] == winner else 10
    stats = run_stage(tmp_path, rows, num_parts=4)
    clusters = _clusters(tmp_path)
    assert len(clusters) == 500 and {c["cluster_id"] for c in clusters.values()} == {winner}
    assert stats["records_out"] == 41 and stats["clusters"]["size_histogram"] == {"500": 1}
    assert stats["candidates"]["edges"] < 500 * 30  # linked to leaders, not all pairs


def test_more_partitions_than_documents(ray_session, tmp_path):
    rows = doc_rows(["Same text here.", "same   TEXT here.", "Another one."])
    stats = run_stage(tmp_path, rows, num_parts=5)
    outputs = sorted((tmp_path / "dedup" / "docs").glob("part-*.parquet"))
    assert len(outputs) == 5 and sum(pq.read_metadata(f).num_rows for f in outputs) == 2
    assert all(pq.read_schema(f).names[-2:] == ["cluster_id", "cluster_size"] for f in outputs)
    assert stats["dropped"] == {"duplicate_exact": 1, "duplicate_fuzzy": 0}
    stats = run_stage(tmp_path / "unique", doc_rows(["One text.", "Another text."]), num_parts=2)
    assert stats["records_out"] == 2 and stats["clusters"]["clusters"] == 0
    assert pq.read_metadata(tmp_path / "unique" / "dedup" / "clusters.parquet").num_rows == 0


def test_dry_run_web_duplicate_groups_recovered(ray_session, tmp_path):
    from pipeline import devweb
    from pipeline.config import DevwebConfig

    truth = devweb.load_truth(devweb.build(tmp_path / "web", devweb.free_port(), DevwebConfig()))
    docs = [t for t in truth if t["expected"] == "doc"]
    rows = sorted(({"doc_id": hashlib.sha1(t["url"].encode()).hexdigest(), "url": t["url"], "text": t["text"],
                    "score_sum": 10, "chars": len(t["text"])} for t in docs), key=lambda r: r["doc_id"])
    run_stage(tmp_path / "run", rows, num_parts=2)
    clusters = _clusters(tmp_path / "run")
    group_of = {hashlib.sha1(t["url"].encode()).hexdigest(): t["dup_group"] for t in docs}
    expected = defaultdict(set)
    for doc_id, group in group_of.items():
        if group:
            expected[group].add(doc_id)
    found = defaultdict(set)
    for doc_id, c in clusters.items():
        found[c["cluster_id"]].add(doc_id)
    assert len(expected) >= 10
    assert sorted(map(sorted, found.values())) == sorted(map(sorted, expected.values()))
