"""The train stage: GPT-2 pretraining on the run's token shards with Ray Train (DDP, one worker per GPU).

    webtext train --run-dir runs/x                                  # local Ray, or $RAY_ADDRESS's cluster
    webtext train --run-dir runs/x --set train.model=gpt2-tiny --set train.use_gpu=false
    ray job submit --working-dir . -- python -m jobs.train --run-dir /shared/runs/x

Reads `R/tokens/manifest.json` (training/data.py) and writes, under `R/train/`:

    checkpoints/step-NNNNNN/checkpoint.pt   torch.save of {"model", "optimizer", "step", "position",
                                            "model_config", "train_config", "world_size",
                                            "data_fingerprint"}; written through
                                            ray.train.report every train.checkpoint_every steps and at the end
    checkpoints/...                         Ray Train's own run state (RunConfig(storage_path=R/train,
                                            name="checkpoints")): a rerun finds it and resumes from the latest
    metrics.jsonl     one row per optimizer step: step, tokens, loss, lr, grad_norm, step_s, tokens_per_s,
                      mfu, and val_loss on evaluation steps (with train.eval_tasks' scores too, as
                      `<task>_<metric>`: training/evaluation/during_training.py); rows past the step a run resumed
                      from are dropped
    attempts.jsonl    one row per (re)start of the worker group: start_step, world_size, device, threads
    samples.json      train.num_samples continuations sampled from <|endoftext|> by the final model
    loss.png          train and val loss against step
    stats.json        final step, tokens, losses, checkpoint, attempts, seconds

The loop (`train_loop`, the function every Ray Train worker runs):
- AdamW (betas 0.9/0.95, eps 1e-8 as GPT-3), weight decay on matrices only (GPT.optimizer_groups); linear
  warmup then cosine decay to learning_rate x min_lr_ratio; global gradient-norm clipping;
- gradient accumulation: each step takes tokens_per_step / (micro_batch_size x seq_len x workers)
  micro-steps; DDP's all-reduce runs only on the last one (no_sync before);
- on CUDA: bf16 autocast, TF32 matmuls, fused AdamW, torch.compile (train.compile); on CPU plain fp32, gloo;
- loss is all-reduced across workers for the metrics; val loss over train.eval_batches batches per worker;
- every step's metrics go to metrics.jsonl (rank 0), but through `ray.train.report` only on evaluation and
  checkpoint steps: report is a barrier, and Ray Train 2.60's controller takes one report per worker per
  2 s poll (a queue of one), so reporting every step held a 2-worker dry run to one step per ~2.1 s of
  wall time although a step computed in 0.95 s (300 steps: 623 s wall, 327 s computing);
- MFU = PaLM's 6N + 12LHQT FLOPs per token x tokens/s / (peak FLOP/s x workers), see GPT.flops_per_token.

Fault tolerance: `FailureConfig(max_failures)`: when a worker dies, Ray Train tears the group down, starts
a new one, and every worker resumes from the newest readable checkpoint in R/train/checkpoints (weights,
optimizer moments, step and data position), so a crash costs at most checkpoint_every steps. That folder,
not `ray.train.get_checkpoint()`, is the record: Ray's controller registers a checkpoint only after taking
the report from every worker at its next 2 s poll, and a worker that died in between lost it (CI saw the
restart begin again at step 0). Data order depends only on the position
(training/data.py) and there is no dropout, so a resumed run repeats the uninterrupted run's loss
trajectory (tests/test_train.py checks it). `train.crash_at_step` injects such a crash for tests and drills.

Resume is keyed on the data: a checkpoint records the token manifest's fingerprint (every shard's sha256),
and when the manifest has changed since (a retokenized or rebuilt corpus) the earlier run is moved to
`R/train/superseded/<its data fingerprint>/` and training starts from scratch, unless
`train.resume_on_changed_data` is true; either way the log says which.

Same shards and config give the same weights and losses on CPU (two 300-step 2-worker dry runs ended at
the same loss to the last bit); the timing fields of metrics.jsonl are the only difference.

`train_local` runs the same loop in this process without Ray (one worker, same checkpoint layout); the tests
and benchmarks/train.py use it as the plain-PyTorch baseline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from pipeline import storage
from pipeline.config import EvalConfig, TrainConfig
from pipeline.runner import RunContext, StageError, write_stats
from pipeline.shards import ShardError, load_manifest
from training.evaluation import during_training
from training.data import TokenWindows, open_train, open_val, val_batches
from training.model import GPT, model_config
from training.session import (
    LocalSession, RayTrainSession, all_reduce_mean, append_row, check_gpus, checkpoint_dir_name, fit,
    latest_checkpoint, log, read_rows, resume_state, torch_trainer, truncate_rows,
)

ADAM_BETAS = (0.9, 0.95)
# bf16 dense tensor-core peak per GPU (no sparsity), from NVIDIA's data sheets; the first key found in the
# device name wins, so the PCIe H100 is matched before the SXM one.
GPU_PEAK_FLOPS = {"H100 PCIe": 756e12, "H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}


# ---------------------------------------------------------------- configuration checks (driver and workers)


def grad_accum_steps(cfg: TrainConfig, world_size: int) -> int:
    """Micro-steps per optimizer step; tokens_per_step splits evenly over workers and micro-batches (checked
    with the config, and again here for the world size a restart actually got)."""
    cfg.check(world_size)
    return cfg.tokens_per_step // (cfg.micro_batch_size * cfg.seq_len * world_size)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """LR for optimizer step `step` (0-based): linear warmup, then cosine to learning_rate x min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    min_lr = cfg.learning_rate * cfg.min_lr_ratio
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - min_lr)


