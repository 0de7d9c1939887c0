"""The stage runner: partitions -> one Ray task each -> atomic outputs plus a commit record.

Every stage is a list of partition specs (plain, picklable data) and a function that turns one spec into
output files under the run directory and returns a `PartitionResult`. `run_partitions` maps the function
over the specs as Ray tasks. Inside the task, after the function has written its files atomically, the
runner writes the commit record `<phase>/_commits/part-NNNNN.json`:

    {"partition": 3, "fingerprint": "...", "counts": {"in": 120, "out": 97, "dropped_score": 23},
     "info": {...}, "files": {"urls/part-00003.parquet": 18211}, "seconds": 1.7}

A partition is done when its commit exists. A rerun skips a partition whose commit has the same
fingerprint (the config sections the stage depends on plus the spec itself) and whose files are all there
with the recorded sizes; every other partition is redone. Ray retries a task whose worker died (at-least-
once); since outputs are replaced atomically and the commit is written last, the result is exactly-once.
Part files that no commit names, in the folders this phase writes (leftovers of an earlier configuration),
are removed.

Counts follow one rule: `in` records entered, `out` left, every other key is a drop reason, and
in == out + sum(drops). `info` holds other numbers (bytes, seconds) that are summed into stats.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import ray

from pipeline import storage
from pipeline.config import Config, dump_config


class StageError(RuntimeError):
    """A stage could not finish; the message names the partition, its input and what to do."""


@dataclass
class RunContext:
    """What every task needs: where the run lives and how it is configured."""

    run_dir: Path
    config: Config

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)

    def part_path(self, phase: str, index: int, ext: str) -> Path:
        return self.run_dir / phase / f"part-{index:05d}.{ext}"

    def rel(self, path: Path) -> str:
        return str(Path(path).relative_to(self.run_dir))


@dataclass
class PartitionResult:
    counts: dict[str, int]
    files: list[Path] = field(default_factory=list)
    info: dict[str, float] = field(default_factory=dict)


def open_run(run_dir: str | Path, config: Config) -> RunContext:
    """Create the run directory and freeze the configuration into it."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    storage.write_bytes(run_dir / "config.toml", dump_config(config).encode())
    return RunContext(run_dir=run_dir, config=config)


def ensure_ray(config: Config) -> None:
    """Join $RAY_ADDRESS / config.ray.address if given, else start a local instance sized to the machine."""
    if ray.is_initialized():
        return
    address = config.ray.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address)
    else:
        ray.init(address="local", num_cpus=config.ray.num_cpus or os.cpu_count())


def partition_fingerprint(config: Config, sections: tuple[str, ...], spec: Any) -> str:
    spec_text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256((config.fingerprint(*sections) + spec_text).encode()).hexdigest()[:16]


def _commit_path(ctx: RunContext, phase: str, index: int) -> Path:
    return ctx.path(phase, "_commits", f"part-{index:05d}.json")


