"""Cluster entry point for fine-tuning: GPT-1's fine-tuning of a pretrained GPT-2 on one task, on Ray Train.

    ray job submit --working-dir . -- python -m jobs.finetune --task sst2 --data /shared/glue/SST-2 \
        --from /shared/runs/x --out /shared/runs/x-sst2 [--config jobs/configs/cluster.toml] \
        [--set finetune.num_workers=8 ...]

Inside a Ray job $RAY_ADDRESS is set, so the run joins the cluster. --out and --from must be on storage every
node mounts at the same path (the workers read the encoded data and the pretrained weights there and write
checkpoints there); --data is read by the driver only. The options are `webtext finetune`'s, and so is
everything else (training/finetune.py).
"""

from __future__ import annotations

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
