"""`webtext finetune`: GPT-1's supervised fine-tuning of a pretrained GPT-2 on one task, with Ray Train.

    webtext finetune --task sst2 --data glue/SST-2 --from runs/x --out runs/x-sst2 [--config F] [--set finetune.k=v]
    ray job submit --working-dir . -- python -m jobs.finetune --task sst2 --data /shared/glue/SST-2 \\
        --from /shared/runs/x --out /shared/runs/x-sst2 --set finetune.num_workers=8

`--from` is a run directory (the latest checkpoint in R/train/checkpoints), a pretraining checkpoint
(`checkpoint.pt` or its step folder), or a transformers GPT-2 folder (config.json + model.safetensors, as
`webtext export-hf` writes it or OpenAI's GPT-2 is published). The tasks, their files and input
transformations are training/tasks.py's. Without --config the configuration frozen in OUT/config.toml is
used (so a rerun resumes with the same values), else the defaults; the [finetune] section holds GPT-1's.

The model: the pretrained GPT-2 with three embedding rows appended for START, DELIM and EXTRACT (drawn
N(0, 0.02) like every other weight at initialisation; the tied LM head grows with them), and one new
linear layer (N(0, 0.02), bias 0) on the final hidden state at each sequence's EXTRACT token, after dropout
(finetune.head_dropout). Similarity adds the two orders' states before the layer; multiple choice scores
each answer with one output and takes a softmax over the answers.

The objective: task loss + finetune.lm_weight x LM loss on the same sequences (GPT-1's L3 = L2 + lambda L1).
The task loss is binary cross-entropy on the logit (two labels), cross-entropy (more labels, or over the
answers), or squared error (STS-B's score). The LM loss is GPT-2's next-token cross-entropy (training/model.py)
over each sequence's tokens after START (delimiters and EXTRACT included, padding not), averaged per
sequence, then over sequences (as GPT-1's code does), so it is the same for any split into workers.

Schedule (GPT-1): AdamW betas 0.9/0.999, eps 1e-8, weight decay on matrices; the learning rate rises
linearly over warmup_fraction of all steps and falls linearly to 0 at the last; epochs x (train examples //
batch_size) steps. Epoch e visits the training examples in a permutation drawn from (seed, e); step s of an
epoch takes its batch_size examples s x batch_size ...: worker r of W the micro-batches r, r + W, ... of it.
Dropout masks are seeded from (seed, step, rank), so the run is a function of its step alone.

Writes under OUT:

    config.toml              the configuration, frozen once the run is accepted (a rerun without --config reads it)
    data/train.pt, dev.pt    the encoded splits every worker reads (training/tasks.py EncodedSplit.save)
    checkpoints/step-NNNNNN/checkpoint.pt   {"model", "optimizer", "step", "key", "model_config", "task",
                             "world_size"}, every checkpoint_every steps and at the end (+ Ray Train's run state)
    metrics.jsonl            per optimizer step: step, epoch, loss, task_loss, lm_loss, lr, grad_norm, step_s,
                             examples_per_s; at each epoch's end also dev_<metric> for each of the task's metrics
    attempts.jsonl           one row per (re)start of the worker group
    dev_predictions.jsonl    per dev example of the final model: where, label, prediction, scores
    results.json             task, dev metrics, the zero-shot score beside them, counts (cut, left out), source,
                             steps, seconds: written last, the completion record
    curve.png                losses against step, dev metric per epoch
    hf/                      the model as transformers' GPT2DoubleHeadsModel, with the tokenizer (training/export.py)

Resume: a restarted worker group (Ray Train's FailureConfig) and a rerun of the same command continue from
the newest readable checkpoint in OUT/checkpoints. A checkpoint is keyed on what the result depends on (task,
encoded data, source weights, the [finetune] values that change the result); OUT holding another key is
refused, naming both. A finished OUT (results.json under the same key) is not fine-tuned again.

`finetune(..., local=True)` runs the same loop in this process (training/session.py's LocalSession): the
tests and benchmarks/finetune.py's plain-PyTorch baseline use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from pipeline import storage
from pipeline.config import Config, ConfigError, FinetuneConfig, dump_config
from pipeline.runner import StageError
from pipeline.tokenizer import VOCAB_SIZE
from training.model import GPT, GPTConfig
from training.session import (
    CHECKPOINT_FILE, LocalSession, RayTrainSession, append_row, check_gpus, fit, latest_checkpoint, load_checkpoint,
    log, read_rows, resume_state, torch_trainer, truncate_rows,
)
from training.tasks import FINETUNE_VOCAB_SIZE, Task, TaskDataError, encode_split, load_split, read_task, score

ADAM_BETAS = (0.9, 0.999)  # GPT-1's Adam
# [finetune] keys that do not change what a run computes: a resume may change them.
OPERATIONAL = ("num_workers", "use_gpu", "micro_batch_size", "checkpoint_every", "keep_checkpoints",
               "max_failures", "crash_at_step")


# ---------------------------------------------------------------- the model


class FinetuneModel(nn.Module):
    """GPT-2 with the special-token rows and a linear head on the EXTRACT state: (scores, LM loss) of a batch."""

    def __init__(self, config: GPTConfig, task: Task, head_dropout: float):
        super().__init__()
        self.kind = task.kind
        self.gpt = GPT(config)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(config.n_embd, task.outputs)
        nn.init.normal_(self.head.weight, mean=0.0, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, with_lm: bool = True):
        """tokens (B, S, T) padded, lengths (B, S) -> scores (B, outputs), (B,) or (B, S) answers, and the LM loss."""
        B, S, T = tokens.shape
        flat, flat_lengths = tokens.view(B * S, T), lengths.view(B * S)
        hidden = self.gpt.hidden_states(flat)
        states = hidden[torch.arange(B * S, device=tokens.device), flat_lengths - 1]  # at each EXTRACT
        if self.kind == "similarity":
            states = states.view(B, S, -1).sum(1)
        scores = self.head(self.dropout(states))
        if self.kind == "multiple_choice":
            scores = scores.view(B, S)
        elif scores.size(-1) == 1:
            scores = scores.view(B)
        lm = sequence_lm_loss(self.gpt.lm_head(hidden), flat, flat_lengths) if with_lm else None
        return scores, lm


def sequence_lm_loss(logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of each sequence over its own tokens (not padding), averaged per sequence."""
    N, T, V = logits.shape
    losses = F.cross_entropy(logits[:, :-1].float().reshape(-1, V), tokens[:, 1:].reshape(-1), reduction="none")
    mask = torch.arange(T - 1, device=tokens.device)[None, :] < (lengths[:, None] - 1)
    return ((losses.view(N, T - 1) * mask).sum(1) / mask.sum(1)).mean()


