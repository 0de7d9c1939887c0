"""Training: data windows, the loop without Ray (learning, exact resume), and Ray Train with a killed worker."""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import storage
from pipeline.cli import main as cli_main
from pipeline.config import ConfigError, TrainConfig
from pipeline.shards import ShardError, ShardInfo, ShardManifest, load_manifest, write_manifest, write_shard
from pipeline.tokenizer import EOT_TOKEN, RANKS_SHA256, get_encoding
from training.data import open_train, open_val, val_batches
from training.train import grad_accum_steps, learning_rate, train_local

pytestmark = pytest.mark.usefixtures("one_thread")


def write_tokens(run_dir: Path, splits: dict[str, list[np.ndarray]]) -> Path:
    """Shards + manifest.json under run_dir/tokens, through pipeline.shards (the tokenize stage's format)."""
    folder = run_dir / "tokens"
    infos = []
    for split, shards in splits.items():
        for i, tokens in enumerate(shards):
            path = folder / f"{split}-{i:05d}.bin"
            write_shard(path, tokens)
            documents = int(np.sum(tokens == EOT_TOKEN))
            infos.append(ShardInfo(path.name, split, len(tokens), documents, storage.sha256_file(path)))
    manifest = ShardManifest(
        tokenizer="r50k_base", vocab_size=50257, eot_token=EOT_TOKEN, ranks_sha256=RANKS_SHA256,
        shards=infos, source={"dataset": "test"}, split={},
    )
    write_manifest(folder / "manifest.json", manifest)
    return folder / "manifest.json"


def position_stream(run_dir: Path, sizes=(1000, 537, 2000), val_sizes=(300,)) -> Path:
    """Shards whose token at stream offset i is i, so every window shows where it came from."""
    def split(sizes):
        edges = np.cumsum((0,) + sizes)
        return [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:])]

    return write_tokens(run_dir, {"train": split(sizes), "val": split(val_sizes)})


def prose_stream(run_dir: Path) -> Path:
    """Real English (the standard library's docstrings) in GPT-2 tokens, documents separated by EOT."""
    encoding = get_encoding()
    docs = []
    for name in ("argparse", "collections", "json", "pathlib", "subprocess", "threading", "unittest", "email"):
        module = importlib.import_module(name)
        docs += [obj.__doc__ for obj in [module, *vars(module).values()] if isinstance(getattr(obj, "__doc__", None), str)]
    encoded = [[EOT_TOKEN] + encoding.encode_ordinary(d) for d in dict.fromkeys(docs)]
    train = np.concatenate([t for i, t in enumerate(encoded) if i % 10]).astype(np.int64)
    val = np.concatenate([t for i, t in enumerate(encoded) if i % 10 == 0]).astype(np.int64)  # every 10th doc
    return write_tokens(run_dir, {"train": [train], "val": [val]})


def tiny(**overrides) -> TrainConfig:
    values = dict(
        model="gpt2-tiny", use_gpu=False, max_steps=30, micro_batch_size=2, seq_len=64, tokens_per_step=128,
        learning_rate=3e-3, warmup_steps=5, checkpoint_every=10, eval_every=15, eval_batches=2, num_samples=0,
    )
    return TrainConfig(**{**values, **overrides})


# ---------------------------------------------------------------- data


