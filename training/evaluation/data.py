"""Where a run's eval files are, and a task loaded from them: items, prompts and token requests.

    data_dir = eval_data_dir(run_dir, config.eval, option=None)     # None: no eval data configured
    loaded = load_task(config.eval, data_dir, "hellaswag", shots=0, limit=100, block_size=1024)

Paths: `eval.data_dir` relative to the run directory (the dry run's `devweb/eval/`), or absolute; a
`--data-dir` option relative to the current directory; each task's file (`eval.<task>_file`) relative to
that folder, or absolute. The evaluation stage, the train stage's in-training scores and the
decontaminate stage all find their files here, so they read the same items.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import storage
from pipeline.config import EvalConfig
from training.evaluation.tasks import (
    TASKS, ContinuationScore, EvalDataError, Item, Request, Task, check_exists, draw_demonstrations, few_shot_context, read_items, task_requests,
)


def eval_data_dir(run_dir, config: EvalConfig, option: str | None = None):
    """The eval data folder: the --data-dir option, else eval.data_dir (a relative one under the run
    directory), else None; a local path or an object-store location (pipeline/storage.py)."""
    if option:
        return storage.location(option)
    if not config.data_dir:
        return None
    if "://" in config.data_dir or Path(config.data_dir).expanduser().is_absolute():
        return storage.location(config.data_dir)
    return storage.location(storage.location(run_dir) / config.data_dir)


def task_file(config: EvalConfig, data_dir: Path, task: str) -> Path:
    name = getattr(config, TASKS[task].file_key)
    if not name:
        raise EvalDataError(f"{task}: no file configured; set eval.{TASKS[task].file_key} to a UTF-8 text file")
    return data_dir / name


def shots_file(config: EvalConfig, data_dir: Path, task: str) -> Path | None:
    """The task's demonstrations file, or None when they are drawn from the evaluated file itself."""
    key = TASKS[task].shots_key
    name = getattr(config, key) if key else ""
    return data_dir / name if name else None


def check_files(config: EvalConfig, data_dir: Path, names: list[str], shots: int) -> None:
    """Every task's file, and its demonstrations file when shots are asked, is there (before a model loads)."""
    for name in names:
        check_exists(name, task_file(config, data_dir, name))
        demos = shots_file(config, data_dir, name) if shots and TASKS[name].kind != "perplexity" else None
        if demos is not None:
            check_exists(name, demos, "demonstrations file")


@dataclass
class LoadedTask:
    """A task ready to score: its items (the first `limit`), each item's prompt and token requests."""

    task: Task
    path: Path
    sha256: str
    items: list[Item]
    contexts: list[str]
    demonstrations: list[list[int]]
    requests: list[list[Request]]
    shots: int
    shots_path: Path | None
    shots_sha256: str | None

    def flat_requests(self) -> list[Request]:
        """Every item's requests, item after item (a document has one per window)."""
        return [r for item in self.requests for r in item]

    def item_scores(self, by_request: list[list[ContinuationScore]]) -> list[list[ContinuationScore]]:
        """Per item, its continuations' scores (a document: one per window), from flat_requests' order."""
        out, i = [], 0
        for requests in self.requests:
            out.append([s for scores in by_request[i : i + len(requests)] for s in scores])
            i += len(requests)
        return out


def load_task(config: EvalConfig, data_dir: Path, name: str, shots: int, limit: int, block_size: int,
              stride: int = 0) -> LoadedTask:
    """Read a task's file (and demonstrations), build every item's prompt and its token requests."""
    task = TASKS[name]
    path = task_file(config, data_dir, name)
    items = read_items(name, path)
    if limit:
        items = items[:limit]
    shots = 0 if task.kind == "perplexity" else shots
    pool_path = shots_file(config, data_dir, name) if shots else None
    pool = [] if not shots else read_items(name, pool_path, "demonstrations file") if pool_path else read_items(name, path)
    demos = [draw_demonstrations(task, item, pool, shots, config.seed, pool_path is None) if shots else []
             for item in items]
    contexts = [few_shot_context(task, item, pool, d, shots) for item, d in zip(items, demos)]
    stride = stride or block_size
    if stride > block_size:
        raise EvalDataError(f"eval.stride={stride} exceeds the model's context of {block_size} tokens")
    return LoadedTask(task, path, storage.sha256_file(path), items, contexts, demos,
                      task_requests(task, contexts, items, block_size, stride), shots, pool_path,
                      storage.sha256_file(pool_path) if pool_path else None)