def _read_commit(ctx: RunContext, phase: str, index: int, fingerprint: str) -> dict | None:
    """The commit record if the partition is done under this fingerprint and its files are intact."""
    try:
        commit = json.loads(_commit_path(ctx, phase, index).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if commit.get("fingerprint") != fingerprint:
        return None
    for rel, size in commit["files"].items():
        try:
            if ctx.path(rel).stat().st_size != size:
                return None
        except FileNotFoundError:
            return None
    return commit


def _run_one(fn: Callable, spec: Any, ctx: RunContext, phase: str, index: int, fingerprint: str) -> dict:
    started = time.monotonic()
    result = fn(spec, ctx)
    counts = Counter(result.counts)
    dropped = sum(v for k, v in counts.items() if k not in ("in", "out"))
    if counts["in"] != counts["out"] + dropped:
        raise StageError(
            f"{phase} partition {index}: counts do not add up (in={counts['in']} out={counts['out']} "
            f"dropped={dropped}): a bug in the stage, please report it with this message"
        )
    commit = {
        "partition": index,
        "fingerprint": fingerprint,
        "counts": dict(sorted(counts.items())),
        "info": dict(sorted(result.info.items())),
        "files": {ctx.rel(p): Path(p).stat().st_size for p in result.files},
        "seconds": round(time.monotonic() - started, 3),
    }
    storage.write_json(_commit_path(ctx, phase, index), commit)
    return commit


_run_remote = ray.remote(_run_one)


def _remove_orphans(ctx: RunContext, phase: str, commits: list[dict]) -> None:
    """Delete part files in this phase's output folders that no commit names (an earlier config's)."""
    named = {rel for c in commits for rel in c["files"]}
    folders = {ctx.path(phase)} | {ctx.path(rel).parent for rel in named}
    for folder in folders:
        for path in folder.glob("part-*"):
            if path.is_file() and ctx.rel(path) not in named:
                path.unlink()
    for path in ctx.path(phase, "_commits").glob("part-*.json"):
        if int(path.stem.split("-")[1]) >= len(commits):
            path.unlink()


def run_partitions(
    ctx: RunContext,
    phase: str,
    specs: list[Any],
    fn: Callable[[Any, RunContext], PartitionResult],
    sections: tuple[str, ...],
    num_cpus: float = 1,
    memory_mb: int = 0,
) -> list[dict]:
    """Run `fn(spec, ctx)` for every spec not already committed; return every partition's commit, in order."""
    ensure_ray(ctx.config)
    fingerprints = [partition_fingerprint(ctx.config, sections, spec) for spec in specs]
    commits: list[dict | None] = [_read_commit(ctx, phase, i, fp) for i, fp in enumerate(fingerprints)]
    todo = [i for i, c in enumerate(commits) if c is None]
    skipped = len(specs) - len(todo)
    options = {"num_cpus": num_cpus, "max_retries": 3}
    if memory_mb:
        options["memory"] = memory_mb * 1024 * 1024
    pending = {
        _run_remote.options(**options).remote(fn, specs[i], ctx, phase, i, fingerprints[i]): i for i in todo
    }
    progress = Progress(phase, len(specs), skipped)
    failures = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(ready[0])
        try:
            commits[index] = ray.get(ready[0])
            progress.update(commits[index])
        except Exception as err:  # noqa: BLE001 - reported below with the partition named
            failures.append((index, err))
    if failures:
        lines = [f"  partition {i} ({json.dumps(specs[i], default=str)[:300]}): {_root_cause(e)}" for i, e in failures]
        raise StageError(
            f"{phase}: {len(failures)} of {len(specs)} partitions failed; committed ones are kept and a rerun "
            f"redoes only the failed ones:\n" + "\n".join(lines)
        )
    _remove_orphans(ctx, phase, commits)
    progress.done()
    return commits


def _root_cause(err: Exception) -> str:
    cause = getattr(err, "cause", None) or err
    return f"{type(cause).__name__}: {cause}"


class Progress:
    """One line per finished partition on stderr: how far, how many records, how fast."""

    def __init__(self, phase: str, total: int, skipped: int):
        self.phase, self.total, self.finished = phase, total, skipped
        self.counts: Counter = Counter()
        self.started = time.monotonic()
        if skipped:
            self._print(f"{skipped} partitions already committed, skipped")

    def _print(self, text: str) -> None:
        print(f"[{self.phase}] {text}", file=sys.stderr, flush=True)

    def update(self, commit: dict) -> None:
        self.finished += 1
        self.counts.update(commit["counts"])
        elapsed = time.monotonic() - self.started
        rate = self.counts["in"] / elapsed if elapsed > 0 else 0.0
        self._print(
            f"{self.finished}/{self.total} partitions  in={self.counts['in']} out={self.counts['out']}  "
            f"{rate:,.0f} rec/s  {elapsed:.1f}s"
        )

    def done(self) -> None:
        self._print(f"done in {time.monotonic() - self.started:.1f}s")


def summarize(commits: list[dict], seconds: float) -> dict:
    """Stage totals from commit records: records in/out, drops by reason, summed info, bytes written."""
    counts: Counter = Counter()
    info: Counter = Counter()
    for c in commits:
        counts.update(c["counts"])
        info.update(c["info"])
    return {
        "partitions": len(commits),
        "records_in": counts.pop("in", 0),
        "records_out": counts.pop("out", 0),
        "dropped": dict(sorted(counts.items())),
        "info": {k: round(v, 3) if isinstance(v, float) else v for k, v in sorted(info.items())},
        "bytes_written": sum(size for c in commits for size in c["files"].values()),
        "seconds": round(seconds, 3),
    }


def write_stats(ctx: RunContext, stage: str, stats: dict) -> dict:
    """Write `<stage>/stats.json` (seconds are the only field that differs between identical runs)."""
    storage.write_json(ctx.path(stage, "stats.json"), {"stage": stage, **stats})
    return stats