def task_loss(task: Task, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    scores = scores.float()
    if task.regression:
        return F.mse_loss(scores, labels.float())
    if task.kind != "multiple_choice" and task.outputs == 1:
        return F.binary_cross_entropy_with_logits(scores, labels.float())
    return F.cross_entropy(scores, labels.long())


def predictions(task: Task, scores: torch.Tensor) -> torch.Tensor:
    """Class or answer index per example (the score itself for a regression)."""
    if task.regression:
        return scores.float()
    if task.kind != "multiple_choice" and task.outputs == 1:
        return (scores > 0).float()
    return scores.argmax(-1).float()


def pretrained_model(task: Task, model_config: dict, weights: dict, cfg: FinetuneConfig) -> FinetuneModel:
    """The fine-tuning model from a pretrained GPT-2's weights; the new weights drawn from cfg.seed."""
    torch.manual_seed(cfg.seed)
    config = GPTConfig(**{**model_config, "vocab_size": FINETUNE_VOCAB_SIZE})
    model = FinetuneModel(config, task, cfg.head_dropout)
    wte = weights["transformer.wte.weight"]
    new_rows = model.gpt.transformer.wte.weight.detach()[wte.size(0):]  # N(0, 0.02), GPT's embedding init
    extended = torch.cat([wte.to(new_rows.dtype), new_rows])
    model.gpt.load_state_dict({**weights, "transformer.wte.weight": extended, "lm_head.weight": extended})
    return model


# ---------------------------------------------------------------- where the weights come from


@dataclasses.dataclass(frozen=True)
class Source:
    """A pretrained GPT-2: a pretraining checkpoint or a transformers folder, and the sha256 of its weights."""

    kind: str  # "checkpoint" or "hf"
    path: Path
    digest: str
    run_dir: Path | None = None  # when --from named a run directory


def resolve_source(text: str | Path) -> Source:
    path = Path(text).expanduser().resolve()
    run_dir = None
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return Source("hf", path, storage.sha256_file(path / "model.safetensors"))
    if (path / "train" / "checkpoints").is_dir():
        run_dir, path = path, latest_checkpoint(path / "train" / "checkpoints")
        if path is None:
            raise ConfigError(f"--from {text}: no checkpoint under {run_dir / 'train' / 'checkpoints'}; run "
                              f"`webtext train --run-dir {run_dir}` first")
    elif (path / CHECKPOINT_FILE).is_file():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError(f"--from {text}: not a run directory with train checkpoints, a checkpoint.pt (or its "
                          f"folder), or a transformers GPT-2 folder (config.json + model.safetensors)")
    return Source("checkpoint", path, storage.sha256_file(path), run_dir)


def load_source(kind: str, path: Path, weights: bool = True) -> tuple[dict, dict | None]:
    """(model_config, GPT state_dict or None) of the pretrained model; without weights only the config is read."""
    if kind == "hf":
        from training.export import gpt_config_from_hf, load_hf

        config = gpt_config_from_hf(json.loads((path / "config.json").read_text()), path / "config.json")
        if config.vocab_size != VOCAB_SIZE:
            raise ConfigError(f"--from {path}: a vocabulary of {config.vocab_size}, not GPT-2's {VOCAB_SIZE}")
        if not weights:
            return config.to_dict(), None
        model = load_hf(path)
        return model.config.to_dict(), model.state_dict()
    try:  # mmap: a pretraining checkpoint holds the optimizer's moments too, read only what is used
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - load_checkpoint names the file and what to do
        state = load_checkpoint(path)
    if "model_config" not in state or "key" in state:
        raise ConfigError(f"--from {path}: not a pretraining checkpoint of `webtext train`; fine-tune "
                          f"from the pretrained model")
    if state["model_config"]["vocab_size"] != VOCAB_SIZE:
        raise ConfigError(f"--from {path}: a vocabulary of {state['model_config']['vocab_size']}, not GPT-2's {VOCAB_SIZE}")
    return state["model_config"], state["model"] if weights else None


# ---------------------------------------------------------------- data and schedule


class Examples:
    """An encoded split (training/tasks.py) as padded batches: tokens (B, S, T), lengths (B, S), labels (B,)."""

    def __init__(self, path: Path):
        state = load_split(path)
        self.tokens, self.offsets, self.labels = state["tokens"], state["offsets"], state["labels"]
        self.where, self.per_example, self.counts = state["where"], state["per_example"], state["counts"]

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: list[int]):
        S = self.per_example
        rows = [(int(self.offsets[i * S + k]), int(self.offsets[i * S + k + 1])) for i in indices for k in range(S)]
        T = max(end - start for start, end in rows)
        tokens = torch.zeros(len(rows), T, dtype=torch.long)  # padding is never read: causal, masked, past EXTRACT
        for row, (start, end) in enumerate(rows):
            tokens[row, : end - start] = self.tokens[start:end]
        lengths = torch.tensor([end - start for start, end in rows])
        return tokens.view(len(indices), S, T), lengths.view(len(indices), S), self.labels[indices]


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def steps_per_epoch(n_train: int, cfg: FinetuneConfig) -> int:
    if n_train < cfg.batch_size:
        raise ConfigError(f"the training split has {n_train} examples, fewer than finetune.batch_size = "
                          f"{cfg.batch_size}; lower the batch size")
    return n_train // cfg.batch_size


