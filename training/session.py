"""Where a training loop runs, and what it leaves on disk: shared by pretraining and fine-tuning.

    trainer = torch_trainer(loop, loop_config, out, num_workers=2, use_gpu=False, max_failures=3, keep_checkpoints=2)
    result = fit(trainer, "train", out / "checkpoints", max_failures=3, rerun="webtext train --run-dir R")

A loop function (training/train.py's `train_loop`, training/finetune.py's `finetune_loop`) takes its config
dict and a session, and sees only the session's contract:

    session.rank, session.world_size, session.device
    session.load()                  -> the newest readable checkpoint state under its folder, or None
    session.report(metrics, state)  every rank at the same steps (a barrier); rank 0 passes the state to save

`RayTrainSession` is that contract on a Ray Train worker: report goes through `ray.train.report` with the
state as `OUT/checkpoints/step-NNNNNN/checkpoint.pt`. `LocalSession` is the same in this process (one worker,
no Ray, the same files): the tests and the benchmarks' plain-PyTorch baselines use it.

Checkpoints are `torch.save` dicts under `step-NNNNNN/checkpoint.pt`; what a dict holds is the loop's
business (each loop's module docstring lists it). The folder, not `ray.train.get_checkpoint()`, is the
record of what to resume from: Ray's controller registers a checkpoint only after taking the report from
every worker at its next 2 s poll, and a worker that died in between lost it. A checkpoint cut short by a
crash is skipped with a message, and the one before it is used.

`torch_trainer` builds the TorchTrainer both loops run under: storage in `OUT` with run name
`checkpoints`, so Ray Train's run state sits beside the checkpoint folders, `FailureConfig(max_failures)`
restarts a failed worker group, which then resumes from `session.load()`.

The loops' logs are jsonl files with one row per optimizer step (`append_row`); a resumed attempt first
drops the rows past the step it resumed from (`truncate_rows`), so a log is always one clean trajectory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from pipeline import storage
from pipeline.runner import StageError

CHECKPOINT_FILE = "checkpoint.pt"


def log(message: str, tag: str = "train") -> None:
    """A progress line on stderr. Not print(): Ray Train patches print into its logger, which shows it twice."""
    sys.stderr.write(f"[{tag}] {message}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- checkpoints


def checkpoint_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def checkpoint_files(checkpoints: Path) -> list[Path]:
    """Every `step-NNNNNN/checkpoint.pt` under a checkpoints folder, oldest first."""
    return sorted(checkpoints.glob(f"step-*/{CHECKPOINT_FILE}")) if checkpoints.is_dir() else []


def latest_checkpoint(checkpoints: Path) -> Path | None:
    found = checkpoint_files(checkpoints)
    return found[-1] if found else None


def resume_state(checkpoints: Path) -> dict | None:
    """The newest checkpoint under `checkpoints` that loads, or None; unreadable ones are named and skipped.

    A worker killed while writing one leaves it cut short; resuming from the one before loses only
    checkpoint_every steps, where stopping would lose the whole restart.
    """
    for path in reversed(checkpoint_files(checkpoints)):
        try:
            return load_checkpoint(path)
        except StageError as err:
            log(f"skipping {err}", "resume")
    return None


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise StageError(
            f"{path}: cannot read checkpoint ({type(err).__name__}: {err}); it may be cut short by a crash "
            f"during upload: delete its folder to fall back to the one before"
        ) from None


# ---------------------------------------------------------------- where the loop runs: Ray Train or this process


class RayTrainSession:
    """The loop's view of a Ray Train worker: rank, device, latest checkpoint, and report()."""

    def __init__(self, checkpoints: Path):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.checkpoints = checkpoints

    def load(self) -> dict | None:
        # Not ray.train.get_checkpoint(): the controller registers a report only once it has taken it from
        # every worker's queue at its next poll (2 s), so a worker that dies just after reporting a
        # checkpoint takes the report with it, and Ray's record lags what is safely on disk.
        return resume_state(self.checkpoints)

    def report(self, metrics: dict, state: dict | None) -> None:
        """Every rank calls this at the same steps (it is a barrier); rank 0 passes the checkpoint state."""
        import ray.train

        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, Path(folder) / CHECKPOINT_FILE)
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(folder),
                checkpoint_dir_name=checkpoint_dir_name(state["step"]),
            )


class LocalSession:
    """The same contract in this process: one worker, checkpoints written straight into `checkpoints`."""

    def __init__(self, checkpoints: Path, keep: int):
        self.rank, self.world_size = 0, 1
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.checkpoints, self.keep = checkpoints, keep

    def load(self) -> dict | None:
        return resume_state(self.checkpoints)

    def report(self, metrics: dict, state: dict | None) -> None:
        if state is None:
            return
        with storage.atomic_path(self.checkpoints / checkpoint_dir_name(state["step"]) / CHECKPOINT_FILE) as tmp:
            torch.save(state, tmp)
        for old in sorted(self.checkpoints.glob("step-*"))[: -self.keep]:
            shutil.rmtree(old)


def all_reduce_mean(value: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value = value / world_size
    return value


# ---------------------------------------------------------------- per-step logs


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def truncate_rows(path: Path, last_step: int) -> None:
    """Keep the rows of a jsonl log up to `last_step` (a resumed run rewrites what came after)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if json.loads(line)["step"] <= last_step:
                keep.append(line + "\n")
    storage.write_bytes(path, "".join(keep).encode())


def append_row(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


# ---------------------------------------------------------------- the Ray Train trainer


def check_gpus(config, section: str, num_workers: int, use_gpu: bool) -> None:
    """Refuse use_gpu on a local instance with fewer GPUs than workers (a cluster may still add GPU nodes)."""
    import ray

    from pipeline.runner import ensure_ray

    ensure_ray(config)
    gpus = ray.cluster_resources().get("GPU", 0)
    joined = config.ray.address or os.environ.get("RAY_ADDRESS")
    if use_gpu and gpus < num_workers and not joined:
        raise StageError(
            f"{section}: {section}.use_gpu is true with {num_workers} worker(s) but this machine has {gpus:g} "
            f"GPU(s); set --set {section}.use_gpu=false to run on CPU, or lower {section}.num_workers"
        )


def torch_trainer(
    loop, loop_config: dict, out: Path, *, num_workers: int, use_gpu: bool, max_failures: int,
    keep_checkpoints: int, resources_per_worker: dict | None = None,
):
    """A TorchTrainer running `loop(loop_config)` on each worker, its Ray Train state in `out/checkpoints`."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources_per_worker
        ),
        run_config=RunConfig(
            storage_path=str(out),
            name="checkpoints",
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
        ),
    )


def fit(trainer, section: str, checkpoints: Path, max_failures: int, rerun: str):
    """trainer.fit(); a run that failed after its restarts is a StageError saying how to resume."""
    from ray.train import TrainingFailedError

    try:
        return trainer.fit()
    except TrainingFailedError as err:
        raise StageError(
            f"{section}: failed after up to {max_failures} restarts: {err}\nthe checkpoints in {checkpoints} "
            f"are kept; rerunning `{rerun}` resumes from the latest"
        ) from None