def test_windows_are_contiguous_disjoint_per_worker_and_cover_each_epoch(tmp_path):
    manifest = position_stream(tmp_path)
    T, B, W = 16, 4, 3
    windows = open_train(manifest, T, seed=7)
    assert windows.tokens == 3537 and windows.num_windows == (3537 - 1) // T
    seen = {}  # (epoch, window start) -> worker that trained on it
    position = 0
    while position + W * B <= 2 * windows.num_windows:  # two epochs
        for r in range(W):
            batch = windows.batch(position + r * B, B)
            assert batch.shape == (B, T + 1) and batch.dtype == torch.int64
            assert torch.all(batch[:, 1:] - batch[:, :-1] == 1)  # contiguous, also across shard ends
            for i, start in enumerate(batch[:, 0].tolist()):
                key = ((position + r * B + i) // windows.num_windows, start)
                assert key not in seen  # no window twice in an epoch, whichever worker
                seen[key] = r
        position += W * B
    assert all(start % T == 0 for _, start in seen)
    assert any(start < 1000 < start + T + 1 for _, start in seen)  # some window spans the first shard end
    first_epoch = [int(windows.window(g)[0]) for g in range(windows.num_windows)]
    assert sorted(first_epoch) == list(range(0, windows.num_windows * T, T))  # each window once per epoch
    assert first_epoch != sorted(first_epoch)  # shuffled
    second_epoch = [int(windows.window(g)[0]) for g in range(windows.num_windows, 2 * windows.num_windows)]
    assert sorted(second_epoch) == sorted(first_epoch) and second_epoch != first_epoch  # reshuffled
    again = open_train(manifest, T, seed=7)
    assert torch.equal(again.batch(50, 10), windows.batch(50, 10))  # deterministic: a position is enough
    assert not torch.equal(open_train(manifest, T, seed=8).batch(0, 10), windows.batch(0, 10))


def test_val_batches_split_windows_between_workers_once(tmp_path):
    manifest = position_stream(tmp_path, val_sizes=(100, 61))
    val = open_val(manifest, 16)
    assert val.num_windows == 10
    seen = []
    for rank in range(3):
        batches = list(val_batches(val, rank, 3, batch_size=2, max_batches=5))
        seen += [row[0].item() for batch in batches for row in batch]
    assert sorted(seen) == list(range(0, 160, 16))  # all 10 windows, each once, in stream order
    limited = [b for r in range(2) for b in val_batches(val, r, 2, batch_size=2, max_batches=1)]
    assert sum(len(b) for b in limited) == 4
    empty = open_val(position_stream(tmp_path / "novals", val_sizes=()), 16)
    assert empty.num_windows == 0 and list(val_batches(empty, 0, 1, 2, 5)) == []


def test_bad_shards_fail_at_open_naming_the_file(tmp_path):
    manifest = position_stream(tmp_path)
    data = json.loads(manifest.read_text())
    data["shards"][1]["tokens"] = 538
    manifest.write_text(json.dumps(data))
    with pytest.raises(ShardError, match=r"train-00001\.bin: holds 537 tokens but .* lists 538"):
        open_train(manifest, 16, seed=0)
    manifest = position_stream(tmp_path / "cut")
    shard = manifest.parent / "train-00002.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ShardError, match=r"train-00002\.bin: .*truncated"):
        open_train(manifest, 16, seed=0)
    with pytest.raises(ShardError, match="lower train.seq_len"):
        open_train(position_stream(tmp_path / "small", sizes=(10,)), 16, seed=0)


# ---------------------------------------------------------------- schedule and configuration


def test_learning_rate_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(learning_rate=1e-3, min_lr_ratio=0.1, warmup_steps=10, max_steps=110)
    lrs = [learning_rate(s, cfg) for s in range(cfg.max_steps)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[60] == pytest.approx(0.55e-3)  # halfway through the cosine: mean of peak and floor
    assert learning_rate(cfg.max_steps, cfg) == pytest.approx(1e-4)


def test_tokens_per_step_must_split_into_micro_batches():
    assert grad_accum_steps(tiny(tokens_per_step=1024), 2) == 4  # 2 sequences x 64 tokens x 2 workers = 256
    with pytest.raises(ConfigError, match="tokens_per_step=1000 is not a multiple of .* = 256"):
        grad_accum_steps(tiny(tokens_per_step=1000), 2)


# ---------------------------------------------------------------- the loop, in this process


@pytest.mark.slow
def test_tiny_model_lowers_its_loss_on_real_text(tmp_path):
    prose_stream(tmp_path)
    rows = train_local(tmp_path, tiny(num_samples=2, sample_length=12))
    assert [r["step"] for r in rows] == list(range(1, 31))
    losses = [r["loss"] for r in rows]
    assert losses[0] > 10.0  # ln(50257) = 10.8: the untrained model is uniform over the vocabulary
    assert np.mean(losses[-5:]) < losses[0] - 2.5
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(val) == 2 and val[1] < val[0] - 0.5 and val[1] < 8.5
    for r in rows:  # throughput is tokens per step over the step's time; MFU a share of the measured peak
        assert r["tokens_per_s"] == pytest.approx(128 / r["step_s"]) and 0.0005 < r["mfu"] < 1.0
    samples = json.loads((tmp_path / "train" / "samples.json").read_text())
    assert len(samples) == 2 and all(len(s["tokens"]) == 12 and s["text"] for s in samples)
    checkpoints = sorted(p.name for p in (tmp_path / "train" / "checkpoints").iterdir())
    assert checkpoints == ["step-000020", "step-000030"]  # keep_checkpoints=2


@pytest.mark.slow
def test_resumed_run_reproduces_the_uninterrupted_trajectory(tmp_path):
    cfg = tiny(max_steps=12, seq_len=32, tokens_per_step=256, checkpoint_every=4, keep_checkpoints=3, eval_every=6)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    prose_stream(whole)
    rows = train_local(whole, cfg)
    # the resumed run starts from what a crash after step 5 leaves: the step-4 checkpoint and 5 logged rows,
    # and a step-8 checkpoint cut short mid-write (by a worker killed while writing), which resuming skips
    prose_stream(resumed)
    shutil.copytree(whole / "train" / "checkpoints" / "step-000004", resumed / "train" / "checkpoints" / "step-000004")
    whole_8 = (whole / "train" / "checkpoints" / "step-000008" / "checkpoint.pt").read_bytes()
    storage.write_bytes(resumed / "train" / "checkpoints" / "step-000008" / "checkpoint.pt", whole_8[: len(whole_8) // 2])
    lines = (whole / "train" / "metrics.jsonl").read_text().splitlines()[:5]
    (resumed / "train" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    rows_resumed = train_local(resumed, cfg)
    assert [r["step"] for r in rows_resumed] == list(range(1, 13))  # row 5 of the crashed attempt replaced
    keys = ("step", "tokens", "loss", "lr", "grad_norm")
    assert [{k: r[k] for k in keys} for r in rows_resumed] == [{k: r[k] for k in keys} for r in rows]
    assert [r.get("val_loss") for r in rows_resumed] == [r.get("val_loss") for r in rows]
    a = torch.load(whole / "train/checkpoints/step-000012/checkpoint.pt", weights_only=True)
    b = torch.load(resumed / "train/checkpoints/step-000012/checkpoint.pt", weights_only=True)
    assert a["position"] == b["position"] == 12 * 4 * 2  # 4 micro-steps of 2 windows per step
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    attempts = [json.loads(x) for x in (resumed / "train" / "attempts.jsonl").read_text().splitlines()]
    assert [x["start_step"] for x in attempts] == [4]


@pytest.mark.slow
def test_a_retokenized_corpus_starts_over_unless_told_to_resume(tmp_path, capsys):
    cfg = tiny(max_steps=4, seq_len=32, tokens_per_step=128, checkpoint_every=2, eval_every=4)
    first = load_manifest(position_stream(tmp_path)).fingerprint()
    train_local(tmp_path, cfg)
    trained = (tmp_path / "train" / "checkpoints" / "step-000004" / "checkpoint.pt").read_bytes()
    position_stream(tmp_path, sizes=(1200, 537, 2000))  # other shards: a retokenized corpus
    train_local(tmp_path, dataclasses.replace(cfg, max_steps=6))
    attempts = [json.loads(x) for x in (tmp_path / "train" / "attempts.jsonl").read_text().splitlines()]
    assert [a["start_step"] for a in attempts] == [0]
    kept = tmp_path / "train" / "superseded" / first
    assert (kept / "checkpoints" / "step-000004" / "checkpoint.pt").read_bytes() == trained
    assert f"training from scratch; the earlier run is kept in {kept}" in capsys.readouterr().err
    position_stream(tmp_path, sizes=(1300, 537, 2000))
    train_local(tmp_path, dataclasses.replace(cfg, max_steps=8, resume_on_changed_data=True))
    attempts = [json.loads(x) for x in (tmp_path / "train" / "attempts.jsonl").read_text().splitlines()]
    assert [a["start_step"] for a in attempts] == [0, 6]
    assert "resuming from step 6, trained on other data" in capsys.readouterr().err


# ---------------------------------------------------------------- Ray Train: DDP over gloo, a killed worker


def test_ray_train_two_workers_survive_a_killed_worker(tmp_path, ray_session):
    run_dir = tmp_path / "run"
    position_stream(run_dir, sizes=(4000, 3000), val_sizes=(700,))
    sets = {
        "model": "gpt2-tiny", "use_gpu": "false", "num_workers": 2, "max_steps": 6, "micro_batch_size": 2,
        "seq_len": 32, "tokens_per_step": 256, "warmup_steps": 2, "checkpoint_every": 2, "eval_every": 3,
        "eval_batches": 2, "max_failures": 1, "crash_at_step": 3, "num_samples": 1, "sample_length": 8,
    }
    args = [f"--set=train.{k}={v}" for k, v in sets.items()]
    assert cli_main(["train", "--run-dir", str(run_dir), *args]) == 0
    out = run_dir / "train"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["steps"] == 6 and stats["tokens"] == 6 * 256 and stats["attempts"] == 2
    assert stats["checkpoint"] == "train/checkpoints/step-000006"
    attempts = [json.loads(x) for x in (out / "attempts.jsonl").read_text().splitlines()]
    assert [(a["start_step"], a["world_size"], a["device"]) for a in attempts] == [(0, 2, "cpu"), (2, 2, "cpu")]
    # rank 1 died at step 3; the new group resumed from the step-2 checkpoint
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if "val_loss" in r] == [3, 6]
    final = torch.load(out / "checkpoints" / "step-000006" / "checkpoint.pt", weights_only=True)
    assert final["world_size"] == 2 and final["position"] == 6 * 2 * 2 * 2  # steps x accum x workers x B
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((out / "samples.json").read_text())) == 1
