"""Tokenize stage: the offline tokenizer, the split and shard logic on plain data, and one real run on Ray."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest

from pipeline import shards, storage, tokenize, tokenizer
from pipeline.config import Config
from pipeline.runner import open_run
from pipeline.tokenizer import EOT_TOKEN, TokenizerError, get_encoding
from upstream import commit_as_upstream


# ---- tokenizer -----------------------------------------------------------------------------------------------


def test_known_gpt2_ids():
    encoding = get_encoding()
    assert encoding.encode_ordinary("Hello world") == [15496, 995]
    assert encoding.encode_ordinary(" the") == [262]
    assert encoding.n_vocab == 50257 and encoding.eot_token == EOT_TOKEN == 50256
    assert get_encoding() is encoding


def test_seed_cache_puts_verified_ranks_where_tiktoken_looks(tmp_path):
    cached = tokenizer.seed_cache(tokenizer.ASSET, tmp_path / "cache")
    url_sha1 = hashlib.sha1(b"https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken").hexdigest()
    assert cached == tmp_path / "cache" / url_sha1
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == tokenizer.RANKS_SHA256
    cached.write_bytes(b"stale")  # a corrupt cache entry is replaced, not handed to tiktoken
    tokenizer.seed_cache(tokenizer.ASSET, tmp_path / "cache")
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == tokenizer.RANKS_SHA256


def test_missing_or_corrupt_asset_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match=r"nope\.tiktoken: tokenizer ranks file missing"):
        tokenizer.seed_cache(tmp_path / "nope.tiktoken", tmp_path / "cache")
    corrupt = tmp_path / "r50k_base.tiktoken"
    data = bytearray(tokenizer.ASSET.read_bytes())
    data[100] ^= 1
    corrupt.write_bytes(bytes(data))
    with pytest.raises(TokenizerError, match=r"r50k_base\.tiktoken: tokenizer ranks file corrupt: sha256 [0-9a-f]{64}"):
        tokenizer.seed_cache(corrupt, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


# ---- per-record logic ----------------------------------------------------------------------------------------


def test_join_with_eot_precedes_every_document():
    joined = tokenize.join_with_eot([[1, 2], [], [70000 - 20000]])
    assert joined.tolist() == [EOT_TOKEN, 1, 2, EOT_TOKEN, EOT_TOKEN, 50000]


def test_assign_val_by_hash_and_forced_val_doc():
    hashes = [np.array([5, 2**63, 9], dtype=np.uint64), np.array([3, 2**64 - 1], dtype=np.uint64)]
    is_val, forced = tokenize.assign_val(hashes, 0.25)  # threshold 2**62: 5, 9, 3 are val
    assert [v.tolist() for v in is_val] == [[True, False, True], [True, False]] and forced is None

    is_val, forced = tokenize.assign_val(hashes, 0.0)  # nothing below 0: the smallest hash (3) is forced
    assert [v.tolist() for v in is_val] == [[False, False, False], [True, False]] and forced == (1, 0)


def test_split_runs():
    assert tokenize.split_runs(np.array([False, False, True, False, True, True])) == [
        (0, 2, False), (2, 3, True), (3, 4, False), (4, 6, True)
    ]
    assert tokenize.split_runs(np.array([], dtype=bool)) == []


def test_split_shards_cut_at_shard_tokens_and_count_document_starts(tmp_path):
    out = tokenize.SplitShards(tmp_path, "train", shard_tokens=4)
    out.add(np.array([EOT_TOKEN, 1, 2, EOT_TOKEN, 3, 4]), np.array([0, 3]))
    out.add(np.array([EOT_TOKEN, 5, 6]), np.array([0]))
    out.close()
    assert [(s.path, s.tokens, s.documents) for s in out.shards] == [
        ("train-00000.bin", 4, 2), ("train-00001.bin", 4, 1), ("train-00002.bin", 1, 0)
    ]
    read = np.concatenate([shards.read_shard(tmp_path / s.path) for s in out.shards])
    assert read.tolist() == [EOT_TOKEN, 1, 2, EOT_TOKEN, 3, 4, EOT_TOKEN, 5, 6]


# ---- the stage, through Ray ----------------------------------------------------------------------------------

TEXTS = [
    "Hello world",
    "Ünïcödé café — naïve façade, 日本語のテキスト, emoji 🎉🚀 and a combining é.",
    "A literal <|endoftext|> in text is ordinary text, not the special token.",
    "Line one\n\nLine two\twith a tab and trailing spaces   ",
    " leading space and numbers 1234567890 3.14159",
    "",  # dropped as empty_text
] + [f"Document number {i}: " + " ".join(f"word{i * j % 97}" for j in range(1 + i % 40)) for i in range(60)]


def _write_docs(run_dir):
    rows = sorted(({"doc_id": hashlib.sha1(f"u{i}".encode()).hexdigest(), "text": t} for i, t in enumerate(TEXTS)),
                  key=lambda r: r["doc_id"])
    parts = [rows[0::3], rows[1::3], rows[2::3]]
    for i, part in enumerate(parts):
        part = sorted(part, key=lambda r: r["doc_id"])
        storage.write_parquet(run_dir / "docs" / f"part-{i:05d}.parquet", pa.Table.from_pylist(part))
    commit_as_upstream(run_dir, "docs", [[f"docs/part-{i:05d}.parquet"] for i in range(len(parts))])
    return [r for part in parts for r in sorted(part, key=lambda r: r["doc_id"])]


def _config(shard_tokens):
    config = Config()
    config.dedup.enabled = False
    config.decontaminate.enabled = False
    config.tokenize.shard_tokens = shard_tokens
    config.tokenize.val_fraction = 0.15
    return config


def _decoded_docs(manifest, split):
    tokens = np.concatenate([shards.read_shard(p) for p in manifest.shard_paths(split)]).tolist()
    starts = [i for i, t in enumerate(tokens) if t == EOT_TOKEN] + [len(tokens)]
    assert starts[0] == 0
    return [get_encoding().decode(tokens[a + 1 : b]) for a, b in zip(starts[:-1], starts[1:])]


def test_stage_writes_exact_deterministic_shards_and_manifest(tmp_path, ray_session):
    runs = [tmp_path / "a", tmp_path / "b"]
    docs = [_write_docs(r) for r in runs][0]
    stats = [tokenize.run(open_run(r, _config(shard_tokens=200))) for r in runs]
    folder = runs[0] / "tokens"
    manifest = shards.load_manifest(folder / "manifest.json")

    # every shard decodes back to exactly the documents of its split, in order, EOT-joined
    kept = [d for d in docs if d["text"]]
    threshold = tokenize.val_threshold(0.15)
    val = [d["text"] for d in kept if storage.stable_hash(d["doc_id"]) < threshold]
    train = [d["text"] for d in kept if storage.stable_hash(d["doc_id"]) >= threshold]
    assert val and train and manifest.split["forced_val_doc"] is None
    assert _decoded_docs(manifest, "train") == train
    assert _decoded_docs(manifest, "val") == val

    # shard sizes, counts and checksums
    for split in ("train", "val"):
        infos = [s for s in manifest.shards if s.split == split]
        assert [s.path for s in infos] == [f"{split}-{i:05d}.bin" for i in range(len(infos))]
        assert all(s.tokens == 200 for s in infos[:-1]) and 0 < infos[-1].tokens <= 200
    assert len([s for s in manifest.shards if s.split == "train"]) > 2
    for info in manifest.shards:
        tokens = shards.read_shard(folder / info.path)
        assert info.tokens == len(tokens) and info.documents == int((tokens == EOT_TOKEN).sum())
        assert info.sha256 == storage.sha256_file(folder / info.path)
    data = json.loads((folder / "manifest.json").read_text())
    assert data["totals"]["train"]["documents"] == len(train) and data["totals"]["val"]["documents"] == len(val)
    assert data["tokenizer"] == "r50k_base" and data["ranks_sha256"] == tokenizer.RANKS_SHA256
    assert data["source"]["dataset"] == "docs" and len(data["source"]["fingerprint"]) == 64
    assert stats[0]["records_in"] == len(docs) and stats[0]["dropped"] == {"empty_text": 1, "missing_doc_id": 0}

    # byte-identical across two runs
    other = runs[1] / "tokens"
    names = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".json") and p.name != "stats.json")
    assert names == sorted(p.name for p in other.iterdir() if p.suffix in (".bin", ".json") and p.name != "stats.json")
    for name in names:
        assert (folder / name).read_bytes() == (other / name).read_bytes(), name

    # a rerun with another shard size reuses the encoded partitions and removes shards it no longer writes
    commits = {p: p.read_bytes() for p in (folder / "_commits").glob("*.json")}
    tokenize.run(open_run(runs[0], _config(shard_tokens=100_000)))
    assert {p: p.read_bytes() for p in (folder / "_commits").glob("*.json")} == commits  # "seconds" would differ
    resharded = shards.load_manifest(folder / "manifest.json")
    assert sorted(p.name for p in folder.glob("*.bin")) == ["train-00000.bin", "val-00000.bin"]
    assert _decoded_docs(resharded, "train") == train and _decoded_docs(resharded, "val") == val
