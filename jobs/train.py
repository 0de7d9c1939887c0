"""Cluster entry point for the train stage: GPT-2 pretraining from the run's token manifest.

    ray job submit --working-dir . -- python -m jobs.train --run-dir /shared/runs/x \
        [--config jobs/configs/cluster.toml] [--set train.num_workers=8 ...]

Inside a Ray job $RAY_ADDRESS is set, so the run joins the cluster; the run directory must be on storage
every node mounts at the same path (checkpoints and metrics are written there by the workers). The options
are `webtext train`'s, and so is everything else (training/train.py).
"""

from __future__ import annotations

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
