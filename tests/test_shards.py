"""pipeline/shards.py: llm.c shard files and the manifest, on synthetic data (no tokenizer, no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import shards
from pipeline.shards import ShardError, ShardInfo, ShardManifest


def test_reader_on_synthetic_shard_where_token_is_position(tmp_path):
    count = 70_000  # past 65535, so the wrap-around of position mod 65536 is covered
    path = tmp_path / "train-00000.bin"
    shards.write_shard(path, np.arange(count, dtype=np.int64) % 65536)

    assert path.stat().st_size == 1024 + 2 * count
    header = np.fromfile(path, dtype="<i4", count=256)
    assert list(header[:3]) == [20240520, 1, count] and not header[3:].any()
    tokens = shards.read_shard(path)
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16 and len(tokens) == count
    positions = np.arange(count) % 65536
    assert np.array_equal(tokens, positions)
    assert tokens[65535] == 65535 and tokens[65536] == 0


def test_empty_shard_reads_back_empty(tmp_path):
    path = tmp_path / "val-00000.bin"
    shards.write_shard(path, np.zeros(0, dtype=np.uint16))
    assert len(shards.read_shard(path)) == 0


def test_write_rejects_ids_that_do_not_fit_uint16(tmp_path):
    with pytest.raises(ShardError, match=r"\[0, 65535\]"):
        shards.write_shard(tmp_path / "x.bin", np.array([1, 65536]))
    with pytest.raises(ShardError, match=r"\[0, 65535\]"):
        shards.write_shard(tmp_path / "x.bin", np.array([-1, 2]))
    assert not (tmp_path / "x.bin").exists()


def _good_shard(tmp_path, count=100):
    path = tmp_path / "s.bin"
    shards.write_shard(path, np.arange(count))
    return path, bytearray(path.read_bytes())


@pytest.mark.parametrize(
    "offset, value, message",
    [(0, 12345, r"s\.bin: bad magic 12345, expected 20240520"), (4, 2, r"s\.bin: unsupported version 2")],
)
def test_bad_header_names_file_and_problem(tmp_path, offset, value, message):
    path, data = _good_shard(tmp_path)
    data[offset:offset + 4] = np.array([value], dtype="<i4").tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=message):
        shards.read_shard(path)


def test_truncated_tokens_name_file_and_sizes(tmp_path):
    path, data = _good_shard(tmp_path, count=100)
    path.write_bytes(bytes(data[:-10]))
    with pytest.raises(ShardError, match=r"s\.bin: file is 1214 bytes but the header says 100 tokens \(1224 bytes\): truncated"):
        shards.read_shard(path)


def test_truncated_header_and_trailing_bytes(tmp_path):
    path, data = _good_shard(tmp_path)
    path.write_bytes(bytes(data[:500]))
    with pytest.raises(ShardError, match=r"s\.bin: truncated: 500 bytes is shorter than the 1024-byte header"):
        shards.read_shard(path)
    path.write_bytes(bytes(data) + b"\0\0")
    with pytest.raises(ShardError, match="trailing bytes"):
        shards.read_shard(path)
    with pytest.raises(ShardError, match="missing.bin: shard file not found"):
        shards.read_shard(tmp_path / "missing.bin")


def _manifest(shard_list):
    return ShardManifest(
        tokenizer="r50k_base", vocab_size=50257, eot_token=50256, ranks_sha256="ab" * 32, shards=shard_list,
        source={"dataset": "docs", "fingerprint": "f" * 16}, split={"val_fraction": 0.1},
    )


def test_manifest_round_trip_and_shard_paths(tmp_path):
    folder = tmp_path / "tokens"
    infos = [
        ShardInfo("train-00000.bin", "train", 10, 2, "a" * 64),
        ShardInfo("train-00001.bin", "train", 4, 1, "b" * 64),
        ShardInfo("val-00000.bin", "val", 3, 1, "c" * 64),
    ]
    shards.write_manifest(folder / "manifest.json", _manifest(infos))

    data = json.loads((folder / "manifest.json").read_text())
    assert data["totals"] == {
        "train": {"shards": 2, "tokens": 14, "documents": 3}, "val": {"shards": 1, "tokens": 3, "documents": 1}
    }
    assert data["header"]["magic"] == 20240520 and data["dtype"] == "uint16" and "root" not in data

    loaded = shards.load_manifest(folder / "manifest.json")
    assert loaded.shards == infos and loaded.eot_token == 50256 and loaded.vocab_size == 50257
    assert loaded.shard_paths("train") == [folder.resolve() / "train-00000.bin", folder.resolve() / "train-00001.bin"]
    assert loaded.shard_paths("val") == [folder.resolve() / "val-00000.bin"]
    with pytest.raises(ValueError, match="unknown split 'test'"):
        loaded.shard_paths("test")


def test_manifest_errors_name_the_file(tmp_path):
    path = tmp_path / "manifest.json"
    with pytest.raises(ShardError, match="manifest.json: manifest not found"):
        shards.load_manifest(path)
    path.write_text("{not json")
    with pytest.raises(ShardError, match="manifest.json: not valid JSON"):
        shards.load_manifest(path)
    path.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ShardError, match="manifest.json: schema_version 99"):
        shards.load_manifest(path)
    data = _manifest([ShardInfo("x.bin", "test", 1, 1, "0" * 64)]).to_json()
    path.write_text(json.dumps(data))
    with pytest.raises(ShardError, match="shard x.bin has unknown split 'test'"):
        shards.load_manifest(path)