def learning_rate(step: int, total: int, cfg: FinetuneConfig) -> float:
    """LR of step `step` (0-based) of `total`: linear warmup over warmup_fraction of them, then linear to 0."""
    warmup = round(cfg.warmup_fraction * total)
    if step < warmup:
        return cfg.learning_rate * (step + 1) / warmup
    return cfg.learning_rate * (total - step) / max(1, total - warmup)


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


# ---------------------------------------------------------------- the loop


@torch.no_grad()
def evaluate(model, task: Task, dev: Examples, session, batch: int, autocast) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, scores) of every dev example: worker r scores examples r, r + W, ..., then all gather."""
    model.eval()
    mine = list(range(session.rank, len(dev), session.world_size))
    width = task.sequences if task.kind == "multiple_choice" else task.outputs
    slots = -(-len(dev) // session.world_size)
    out = torch.full((slots, 1 + width), math.nan, dtype=torch.float64, device=session.device)
    for i in range(0, len(mine), batch):
        tokens, lengths, _ = dev.batch(mine[i : i + batch])
        with autocast():
            scores, _ = model(tokens.to(session.device), lengths.to(session.device), with_lm=False)
        out[i : i + len(tokens), 0] = predictions(task, scores).double()
        out[i : i + len(tokens), 1:] = scores.double().view(len(tokens), width)
    gathered = [out]
    if session.world_size > 1:
        gathered = [torch.empty_like(out) for _ in range(session.world_size)]
        dist.all_gather(gathered, out)
    merged = np.empty((len(dev), 1 + width))
    for rank, part in enumerate(gathered):
        merged[rank :: session.world_size] = part.cpu().numpy()[: len(range(rank, len(dev), session.world_size))]
    model.train()
    return merged[:, 0], merged[:, 1:]


def finetune_loop(loop_config: dict, session=None) -> None:
    """One worker's fine-tuning: {"out", "finetune", "task", "source", "key"} in; checkpoints, metrics out."""
    cfg = FinetuneConfig(**loop_config["finetune"])
    task = Task(**{k: tuple(v) if isinstance(v, list) else v for k, v in loop_config["task"].items()})
    out = Path(loop_config["out"])
    session = session or RayTrainSession(out / "checkpoints")
    device, rank, world_size = session.device, session.rank, session.world_size
    cfg.check(world_size)
    on_cuda = device.type == "cuda"
    train, dev = Examples(out / "data" / "train.pt"), Examples(out / "data" / "dev.pt")
    per_epoch = steps_per_epoch(len(train), cfg)
    total = cfg.epochs * per_epoch
    B, accum = cfg.micro_batch_size, cfg.batch_size // (cfg.micro_batch_size * world_size)

    state = session.load()
    if state is None:
        model_config, weights = load_source(loop_config["source"]["kind"], Path(loop_config["source"]["path"]))
        model = pretrained_model(task, model_config, weights, cfg)
        del weights
    else:
        if state["key"] != loop_config["key"]:
            raise StageError(f"{out / 'checkpoints'} holds a fine-tuning of other data, weights or settings "
                             f"(key {state['key']}, now {loop_config['key']}); use another --out")
        model = FinetuneModel(GPTConfig(**state["model_config"]), task, cfg.head_dropout)
        model.load_state_dict(state["model"])
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.gpt.optimizer_groups(cfg.weight_decay) + [
            {"params": [model.head.weight], "weight_decay": cfg.weight_decay},
            {"params": [model.head.bias], "weight_decay": 0.0},
        ], lr=cfg.learning_rate, betas=ADAM_BETAS, eps=1e-8, fused=on_cuda,
    )
    start_step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start_step = state["step"]
        del state
    train_model = model
    if world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if on_cuda else None)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_cuda else contextlib.nullcontext
    with_lm = cfg.lm_weight > 0

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        truncate_rows(out / "metrics.jsonl", start_step)
        append_row(out / "attempts.jsonl", {"start_step": start_step, "world_size": world_size, "device": str(device),
                                            "threads": torch.get_num_threads()})
        log(f"{task.name} ({task.kind}): {len(train)} train, {len(dev)} dev examples; {total} steps of "
            f"{cfg.batch_size} ({accum} micro-steps of {B} on each of {world_size} worker(s), {device.type}), "
            f"from step {start_step}", "finetune")

    for step in range(start_step, total):
        if cfg.crash_at_step and step == cfg.crash_at_step and start_step == 0 and rank == world_size - 1:
            log(f"fault injection: rank {rank} exits at step {step} (finetune.crash_at_step)", "finetune")
            os._exit(1)
        epoch, within = divmod(step, per_epoch)
        order = epoch_order(len(train), cfg.seed, epoch)
        lr = learning_rate(step, total, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(step_seed(cfg.seed, step, rank))  # dropout masks: a function of the step
        started = time.perf_counter()
        sums = torch.zeros(2, device=device)  # task loss, LM loss
        for micro in range(accum):
            first = within * cfg.batch_size + (micro * world_size + rank) * B
            tokens, lengths, labels = train.batch(order[first : first + B].tolist())
            tokens, lengths, labels = tokens.to(device), lengths.to(device), labels.to(device)
            sync = contextlib.nullcontext() if micro == accum - 1 or world_size == 1 else train_model.no_sync()
            with sync:
                with autocast():
                    scores, lm = train_model(tokens, lengths, with_lm)
                    loss_task = task_loss(task, scores, labels)
                    loss = loss_task + cfg.lm_weight * lm if with_lm else loss_task
                (loss / accum).backward()
            sums[0] += loss_task.detach()
            sums[1] += lm.detach() if with_lm else 0.0
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if world_size > 1:
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        loss_task_value, lm_value = (sums / (accum * world_size)).tolist()
        seconds = time.perf_counter() - started
        done = step + 1
        metrics = {
            "step": done, "epoch": epoch + 1, "task_loss": loss_task_value, "lm_loss": lm_value if with_lm else None,
            "loss": loss_task_value + cfg.lm_weight * lm_value, "lr": lr, "grad_norm": grad_norm.item(),
            "step_s": seconds, "examples_per_s": cfg.batch_size / seconds,
        }
        epoch_end = done % per_epoch == 0
        checkpoint_now = done % cfg.checkpoint_every == 0 or done == total
        if epoch_end:
            predicted, scores = evaluate(model, task, dev, session, B, autocast)
            metrics.update({f"dev_{k}": v for k, v in score(task, dev.labels.numpy(), predicted).items()})
            if rank == 0 and done == total:
                write_predictions(out / "dev_predictions.jsonl", dev, predicted, scores)
        checkpoint = None
        if rank == 0:
            append_row(out / "metrics.jsonl", metrics)
            if epoch_end or done % max(1, total // 20) == 0:
                dev_text = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("dev_"))
                log(f"step {done}/{total} epoch {epoch + 1} loss {metrics['loss']:.4f} (task {loss_task_value:.4f}"
                    + (f", lm {lm_value:.4f}" if with_lm else "") + f") lr {lr:.2e} "
                    f"{metrics['examples_per_s']:,.1f} examples/s {dev_text}", "finetune")
            if checkpoint_now:
                checkpoint = {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": done,
                    "key": loop_config["key"], "model_config": model.gpt.config.to_dict(),
                    "task": dataclasses.asdict(task), "world_size": world_size,
                }
        if epoch_end or checkpoint_now:
            session.report(metrics, checkpoint)


def write_predictions(path: Path, dev: Examples, predicted: np.ndarray, scores: np.ndarray) -> None:
    rows = [{"where": w, "label": float(y), "prediction": float(p), "scores": [round(float(s), 6) for s in row]}
            for w, y, p, row in zip(dev.where, dev.labels.tolist(), predicted, scores)]
    storage.write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


# ---------------------------------------------------------------- the command


def run_key(task: Task, source: Source, data_digest: str, cfg: FinetuneConfig) -> str:
    """What a fine-tuning result depends on, hashed: checkpoints and results are reused only under it."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in OPERATIONAL}
    key = {"task": dataclasses.asdict(task), "source": source.digest, "data": data_digest, "finetune": settings}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def encode_splits(task: Task, records: dict, max_len: int) -> tuple[dict, str]:
    """Both splits encoded, and a digest of their contents."""
    encoded = {}
    for split in ("train", "dev"):
        encoded[split] = encode_split(task, records[split], max_len)
        if not encoded[split].labels:
            raise ConfigError(f"{split}: none of its {len(records[split])} examples fits in finetune.max_len = {max_len}")
    digest = hashlib.sha256("".join(e.digest() for e in encoded.values()).encode())
    return encoded, digest.hexdigest()[:16]


def zero_shot(task: Task, source: Source) -> dict | None:
    """The zero-shot score of the same pretrained weights on this task, where `webtext eval` has one.

    The hook for the eval stage (training/evaluation): its R/eval/results.json rows of this task name, 0
    shots, all items, whose model fingerprint is the source's weights, when --from names that run
    directory R. None otherwise (the eval stage defines no zero-shot form of the GPT-1 tasks today).
    """
    results = source.run_dir / "eval" / "results.json" if source.run_dir else None
    if results is None or not results.exists():
        return None
    rows = [r for r in json.loads(results.read_text())["results"]
            if r["task"] == task.name and r["shots"] == 0 and r["subset"] == "all"]
    if not rows:
        return None
    from training.evaluation.stage import weights_fingerprint

    model_config, weights = load_source(source.kind, source.path)
    model = GPT(GPTConfig(**model_config))
    model.load_state_dict(weights)
    rows = [r for r in rows if r["model_fingerprint"] == weights_fingerprint(model)]
    if not rows:
        return None
    return {"metrics": {r["metric"]: r["value"] for r in rows}, "items": rows[0]["items"], "from": str(results)}


def finetune(config: Config, task_name: str, data: str | Path, from_: str | Path, out: str | Path,
             local: bool = False) -> dict:
    """Fine-tune `from_` on `task_name`'s files in `data` into `out`; return results.json's contents."""
    cfg, out = config.finetune, Path(out).resolve()
    started = time.monotonic()
    try:
        task, records = read_task(task_name, Path(data))
    except TaskDataError as err:
        raise ConfigError(f"finetune --task {task_name}: {err}") from None
    source = resolve_source(from_)
    block = load_source(source.kind, source.path, weights=False)[0]["block_size"]
    max_len = cfg.max_len or block
    if max_len > block:
        raise ConfigError(f"finetune.max_len={cfg.max_len} exceeds the context of the model in {source.path} ({block})")
    encoded, data_digest = encode_splits(task, records, max_len)
    key = run_key(task, source, data_digest, cfg)
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
    if previous and previous.get("key") == key:
        log(f"{out / 'results.json'} is up to date (key {key}): not fine-tuned again", "finetune")
        return previous
    state = resume_state(out / "checkpoints")
    if state is not None and state["key"] != key:
        raise ConfigError(f"--out {out} holds a fine-tuning of other data, weights or [finetune] settings (key "
                          f"{state['key']}, now {key}); use another --out, or delete {out / 'checkpoints'}")
    (out / "results.json").unlink(missing_ok=True)
    storage.write_bytes(out / "config.toml", dump_config(config).encode())
    for split, encoded_split in encoded.items():
        encoded_split.save(out / "data" / f"{split}.pt")
    counts = {split: e.counts for split, e in encoded.items()}
    loop_config = {"out": str(out), "finetune": dataclasses.asdict(cfg), "task": dataclasses.asdict(task), "key": key,
                   "source": {"kind": source.kind, "path": str(source.path)}}
    if local:
        cfg.check(1)
        finetune_loop(loop_config, LocalSession(out / "checkpoints", cfg.keep_checkpoints))
    else:
        check_gpus(config, "finetune", cfg.num_workers, cfg.use_gpu)
        trainer = torch_trainer(finetune_loop, loop_config, out, num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                max_failures=cfg.max_failures, keep_checkpoints=cfg.keep_checkpoints)
        fit(trainer, "finetune", out / "checkpoints", cfg.max_failures, f"webtext finetune ... --out {out}")
    return write_results(out, task, source, key, counts, max_len, time.monotonic() - started)


def write_results(out: Path, task: Task, source: Source, key: str, counts: dict, max_len: int, seconds: float) -> dict:
    """Plot, export and results.json (last) from what the loop left in OUT."""
    from training.export import ExportError, save_double_heads

    rows = read_rows(out / "metrics.jsonl")
    final = [r for r in rows if any(k.startswith("dev_") for k in r)][-1]
    plot_curve(rows, out / "curve.png", f"{task.name}: fine-tuning")
    state = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    model = FinetuneModel(GPTConfig(**state["model_config"]), task, 0.0)
    model.load_state_dict(state["model"])
    try:
        export = save_double_heads(model, task, out / "hf")
    except ExportError as err:
        export = f"not exported: {err}"
        log(export, "finetune")
    results = {
        "task": task.name, "kind": task.kind, "labels": list(task.labels), "key": key,
        "dev": {k[len("dev_"):]: v for k, v in final.items() if k.startswith("dev_")},
        "zero_shot": zero_shot(task, source),
        "counts": counts, "max_len": max_len, "steps": final["step"], "epochs": final["epoch"],
        "final_loss": final["loss"], "attempts": len(read_rows(out / "attempts.jsonl")),
        "source": {"kind": source.kind, "path": str(source.path), "sha256": source.digest},
        "export": export, "seconds": round(seconds, 3),
    }
    storage.write_json(out / "results.json", results)
    log(f"{task.name} dev: " + ", ".join(f"{k} {v:.4f}" for k, v in results["dev"].items()) + f"  ({out / 'results.json'})",
        "finetune")
    return results


def plot_curve(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["task_loss"] for r in rows], label="task loss", linewidth=1)
    if rows and rows[0]["lm_loss"] is not None:
        ax.plot(steps, [r["lm_loss"] for r in rows], label="LM loss", linewidth=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    evaluated = [r for r in rows if any(k.startswith("dev_") for k in r)]
    if evaluated:
        right = ax.twinx()
        metrics = [k for k in evaluated[0] if k.startswith("dev_")]
        for color, metric in zip(("C2", "C3", "C4"), metrics):
            right.plot([r["step"] for r in evaluated], [r[metric] for r in evaluated], "o-", color=color, label=metric)
        right.set_ylim(min(0.0, *(r[m] for r in evaluated for m in metrics)), 1.0)
        right.set_ylabel("dev metric")
        right.legend(loc="center right")
    ax.legend(loc="upper right")
    fig.tight_layout()
    with storage.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- the dry run and the report


DRYRUN_TASK = "classification"


def dryrun_finetune(ctx) -> dict:
    """`make dryrun`'s fine-tuning: the run's model on a generated classification task, into R/finetune."""
    from training.generated_tasks import write_task

    data = write_task(ctx.path("finetune", "task"), DRYRUN_TASK, train=512, dev=128, seed=0)
    return finetune(ctx.config, "custom", data, ctx.run_dir, ctx.path("finetune"))


def report_section(run_dir: Path, plots: Path):
    """The run report's fine-tuning part: R/finetune/results.json's dev metrics and the curve."""
    import shutil

    from pipeline.report import Section, read_json

    results = read_json(Path(run_dir) / "finetune" / "results.json")
    if results is None:
        return None
    shutil.copyfile(Path(run_dir) / "finetune" / "curve.png", plots / "finetune.png")
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in results["dev"].items())
    zero = results["zero_shot"]
    zero_text = ", ".join(f"{k} {v:.3f}" for k, v in zero["metrics"].items()) if zero else "n/a"
    line = (f"finetune: {results['task']} ({results['kind']}), dev {metrics} on {results['counts']['dev']['examples']} "
            f"examples after {results['steps']} steps; zero-shot {zero_text}")
    return Section("finetune", lines=[line], plots=[("Fine-tuning", "report/finetune.png")], data=results)
