"""The eval stage: a trained run's model, or any HF-format GPT-2, scored zero- or few-shot on LAMBADA,
HellaSwag and perplexity tasks (training/evaluation/tasks.py has the data formats, prompts and metrics).

    webtext eval --run-dir R --tasks lambada,hellaswag,wikitext [--checkpoint PATH | --hf DIR]
                 [--shots K] [--limit N] [--data-dir D] [--clean-only]
    ray job submit --working-dir . -- python -m jobs.eval --run-dir /shared/runs/x --tasks hellaswag \\
                 --data-dir /shared/eval

The model is the run's latest checkpoint (R/train/checkpoints), a given checkpoint (its file or its
`step-N` folder), or an HF folder (config.json + model.safetensors, training/export.py's `load_hf`).
`webtext run` runs this stage after training on `eval.tasks`; with no eval data configured
(`eval.data_dir` empty) it is skipped and says so, while `webtext eval` without data is an error.

Outputs in R/eval/:

    results.json    {"results": [row, ...], "models": {fingerprint: {source, step, params, config}}}; a row is
                    one metric of one task: task, metric, value, subset ("all" or "clean"), items, shots,
                    seed, limit, model_fingerprint, data (path), data_sha256, shots_data_sha256, items_log,
                    key. A new evaluation replaces the rows of the same task, shots and model.
    items/<task>-<K>shot-<model>.jsonl
                    per item (model: the fingerprint's first 8 digits), lm-evaluation-harness style,
                    everything a metric needs: index, gold, demonstrations (indices into the shots file),
                    prompt (the item's own, without demonstrations), continuations, loglikelihoods,
                    greedy, tokens, choice_chars; for a document: loglikelihoods and tokens per window,
                    words, bytes
    stats.json      tasks, model, workers, seconds (the completion record)

`--clean-only` adds, beside each full score, the score on the clean subset: the items that
R/decontam/overlap.json (the decontaminate stage) does not list as overlapping the training corpus
(GPT-3's appendix C); it refuses when overlap.json is missing or was computed from another file.

Scoring runs on Ray actors, one per GPU (bf16 autocast there), or CPU workers of `eval.cpus_per_worker`
threads (by default as many as the cluster's CPUs hold; `eval.num_workers` sets it). The driver reads the data, builds the requests and cuts the batches
(training/evaluation/scoring.py); workers only compute them, so scores depend on neither the number of workers nor
the order batches finish in. An evaluation whose key (the model's weights fingerprint plus every token id
scored) matches a logged one reuses its items log instead of scoring again.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import ray
import torch

from training.evaluation.data import LoadedTask, check_files, eval_data_dir, load_task
from training.evaluation.scoring import make_batches, pack_rows, score_rows, scores_by_request
from training.evaluation.tasks import TASKS, ContinuationScore, EvalDataError
from pipeline import storage
from pipeline.config import ConfigError
from pipeline.runner import RunContext, StageError, ensure_ray, write_stats
from training.model import GPT, GPTConfig

OVERLAP_FILE = "decontam/overlap.json"


def log(message: str) -> None:
    print(f"[eval] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the model


def weights_fingerprint(model: GPT) -> str:
    """sha256 (16 hex digits) of every weight's name, shape and float32 bytes: equal weights, equal print."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def load_model(ctx: RunContext, checkpoint: str | None, hf: str | None) -> tuple[GPT, dict]:
    """The model to evaluate and what it is: --hf folder, --checkpoint, else the run's latest checkpoint."""
    from training.export import load_hf, model_from_checkpoint
    from training.session import CHECKPOINT_FILE, latest_checkpoint

    if checkpoint and hf:
        raise ConfigError("webtext eval: give --checkpoint or --hf, not both")
    step = None
    if hf:
        source = storage.location(hf)
        model = load_hf(source)
    else:
        source = Path(checkpoint).expanduser().resolve() if checkpoint else latest_checkpoint(ctx.path("train", "checkpoints"))
        if source is not None and source.is_dir():
            source = source / CHECKPOINT_FILE
        if source is None or not source.is_file():
            raise StageError(f"eval: no checkpoint {'at ' + str(source) if checkpoint else 'under ' + str(ctx.path('train', 'checkpoints'))}; "
                             f"run `webtext train --run-dir {ctx.run_dir}` first, or pass --checkpoint PATH or --hf DIR")
        model, step = model_from_checkpoint(source)
    info = {"source": f"{'hf' if hf else 'checkpoint'} {source}", "step": step, "params": model.num_params(),
            "config": model.config.to_dict(), "fingerprint": weights_fingerprint(model)}
    return model, info


