"""Fine-tuning throughput: the same GPT-1 fine-tuning step in a plain single-process PyTorch loop and under Ray Train.

    .venv/bin/python -m benchmarks.finetune          # CPU: gpt2 (124M), T=64, 4 examples/step, 1 thread, 2 rounds x 8 steps
    .venv/bin/python -m benchmarks.finetune --model gpt2-tiny --seq-len 32 --batch 8 --steps 6   # a smoke run
    .venv/bin/python -m benchmarks.finetune --seq-len 512 --batch 32 --accum 1 --steps 30        # one GPU, bf16

Both sides run `training.finetune.finetune_loop` through `finetune()` on the same data with the same config:
the baseline with `local=True` (this process, no Ray, training/session.py's LocalSession), the other through
the command's TorchTrainer with one worker, which adds Ray Train's worker actor and its process. The data
is a generated classification task (`custom` jsonl) of --batch x --steps examples of --seq-len tokens, one
epoch, the objective task + 0.5 x LM loss (GPT-1's); the model is --model with random weights saved as a
pretraining checkpoint (the weights do not change the cost of a step). Per step, examples/s comes from
OUT/metrics.jsonl, so the dev evaluation, the checkpoint and the export after the last step are not timed;
the steps before --warmup of each run are left out. The sides alternate for --rounds rounds in one Ray
session; the table gives the median and the best step of each side (benchmarks/train.py's table and
overhead line, which this reuses). On CPU both sides use one thread (a Ray worker of one CPU runs one).

Output: a markdown table, one row per side, and Ray Train's overhead in percent (target <= 5%).
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

import torch

from benchmarks.train import alternate, print_comparison
from pipeline.config import Config, FinetuneConfig
from training.finetune import finetune
from training.generated_tasks import FILLER
from training.model import GPT, model_config
from training.session import read_rows


def write_data(folder: Path, examples: int, words: int) -> Path:
    """A custom classification task of `examples` texts of `words` common words (about a token each)."""
    rng = random.Random(0)
    for split, count in (("train", examples), ("dev", 8)):
        rows = [{"text": " ".join(rng.choices(FILLER, k=words)), "label": i % 2} for i in range(count)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def main() -> None:
    import ray

    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gpt2")
    parser.add_argument("--seq-len", type=int, default=512 if cuda else 64, help="tokens per sequence")
    parser.add_argument("--batch", type=int, default=32 if cuda else 4, help="examples per optimizer step")
    parser.add_argument("--accum", type=int, default=1, help="micro-steps per optimizer step")
    parser.add_argument("--steps", type=int, default=30 if cuda else 8, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5 if cuda else 2, help="steps of each run left out")
    parser.add_argument("--rounds", type=int, default=2, help="plain and Ray runs, alternating")
    args = parser.parse_args()

    torch.set_num_threads(1)
    config = Config()
    config.finetune = FinetuneConfig(
        use_gpu=cuda, batch_size=args.batch, micro_batch_size=args.batch // args.accum, epochs=1,
        max_len=args.seq_len, checkpoint_every=args.steps, keep_checkpoints=1,
    )
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    threads = {}

    def run_side(side: str, folder: Path) -> list[dict]:
        torch.manual_seed(0)
        source = GPT(model_config(args.model))
        torch.save({"model": source.state_dict(), "model_config": source.config.to_dict(), "step": 0},
                   folder / "checkpoint.pt")
        del source
        data = write_data(folder, args.batch * args.steps, args.seq_len)
        finetune(config, "custom", data, folder / "checkpoint.pt", folder / "out", local=side == "plain")
        torch.cuda.empty_cache()  # hand the plain run's cached GPU memory back before Ray's turn
        threads[side] = read_rows(folder / "out" / "attempts.jsonl")[-1]["threads"]
        return read_rows(folder / "out" / "metrics.jsonl")[args.warmup:]

    rows = alternate(args.rounds, run_side)
    ray.shutdown()

    print(f"\n{args.model} fine-tuning, T={args.seq_len}, {args.batch} examples/step in {args.accum} micro-step(s), "
          f"task + 0.5 x LM loss, {args.rounds} rounds x {args.steps - args.warmup} timed steps per side, "
          f"{'cuda bf16' if cuda else 'cpu fp32'}\n")
    print_comparison(rows, threads, {"plain": "plain PyTorch (finetune, local)", "ray": "Ray Train, 1 worker"},
                     "examples_per_s", "examples/s")


if __name__ == "__main__":
    main()
