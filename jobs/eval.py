"""Cluster entry point for the eval stage: a run's model (or an HF-format GPT-2) on the eval tasks.

    ray job submit --working-dir . -- python -m jobs.eval --run-dir /shared/runs/x \
        --tasks lambada,hellaswag,wikitext --data-dir /shared/eval [--shots K] [--limit N] [--hf DIR]

Inside a Ray job $RAY_ADDRESS is set, so the scoring workers run on the cluster (one per GPU); the run
directory and the data folder must be on storage the driver reads (the workers get the model and the
requests through Ray). The options are `webtext eval`'s, and so is everything else (training/evaluation/stage.py).
"""

from __future__ import annotations

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