# ---------------------------------------------------------------- workers


@ray.remote
class ScoringWorker:
    """One eval worker: the model on its device, scoring the batches it is sent."""

    def __init__(self, state: dict, config: dict, threads: int):
        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = GPT(GPTConfig(**config))
        self.model.load_state_dict(state)
        self.model.to(self.device).eval()

    def score(self, job: int, rows: list) -> tuple[int, list]:
        return job, score_rows(self.model, rows, self.device)


def score_tasks(ctx: RunContext, model: GPT, rows_by_task: dict[str, list]) -> tuple[dict[str, list], dict]:
    """Every row scored on the Ray workers; per task, the rows' scores in row order."""
    ensure_ray(ctx.config)
    cfg = ctx.config.eval
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    jobs = [(task, batch) for task, rows in rows_by_task.items()
            for batch in make_batches([len(r.tokens) for r in rows], cfg.batch_tokens)]
    workers = cfg.num_workers or min(gpus or max(1, int(resources.get("CPU", 1)) // cfg.cpus_per_worker), len(jobs))
    options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": cfg.cpus_per_worker}
    state = ray.put({name: tensor.cpu() for name, tensor in model.state_dict().items()})
    actors = [ScoringWorker.options(**options).remote(state, model.config.to_dict(), cfg.cpus_per_worker)
              for _ in range(workers)]
    out = {task: [None] * len(rows) for task, rows in rows_by_task.items()}
    log(f"{sum(len(r) for r in rows_by_task.values())} rows in {len(jobs)} batches on {workers} "
        f"{'GPU (bf16)' if gpus else 'CPU'} worker(s)")
    pending, started, done, last = {}, time.monotonic(), 0, time.monotonic()
    next_job = 0
    try:
        while next_job < len(jobs) or pending:
            while next_job < len(jobs) and len(pending) < 2 * workers:
                task, batch = jobs[next_job]
                actor = actors[next_job % workers]
                pending[actor.score.remote(next_job, [rows_by_task[task][i] for i in batch])] = next_job
                next_job += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            pending.pop(ready[0])
            job, scores = ray.get(ready[0])
            task, batch = jobs[job]
            for i, s in zip(batch, scores):
                out[task][i] = s
            done += 1
            if time.monotonic() - last > 10 or done == len(jobs):
                last = time.monotonic()
                log(f"{done}/{len(jobs)} batches, {time.monotonic() - started:.1f}s")
    finally:
        for actor in actors:
            ray.kill(actor)
    return out, {"workers": workers, "device": "cuda-bf16" if gpus else "cpu", "batches": len(jobs)}


# ---------------------------------------------------------------- per-item logs


def request_key(fingerprint: str, loaded: LoadedTask) -> str:
    """What makes two evaluations the same: the weights and every token id scored."""
    ids = [[(r.context, r.continuations) for r in item] for item in loaded.requests]
    return hashlib.sha256(json.dumps([fingerprint, ids]).encode()).hexdigest()[:16]


def log_rows(loaded: LoadedTask, scores: list[list[ContinuationScore]]) -> list[dict]:
    rows = []
    for item, demos, item_score in zip(loaded.items, loaded.demonstrations, scores):
        row = {"index": item.index, "loglikelihoods": [s.loglikelihood for s in item_score],
               "greedy": [s.greedy for s in item_score], "tokens": [s.tokens for s in item_score]}
        if loaded.task.kind == "perplexity":
            row.update(words=item.words, bytes=item.bytes)
        else:
            row.update(gold=item.gold, demonstrations=demos, prompt=item.context, continuations=list(item.continuations),
                       choice_chars=list(item.choice_chars))
        rows.append(row)
    return rows


def read_log(path: Path) -> list[list[ContinuationScore]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [[ContinuationScore(ll, g, t) for ll, g, t in zip(r["loglikelihoods"], r["greedy"], r["tokens"])]
            for r in rows]


# ---------------------------------------------------------------- clean subsets


def clean_indices(ctx: RunContext, loaded: LoadedTask) -> set[int]:
    """Indices of the task's items that overlap.json does not list as overlapping the corpus."""
    path = ctx.path(OVERLAP_FILE)
    if not path.exists():
        raise StageError(f"eval --clean-only: {path} not found; run `webtext decontaminate --run-dir {ctx.run_dir}` "
                         f"with the eval files configured ([eval] data_dir) first")
    overlap = json.loads(path.read_text())["tasks"].get(loaded.task.name)
    if overlap is None:
        raise StageError(f"eval --clean-only: {path} has no {loaded.task.name}; add it to decontaminate.tasks "
                         f"and rerun `webtext decontaminate`")
    if overlap["data_sha256"] != loaded.sha256:
        raise StageError(f"eval --clean-only: {path} was computed from another {loaded.task.name} file "
                         f"(sha256 {overlap['data_sha256'][:12]}, now {loaded.sha256[:12]} at {loaded.path}); "
                         f"rerun `webtext decontaminate`")
    dirty = set(overlap["overlapping"])
    return {item.index for item in loaded.items if item.index not in dirty}


# ---------------------------------------------------------------- the stage


def parse_tasks(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise ConfigError(f"--tasks {text!r}: unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    return names


def results_rows(loaded: LoadedTask, scores, model: dict, key: str, log_path: str, subset: str,
                 keep: set[int] | None, seed: int, limit: int) -> list[dict]:
    """One row per metric of the task on its items (keep=None) or on the subset `keep` of them."""
    chosen = [(i, s) for i, s in zip(loaded.items, scores) if keep is None or i.index in keep]
    metrics = loaded.task.metrics([i for i, _ in chosen], [s for _, s in chosen]) if chosen else {}
    names = metrics or loaded.task.metrics(loaded.items, scores)
    return [{"task": loaded.task.name, "metric": name, "value": metrics.get(name), "subset": subset,
             "items": len(chosen), "shots": loaded.shots, "seed": seed, "limit": limit,
             "model_fingerprint": model["fingerprint"], "data": str(loaded.path), "data_sha256": loaded.sha256,
             "shots_data_sha256": loaded.shots_sha256, "items_log": log_path, "key": key} for name in names]


def table(rows: list[dict]) -> list[str]:
    """One line per task, shots, subset and model: every metric of it, then items and shots."""
    lines, groups = [], {}
    for row in rows:
        groups.setdefault((row["model_fingerprint"], row["task"], row["shots"], row["subset"]), []).append(row)
    lines.append(f"{'eval':<10} {'subset':<6} {'shots':>5} {'items':>6}  metrics  (model)")
    for (fingerprint, task, shots, subset), group in sorted(groups.items(), key=lambda kv: kv[0][1:] + kv[0][:1]):
        metrics = "  ".join(f"{r['metric']} {_fmt(r['value'])}" for r in group)
        lines.append(f"{task:<10} {subset:<6} {shots:>5} {group[0]['items']:>6}  {metrics}  ({fingerprint[:8]})")
    return lines


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"


def run(ctx: RunContext, tasks: str | None = None, checkpoint: str | None = None, hf: str | None = None,
        shots: int | None = None, limit: int | None = None, data_dir: str | None = None,
        clean_only: bool = False) -> dict:
    started = time.monotonic()
    cfg = ctx.config.eval
    names = parse_tasks(tasks) if tasks is not None else list(cfg.tasks)
    shots = cfg.shots if shots is None else shots
    limit = cfg.limit if limit is None else limit
    folder = eval_data_dir(ctx.run_dir, cfg, data_dir)
    if folder is None:
        if tasks is not None:
            raise EvalDataError("webtext eval: no eval data; pass --data-dir DIR (the folder holding "
                                "lambada_test.jsonl, hellaswag_val.jsonl, wiki.test.tokens) or set eval.data_dir")
        log("no eval data configured (eval.data_dir is empty): skipped")
        return write_stats(ctx, "eval", {"skipped": "eval.data_dir is empty"})
    if shots < 0 or limit < 0:
        raise ConfigError("webtext eval: --shots and --limit must be >= 0")
    check_files(cfg, folder, names, shots)
    model, info = load_model(ctx, checkpoint, hf)
    loaded = {name: load_task(cfg, folder, name, shots, limit, model.config.block_size, cfg.stride) for name in names}
    keep = {name: clean_indices(ctx, task) for name, task in loaded.items()} if clean_only else {}
    results_path = ctx.path("eval", "results.json")
    previous = json.loads(results_path.read_text()) if results_path.exists() else {"results": [], "models": {}}
    scores, todo, keys, logs = {}, {}, {}, {}
    for name, task in loaded.items():
        keys[name] = request_key(info["fingerprint"], task)
        logs[name] = f"eval/items/{name}-{task.shots}shot-{info['fingerprint'][:8]}.jsonl"
        known = [r for r in previous["results"] if r["key"] == keys[name] and r["task"] == name]
        if known and ctx.path(logs[name]).exists() and known[0]["items_log"] == logs[name]:
            log(f"{name}: already scored with this model and these requests; reusing {logs[name]}")
            scores[name] = read_log(ctx.path(logs[name]))
        else:
            todo[name] = task
    run_info = {"workers": 0, "device": None, "batches": 0}
    if todo:
        requests = {name: task.flat_requests() for name, task in todo.items()}
        rows = {name: pack_rows(reqs, model.config.block_size) for name, reqs in requests.items()}
        row_scores, run_info = score_tasks(ctx, model, rows)
        for name, task in todo.items():
            scores[name] = task.item_scores(scores_by_request(requests[name], rows[name], row_scores[name]))
            lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in log_rows(task, scores[name]))
            storage.write_bytes(ctx.path(logs[name]), lines.encode())
    new_rows = []
    for name, task in loaded.items():
        new_rows += results_rows(task, scores[name], info, keys[name], logs[name], "all", None, cfg.seed, limit)
        if clean_only:
            new_rows += results_rows(task, scores[name], info, keys[name], logs[name], "clean", keep[name], cfg.seed,
                                     limit)
    replaced = {(r["task"], r["shots"], r["model_fingerprint"]) for r in new_rows}
    rows = [r for r in previous["results"] if (r["task"], r["shots"], r["model_fingerprint"]) not in replaced]
    rows = sorted(rows + new_rows, key=lambda r: (r["task"], r["shots"], r["subset"], r["model_fingerprint"], r["metric"]))
    models = {**previous["models"], info["fingerprint"]: {k: v for k, v in info.items() if k != "fingerprint"}}
    storage.write_json(results_path, {"results": rows, "models": models})
    for line in table(new_rows):
        log(line)
    stats = {"tasks": names, "shots": shots, "limit": limit, "model": info, **run_info,
             "seconds": round(time.monotonic() - started, 3),
             "results": {f"{r['task']}/{r['subset']}/{r['metric']}": r["value"] for r in new_rows}}
    return write_stats(ctx, "eval", stats)


# ---------------------------------------------------------------- the report


def report_section(run_dir: Path, plots: Path):
    """The run report's eval part: the results table and, per task, the distribution of item scores."""
    from pipeline.report import Section, hist, read_json

    results = read_json(run_dir / "eval" / "results.json")
    if results is None:
        return None
    section = Section("eval", lines=table(results["results"]), data=results)
    for log_path in sorted({r["items_log"] for r in results["results"]}):
        full = run_dir / log_path
        if not full.exists():
            continue
        name = Path(log_path).stem
        rows = [json.loads(line) for line in full.read_text().splitlines()]
        if "gold" in rows[0] and len(rows[0]["loglikelihoods"]) > 1:
            values = [r["loglikelihoods"][r["gold"]] - max(x for k, x in enumerate(r["loglikelihoods"]) if k != r["gold"])
                      for r in rows]
            what = "log-likelihood of the right ending minus the best wrong one (> 0: right)"
        elif "gold" in rows[0]:
            values = [r["loglikelihoods"][0] / r["tokens"][0] for r in rows]
            what = "log-probability per target token"
        else:
            values = [sum(r["loglikelihoods"]) / sum(r["tokens"]) for r in rows]
            what = "log-probability per token, per document"
        hist(plots / f"eval-{name}.png", values, f"{name}: {what}", "nats")
        section.plots.append((f"Eval scores: {name}", f"report/eval-{name}.png"))
    return section