def peak_flops(device: torch.device, configured: float) -> float:
    """Peak FLOP/s of one device: the configured value, a known GPU's bf16 peak, else a measured fp32 matmul."""
    if configured:
        return configured
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_FLOPS.items():
            if key in name:
                return value
    n = 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(20):  # the fastest of 20: other processes sharing the cores only ever slow a matmul down
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


# ---------------------------------------------------------------- checkpoints


def supersede_other_data(out: Path, fingerprint: str, cfg: TrainConfig) -> None:
    """Keep a resume on the data it was trained on: if the newest readable checkpoint under `out` was made
    from another token manifest, move `out`'s run (checkpoints, metrics) to `out/superseded/<its data>/`
    so training starts from scratch, unless train.resume_on_changed_data says to resume anyway."""
    state = resume_state(out / "checkpoints")
    if state is None or state.get("data_fingerprint") == fingerprint:
        return
    previous = state.get("data_fingerprint") or "unknown"
    if cfg.resume_on_changed_data:
        log(f"resuming from step {state['step']}, trained on other data (manifest {previous}, now {fingerprint}), "
            "because train.resume_on_changed_data is true")
        return
    keep = out / "superseded" / previous
    keep.mkdir(parents=True, exist_ok=True)
    for item in sorted(out.iterdir()):
        if item.name != "superseded":
            item.rename(keep / item.name)
    log(f"the token manifest changed since the checkpoints in {out} (data {previous}, now {fingerprint}): "
        f"training from scratch; the earlier run is kept in {keep}")


# ---------------------------------------------------------------- the loop


@torch.no_grad()
def evaluate(model, val: TokenWindows, session, cfg: TrainConfig, autocast) -> float | None:
    """Mean val loss per token over this evaluation's windows on all workers; None if val has no window."""
    if val.num_windows == 0:
        return None
    model.eval()
    totals = torch.zeros(2, device=session.device)  # summed loss x tokens, tokens
    for batch in val_batches(val, session.rank, session.world_size, cfg.micro_batch_size, cfg.eval_batches):
        batch = batch.to(session.device)
        with autocast():
            _, loss = model(batch[:, :-1], batch[:, 1:])
        totals[0] += loss.float() * batch[:, 1:].numel()
        totals[1] += batch[:, 1:].numel()
    if session.world_size > 1:
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    model.train()
    return (totals[0] / totals[1]).item()


