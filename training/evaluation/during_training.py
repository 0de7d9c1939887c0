"""Eval tasks scored while training, as llm.c scores HellaSwag: `train.eval_tasks` on the first
`train.eval_items` items of each, every `eval_every` steps beside the validation loss.

    [train]
    eval_tasks = ["hellaswag"]
    eval_items = 500
    [eval]
    data_dir = "/shared/eval"

The files are found as `webtext eval` finds them ([eval] data_dir and each task's file, training/evaluation/data.py)
and the scores are the same zero-shot scores `webtext eval` computes (training/evaluation/tasks.py): item i is
scored by worker i mod W, the per-item scores are gathered, and every worker computes the metrics over
all items, so they do not depend on the number of workers. Each task's metrics go into metrics.jsonl as
`<task>_<metric>` (for example `hellaswag_acc_norm`) on evaluation steps, and its primary metric onto a
second axis of the loss plot. The files are read and checked before any worker starts (`check`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from training.evaluation.data import LoadedTask, eval_data_dir, load_task
from training.evaluation.scoring import score_requests
from training.evaluation.tasks import TASKS, EvalDataError
from pipeline.config import EvalConfig, MODEL_DIMS, TrainConfig


def load_tasks(run_dir: Path, cfg: TrainConfig, eval_cfg: EvalConfig) -> dict[str, LoadedTask]:
    """train.eval_tasks loaded zero-shot (EvalDataError naming what is missing); {} when there are none."""
    if not cfg.eval_tasks:
        return {}
    data_dir = eval_data_dir(run_dir, eval_cfg)
    if data_dir is None:
        raise EvalDataError(f"train.eval_tasks = {cfg.eval_tasks} but eval.data_dir is empty; set it to the folder "
                            f"of the eval files")
    block_size = MODEL_DIMS[cfg.model]["block_size"]
    return {name: load_task(eval_cfg, data_dir, name, 0, cfg.eval_items, block_size, eval_cfg.stride)
            for name in cfg.eval_tasks}


class TrainingEvals:
    """Called by every worker on evaluation steps; returns {"<task>_<metric>": value} on every worker."""

    def __init__(self, tasks: dict[str, LoadedTask], batch_tokens: int, rank: int, world_size: int):
        self.tasks, self.batch_tokens = tasks, batch_tokens
        self.rank, self.world_size = rank, world_size

    @torch.no_grad()
    def __call__(self, model, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        out = {}
        for name, loaded in self.tasks.items():
            mine = list(range(self.rank, len(loaded.items), self.world_size))
            requests = [r for i in mine for r in loaded.requests[i]]
            flat = score_requests(model, requests, self.batch_tokens, device)
            scored, k = {}, 0
            for i in mine:
                scored[i] = [s for scores in flat[k : k + len(loaded.requests[i])] for s in scores]
                k += len(loaded.requests[i])
            if self.world_size > 1:
                parts = [None] * self.world_size
                dist.all_gather_object(parts, scored)
                scored = {i: s for part in parts for i, s in part.items()}
            metrics = loaded.task.metrics(loaded.items, [scored[i] for i in range(len(loaded.items))])
            out.update({f"{name}_{metric}": value for metric, value in metrics.items()})
        model.train(was_training)
        return out


def for_worker(loop_config: dict, rank: int, world_size: int) -> TrainingEvals | None:
    """The in-training evaluations of one worker of train_loop, or None when train.eval_tasks is empty."""
    cfg, eval_cfg = TrainConfig(**loop_config["train"]), EvalConfig(**loop_config.get("eval", {}))
    tasks = load_tasks(Path(loop_config["run_dir"]), cfg, eval_cfg)
    return TrainingEvals(tasks, eval_cfg.batch_tokens, rank, world_size) if tasks else None


def primary_keys(rows: list[dict]) -> list[str]:
    """The metrics.jsonl keys of each evaluated task's primary metric, in task order."""
    present = {k for row in rows for k in row}
    return [f"{name}_{task.primary}" for name, task in TASKS.items() if f"{name}_{task.primary}" in present]


def plot_scores(ax, rows: list[dict]) -> None:
    """The tasks' primary metrics against step, on a second y axis of the loss plot `ax`."""
    keys = primary_keys(rows)
    if not keys:
        return
    other = ax.twinx()
    for key, style, color in zip(keys, ("s--", "^--", "v--", "d--"), ("#c44e52", "#8172b2", "#937860", "#da8bc3")):
        points = [r for r in rows if key in r]
        other.plot([r["step"] for r in points], [r[key] for r in points], style, label=key, color=color)
    other.set_ylabel("eval score")
    other.legend(loc="center right")
