"""Training throughput: the same GPT-2 step in a plain single-process PyTorch loop and under Ray Train.

    .venv/bin/python -m benchmarks.train            # CPU: gpt2 (124M), T=64, B=1, 1 thread, 2 rounds x 8 steps
    .venv/bin/python -m benchmarks.train --seq-len 1024 --batch 16 --accum 4 --steps 30   # one GPU, bf16

(Run it as a module: run as a file, benchmarks/tokenize.py would shadow the standard library's tokenize.)

Both sides run `training.train.train_loop` on the same synthetic shards (uniform random GPT-2 tokens) with
the same config: the baseline through `train_local` (this process, no Ray), the other through the stage's
TorchTrainer with one worker (`make_trainer`), which adds Ray Train's per-step `report` barrier, the worker
actor and its process. The sides alternate for --rounds rounds in one Ray session, so both see the same
machine; the steps before --warmup in each run (allocation, on CUDA torch.compile) are left out. Reported
per side: the median and the best step over all rounds. On a machine shared with other jobs the best step
is the fairer figure, since others' work only ever slows a step down.

On CPU both sides use --threads threads (the Ray worker reserves that many CPUs, and Ray sets its
OMP_NUM_THREADS to match; the table prints what each side ran with). MFU uses one peak for both sides:
on CUDA the GPU's bf16 peak, on CPU the fp32 matmul rate measured here with the same threads
(training/train.py: peak_flops). Checkpointing and evaluation happen only after the last step, untimed.

Output: a markdown table, one row per side, and Ray Train's overhead in percent (target <= 5%).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.config import TrainConfig
from pipeline.shards import ShardInfo, ShardManifest, write_manifest, write_shard
from pipeline.tokenizer import EOT_TOKEN, RANKS_SHA256, VOCAB_SIZE
from training.train import make_trainer, peak_flops, read_rows, train_local


def synthetic_tokens(run_dir: Path, train_tokens: int, val_tokens: int) -> None:
    rng = np.random.default_rng(0)
    folder = run_dir / "tokens"
    infos = []
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        write_shard(folder / f"{split}-00000.bin", rng.integers(0, VOCAB_SIZE, n))
        infos.append(ShardInfo(f"{split}-00000.bin", split, n, 1, ""))
    write_manifest(folder / "manifest.json", ShardManifest(
        tokenizer="r50k_base", vocab_size=VOCAB_SIZE, eot_token=EOT_TOKEN, ranks_sha256=RANKS_SHA256,
        shards=infos, source={"dataset": "synthetic"}, split={},
    ))


def step_rows(run_dir: Path, warmup: int) -> list[dict]:
    return read_rows(run_dir / "train" / "metrics.jsonl")[warmup:]


def alternate(rounds: int, run_side) -> dict[str, list[dict]]:
    """Each round runs `run_side(side, fresh temporary folder)` for plain then ray; their step rows, per side."""
    rows = {"plain": [], "ray": []}
    for _ in range(rounds):
        for side in rows:
            with tempfile.TemporaryDirectory() as tmp:
                rows[side] += run_side(side, Path(tmp))
    return rows


def figures(rows: list[dict], key: str) -> tuple[float, float]:
    """Median and best of one per-step figure."""
    values = [r[key] for r in rows]
    return statistics.median(values), max(values)


def print_comparison(rows: dict[str, list[dict]], threads: dict[str, int], labels: dict[str, str], key: str,
                     unit: str, ratios: tuple[tuple[str, str], ...] = ()) -> None:
    """The table: per side threads, median and best `key` (and of each (name, key) ratio), best against plain;
    then Ray Train's overhead."""
    names = [name for name, _ in ratios]
    print("| loop | threads | " + " | ".join([f"median {unit}", *(f"median {n}" for n in names), f"best {unit}",
                                             *(f"best {n}" for n in names), "best vs plain"]) + " |")
    print("|---|" + "---:|" * (4 + 2 * len(ratios)))
    plain_median, plain_best = figures(rows["plain"], key)
    for side, label in labels.items():
        (median, best), shares = figures(rows[side], key), [figures(rows[side], k) for _, k in ratios]
        cells = [f"{median:,.1f}", *(f"{m:.1%}" for m, _ in shares), f"{best:,.1f}", *(f"{b:.1%}" for _, b in shares),
                 f"{(best / plain_best - 1) * 100:+.1f}%"]
        print(f"| {label} | {threads[side]} | " + " | ".join(cells) + " |")
    ray_median, ray_best = figures(rows["ray"], key)
    print(f"\nRay Train overhead (target <= 5%): {(1 - ray_best / plain_best) * 100:.1f}% on the best step, "
          f"{(1 - ray_median / plain_median) * 100:.1f}% on the median")


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gpt2")
    parser.add_argument("--seq-len", type=int, default=1024 if cuda else 64)
    parser.add_argument("--batch", type=int, default=16 if cuda else 1, help="sequences per micro-step")
    parser.add_argument("--accum", type=int, default=1, help="micro-steps per optimizer step")
    parser.add_argument("--steps", type=int, default=30 if cuda else 8, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5 if cuda else 2, help="steps of each run left out")
    parser.add_argument("--rounds", type=int, default=2, help="plain and Ray runs, alternating")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per side (CPU only)")
    args = parser.parse_args()

    import ray

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if cuda else "cpu")
    cfg = TrainConfig(
        model=args.model, num_workers=1, use_gpu=cuda, max_steps=args.steps, micro_batch_size=args.batch,
        seq_len=args.seq_len, tokens_per_step=args.batch * args.seq_len * args.accum, warmup_steps=2,
        checkpoint_every=args.steps, keep_checkpoints=1, eval_every=args.steps, eval_batches=1, num_samples=0,
        peak_flops=peak_flops(device, 0.0),
    )
    ray.init(address="local", num_cpus=max(os.cpu_count(), args.threads), include_dashboard=False, log_to_driver=False)
    threads = {}

    def run_side(side: str, run_dir: Path) -> list[dict]:
        synthetic_tokens(run_dir, cfg.tokens_per_step * (args.steps + 1) + 1, args.seq_len * args.batch + 1)
        if side == "plain":
            train_local(run_dir, cfg)
            torch.cuda.empty_cache()  # hand the plain run's cached GPU memory back before Ray's turn
        else:
            resources = None if cuda else {"CPU": args.threads}
            make_trainer(run_dir, cfg, resources_per_worker=resources).fit()
        threads[side] = read_rows(run_dir / "train" / "attempts.jsonl")[-1]["threads"]
        return step_rows(run_dir, args.warmup)

    rows = alternate(args.rounds, run_side)
    ray.shutdown()

    # MFU is proportional to tokens/s: same model, same peak
    print(f"\n{args.model}, T={args.seq_len}, B={args.batch} x {args.accum} micro-steps ({cfg.tokens_per_step} "
          f"tokens/step), {args.rounds} rounds x {args.steps - args.warmup} timed steps per side, "
          f"{device.type} {'bf16' if cuda else 'fp32'}, peak {cfg.peak_flops / 1e12:.3g} TFLOP/s\n")
    print_comparison(rows, threads, {"plain": "plain PyTorch (train_local)", "ray": "Ray Train, 1 worker"},
                     "tokens_per_s", "tokens/s", ratios=(("MFU", "mfu"),))


if __name__ == "__main__":
    main()