def train_loop(loop_config: dict, session=None) -> None:
    """One worker's training: {"run_dir", "train"} in, checkpoints and metrics out (see the module docstring)."""
    cfg = TrainConfig(**loop_config["train"])
    out = Path(loop_config["run_dir"]) / "train"
    session = session or RayTrainSession(out / "checkpoints")
    manifest = Path(loop_config["run_dir"]) / "tokens" / "manifest.json"
    device, rank, world_size = session.device, session.rank, session.world_size
    accum = grad_accum_steps(cfg, world_size)
    B = cfg.micro_batch_size
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(cfg.seed)  # same initial weights on every worker (DDP also broadcasts rank 0's)
    model = GPT(model_config(cfg.model)).to(device)
    optimizer = torch.optim.AdamW(
        model.optimizer_groups(cfg.weight_decay), lr=cfg.learning_rate, betas=ADAM_BETAS, eps=1e-8, fused=on_cuda
    )
    start_step, position = 0, 0
    state = session.load()
    if state is not None:
        if state["model_config"] != model.config.to_dict():
            raise StageError(
                f"the latest checkpoint in {out / 'checkpoints'} is for model {state['model_config']}, but "
                f"train.model={cfg.model!r}; use a new run directory, or delete {out} to start over"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step, position = state["step"], state["position"]
        del state

    train_model = torch.compile(model) if cfg.compile and on_cuda else model
    if world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if on_cuda else None
        )
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_cuda else contextlib.nullcontext
    train = open_train(manifest, cfg.seq_len, cfg.seed)
    val = open_val(manifest, cfg.seq_len)
    evals = during_training.for_worker(loop_config, rank, world_size)
    flops_per_token = model.flops_per_token(cfg.seq_len)
    peak = peak_flops(device, cfg.peak_flops)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        truncate_rows(out / "metrics.jsonl", start_step)
        append_row(out / "attempts.jsonl", {
            "start_step": start_step, "world_size": world_size, "device": str(device), "threads": torch.get_num_threads()
        })
        log(f"{cfg.model}: {model.num_params():,} parameters, {world_size} worker(s) on {device.type}, "
            f"{accum} micro-steps of {B}x{cfg.seq_len} per step, from step {start_step}")

    for step in range(start_step, cfg.max_steps):
        if cfg.crash_at_step and step == cfg.crash_at_step and start_step == 0 and rank == world_size - 1:
            log(f"fault injection: rank {rank} exits at step {step} (train.crash_at_step)")
            os._exit(1)
        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for micro in range(accum):
            batch = train.batch(position + rank * B, B)
            position += world_size * B
            batch = batch.pin_memory().to(device, non_blocking=True) if on_cuda else batch
            last = micro == accum - 1
            sync = contextlib.nullcontext() if last or world_size == 1 else train_model.no_sync()
            with sync:
                with autocast():
                    _, loss = train_model(batch[:, :-1], batch[:, 1:])
                (loss / accum).backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = all_reduce_mean(loss_sum / accum, world_size).item()  # .item() waits for the GPU
        seconds = time.perf_counter() - started
        done = step + 1
        tokens_per_s = cfg.tokens_per_step / seconds
        metrics = {
            "step": done,
            "tokens": done * cfg.tokens_per_step,
            "loss": loss_value,
            "lr": lr,
            "grad_norm": grad_norm.item(),
            "step_s": seconds,
            "tokens_per_s": tokens_per_s,
            "mfu": flops_per_token * tokens_per_s / (peak * world_size),
        }
        evaluate_now = done % cfg.eval_every == 0 or done == cfg.max_steps
        checkpoint_now = done % cfg.checkpoint_every == 0 or done == cfg.max_steps
        if evaluate_now:
            val_loss = evaluate(train_model, val, session, cfg, autocast)
            if val_loss is not None:
                metrics["val_loss"] = val_loss
            if evals is not None:
                metrics.update(evals(model, device))
        checkpoint = None
        if rank == 0:
            append_row(out / "metrics.jsonl", metrics)
            log(f"step {done}/{cfg.max_steps} loss {loss_value:.4f}"
                + (f" val {metrics['val_loss']:.4f}" if "val_loss" in metrics else "")
                + "".join(f" {k} {metrics[k]:.4f}" for k in during_training.primary_keys([metrics]))
                + f" lr {lr:.2e} {tokens_per_s:,.0f} tok/s mfu {metrics['mfu']:.1%}")
            if checkpoint_now:
                checkpoint = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": done,
                    "position": position,
                    "model_config": model.config.to_dict(),
                    "train_config": dataclasses.asdict(cfg),
                    "data_fingerprint": train.manifest.fingerprint(),
                    "world_size": world_size,
                }
        if evaluate_now or checkpoint_now:
            session.report(metrics, checkpoint)

    if rank == 0 and cfg.num_samples:
        write_samples(model, out / "samples.json", cfg, device)


def write_samples(model: GPT, path: Path, cfg: TrainConfig, device: torch.device) -> None:
    """Sample continuations of <|endoftext|> (top-k 50, temperature 1), one seeded generator each."""
    from pipeline.tokenizer import EOT_TOKEN, get_encoding

    encoding = get_encoding()
    model.eval()
    samples = []
    for i in range(cfg.num_samples):
        generator = torch.Generator(device=device).manual_seed(cfg.seed + i)
        start = torch.full((1, 1), EOT_TOKEN, dtype=torch.long, device=device)
        tokens = model.generate(start, cfg.sample_length, generator=generator)[0, 1:].tolist()
        samples.append({"seed": cfg.seed + i, "tokens": tokens, "text": encoding.decode(tokens)})
    storage.write_json(path, samples)
    for sample in samples:
        log(f"sample (seed {sample['seed']}): {sample['text']!r}")


def train_local(run_dir: Path, cfg: TrainConfig, eval_cfg: EvalConfig | None = None) -> list[dict]:
    """Run the loop in this process (no Ray); return the run's metrics rows."""
    cfg.check(1)
    session = LocalSession(Path(run_dir) / "train" / "checkpoints", cfg.keep_checkpoints)
    supersede_other_data(Path(run_dir) / "train", load_manifest(Path(run_dir) / "tokens" / "manifest.json").fingerprint(), cfg)
    train_loop(loop_config(run_dir, cfg, eval_cfg), session)
    return read_rows(Path(run_dir) / "train" / "metrics.jsonl")


# ---------------------------------------------------------------- the stage


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def plot_loss(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train loss", linewidth=1)
    val = [r for r in rows if "val_loss" in r]
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    during_training.plot_scores(ax, rows)
    fig.tight_layout()
    with storage.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def report_section(run_dir: Path, plots: Path):
    """The run report's training part: the loss curves and the final losses."""
    from pipeline.report import Section

    rows = read_rows(Path(run_dir) / "train" / "metrics.jsonl")
    if not rows:
        return None
    plot_loss(rows, plots / "loss.png", "Training loss")
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    final = {"steps": rows[-1]["step"], "final_loss": rows[-1]["loss"], "final_val_loss": val[-1] if val else None}
    val_text = f"{final['final_val_loss']:.3f}" if val else "n/a"
    return Section("train", lines=[f"train: {final['steps']} steps, final train loss {final['final_loss']:.3f}, "
                                   f"val loss {val_text}"], plots=[("Training loss", "report/loss.png")], data=final)


def loop_config(run_dir: Path, cfg: TrainConfig, eval_cfg: EvalConfig | None) -> dict:
    """What every worker's train_loop gets: the run directory and the [train] and [eval] sections."""
    return {"run_dir": str(run_dir), "train": dataclasses.asdict(cfg), "eval": dataclasses.asdict(eval_cfg or EvalConfig())}


def make_trainer(run_dir: Path, cfg: TrainConfig, resources_per_worker: dict | None = None,
                 eval_cfg: EvalConfig | None = None):
    """The TorchTrainer for this run: storage in R/train, so a rerun resumes from Ray Train's latest checkpoint."""
    return torch_trainer(
        train_loop, loop_config(run_dir, cfg, eval_cfg), Path(run_dir) / "train", num_workers=cfg.num_workers,
        use_gpu=cfg.use_gpu, max_failures=cfg.max_failures, keep_checkpoints=cfg.keep_checkpoints,
        resources_per_worker=resources_per_worker,
    )


def run(ctx: RunContext) -> dict:
    cfg = ctx.config.train
    manifest = ctx.path("tokens", "manifest.json")
    try:
        train = open_train(manifest, cfg.seq_len, cfg.seed)  # validates every shard before any worker starts
    except ShardError as err:
        raise StageError(f"train: {err}") from None
    during_training.load_tasks(ctx.run_dir, cfg, ctx.config.eval)  # a missing eval file fails before any worker starts
    supersede_other_data(ctx.path("train"), train.manifest.fingerprint(), cfg)
    finished = read_json(ctx.path("train", "stats.json"))
    newest = latest_checkpoint(ctx.path("train", "checkpoints"))
    if finished and newest and newest.parent.name == checkpoint_dir_name(cfg.max_steps):
        log(f"already trained to step {cfg.max_steps} on this data ({ctx.rel(newest)}); skipped")
        return finished
    check_gpus(ctx.config, "train", cfg.num_workers, cfg.use_gpu)
    started = time.monotonic()
    result = fit(make_trainer(ctx.run_dir, cfg, eval_cfg=ctx.config.eval), "train", ctx.path("train", "checkpoints"),
                 cfg.max_failures, "webtext train")
    rows = read_rows(ctx.path("train", "metrics.jsonl"))
    plot_loss(rows, ctx.path("train", "loss.png"), f"{cfg.model} on {ctx.run_dir.name}")
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    final = rows[-1] if rows else {}
    stats = {
        "model": cfg.model,
        "workers": cfg.num_workers,
        "steps": final.get("step", 0),
        "tokens": final.get("tokens", 0),
        "final_loss": final.get("loss"),
        "final_val_loss": val[-1] if val else None,
        "checkpoint": ctx.rel(Path(result.checkpoint.path)) if result.checkpoint else None,
        "attempts": len(read_rows(ctx.path("train", "attempts.jsonl"))),
        "seconds": round(time.monotonic() - started, 3),
    }
    return write_stats(ctx, "train", stats)
