"""The stage runner: partitions -> one Ray task each -> atomic outputs plus a commit record, with lineage.

Every stage is a list of partition specs (plain, picklable dicts) and a function that turns one spec into
output files under the run directory and returns a `PartitionResult`. `run_partitions` maps the function
over the specs as Ray tasks. Inside the task, after the function has written its files atomically, the
runner writes the commit record `<phase>/_commits/part-NNNNN.json` last:

    {"partition": 3, "stage": "crawl", "fingerprint": "...", "config": "...", "spec": "...",
     "reads": {"urls/part-00003.parquet": {"size": 18211, "mtime_ns": ..., "sha256": "..."}},
     "files": {"crawl/log/part-00003.parquet": {"size": 9120, "mtime_ns": ..., "sha256": "..."}, ...},
     "counts": {"in": 120, "out": 97, "http_404": 23}, "info": {...}, "seconds": 1.7}

Lineage. A spec may list under "reads" the files its partition reads: upstream outputs (run-relative) or
input files (absolute). A partition's fingerprint folds in the config sections the stage reads, the spec
and the sha256 of every file it reads, so a changed config section, input file or upstream partition
reruns exactly the partitions that read it, downstream included; the console says which and why. A file
is hashed once: while its size and mtime match a commit's record of it (as an output or as a read), that
record's sha256 is reused.

A partition is done when its commit exists under the same fingerprint and every file it names is intact
(same size, and same sha256 when the mtime moved). Ray retries a task whose worker died (at-least-once);
since outputs are replaced atomically and the commit is written last, the result is exactly-once. Part
files that no commit names, in the folders this phase writes (an earlier configuration's), and leftover
temporary files of killed tasks are removed. A stage reads its upstream through `upstream_partitions`,
which refuses (naming the file and the command that rebuilds it) a missing, extra or unfinished upstream
partition: upstream damage never deletes downstream outputs.

Counts follow one rule: `in` records entered, `out` left, every other key is a drop reason, and
in == out + sum(drops). `info` holds other numbers (bytes, seconds) that are summed into stats.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import ray

from pipeline import stages, storage
from pipeline.storage import AnyPath, ObjectPath, StorageError
from pipeline.config import Config, ConfigError, dump_config, validate
from pipeline.reasons import is_reason


class StageError(RuntimeError):
    """A stage could not finish; the message names the partition, its input and what to do."""


class RunDirError(ConfigError):
    """The run directory cannot be used (a file, read-only, in use, an unsupported URI)."""


@dataclass
class RunContext:
    """What every task needs: where the run lives, how it is configured, which stage is running."""

    run_dir: AnyPath
    config: Config
    stage: str = ""

    def path(self, *parts: str) -> AnyPath:
        """A path in the run directory; an absolute path or a URI (an input file) stays what it is."""
        if len(parts) == 1 and ("://" in parts[0] or parts[0].startswith("/")):
            return storage.location(parts[0])
        return self.run_dir.joinpath(*parts)

    def part_path(self, phase: str, index: int, ext: str) -> AnyPath:
        return self.run_dir / phase / f"part-{index:05d}.{ext}"

    def rel(self, path: AnyPath) -> str:
        return str(path.relative_to(self.run_dir))

    def command(self, stage: str) -> str:
        return f"`webtext {stage} --run-dir {self.run_dir}`"


@dataclass
class PartitionResult:
    counts: dict[str, int]
    files: list[AnyPath] = field(default_factory=list)
    info: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- the run directory


def resolve_run_dir(run_dir: str | AnyPath) -> AnyPath:
    """A run directory argument as an absolute local path (file:// accepted) or an object-store location."""
    try:
        return storage.location(run_dir)
    except ValueError as err:
        raise RunDirError(f"--run-dir {err}") from None


def check_run_dir(run_dir: str | AnyPath) -> AnyPath:
    """The run directory, created if needed; RunDirError (one line, what to do) if it cannot be written."""
    path = resolve_run_dir(run_dir)
    if storage.is_object(path):
        return check_object_run_dir(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--run-dir {path}: is a file, not a directory; choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"--run-dir {path}: cannot create it ({err.strerror or err}); choose a writable path") from None
    try:  # a probe, not os.access: root passes every permission check, yet a read-only mount refuses it
        with tempfile.TemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as err:
        raise RunDirError(f"--run-dir {path}: not writable ({err.strerror or err}); fix its permissions or choose "
                          f"another path") from None
    return path


def check_object_run_dir(path: ObjectPath) -> ObjectPath:
    """An object-store run directory whose bucket exists and takes a write (a probe object, then removed)."""
    bucket = ObjectPath(path.scheme, path.key.split("/")[0], path.options)
    try:
        if not bucket.is_dir():
            raise RunDirError(f"--run-dir {path}: the bucket {bucket} does not exist (or these credentials cannot "
                              f"see it); create it or fix the URI")
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except StorageError as err:
        raise RunDirError(f"--run-dir {err}") from None
    return path


def open_run(run_dir: str | AnyPath, config: Config) -> RunContext:
    """Check the configuration and the run directory, then freeze the configuration into it."""
    validate(config)
    storage.configure(**dataclasses.asdict(config.storage))
    path = check_run_dir(run_dir)
    storage.write_bytes(path / "config.toml", dump_config(config).encode())
    return RunContext(run_dir=path, config=config)


def _holder(command: str) -> str:
    return f"`{command}` (pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')})"


class RunLock:
    """An exclusive lock on a run directory (`R/.lock`), held by one command at a time.

    On a local disk the lock is an flock on the file, so the kernel releases it when its holder dies,
    however it dies; the file's text names the holder (host, pid, command, start) for the message a second
    writer gets. A lock file left with text by a process that is gone is taken over with a warning. An
    object store has no locks: there the lock is a lease (ObjectLease).
    """

    def __init__(self, run_dir: AnyPath, command: str):
        self.run_dir, self.command = run_dir, command
        self.fd: int | None = None
        self.lease: ObjectLease | None = None

    def __enter__(self) -> RunLock:
        if storage.is_object(self.run_dir):
            self.lease = ObjectLease(self.run_dir / ".lock", _holder(self.command)).acquire()
            return self
        import fcntl

        path = self.run_dir / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirError(f"{self.run_dir} is in use by {holder}; wait for it to finish or stop it") from None
        stale = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if stale:
            print(f"[run] warning: took over the lock of {stale}, which is no longer running", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder(self.command).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.lease is not None:
            self.lease.release()
            return
        os.ftruncate(self.fd, 0)
        os.close(self.fd)
        self.fd = None


class ObjectLease:
    """A lock object on an object store: the holder's name, a token and an expiry it renews while it runs.

    A second writer finds an unexpired lease and fails naming its holder; a lease its holder stopped renewing
    (a crashed process, LEASE_S ago) is taken over with a warning. Two writers starting within the same
    instant both write the object; each reads it back after CONFIRM_S and the one whose token is not there
    gives up, so at most one proceeds.
    """

    LEASE_S, CONFIRM_S = 60.0, 1.0

    def __init__(self, path: ObjectPath, holder: str):
        self.path, self.holder = path, holder
        self.token = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
        self.stop = threading.Event()
        self.renewer: threading.Thread | None = None

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_bytes())
        except (StorageError, json.JSONDecodeError):
            return None

    def _write(self) -> None:
        self.path.write_bytes(json.dumps({"holder": self.holder, "token": self.token,
                                          "expires": time.time() + self.LEASE_S}).encode())

    def acquire(self) -> ObjectLease:
        current = self._read()
        if current and current["expires"] > time.time():
            raise RunDirError(f"{self.path.parent} is in use by {current['holder']}; wait for it to finish or stop it")
        if current:
            print(f"[run] warning: took over the lock of {current['holder']}, which stopped renewing it",
                  file=sys.stderr)
        self._write()
        time.sleep(self.CONFIRM_S)
        current = self._read()
        if not current or current["token"] != self.token:
            holder = current["holder"] if current else "another process"
            raise RunDirError(f"{self.path.parent} is in use by {holder}; wait for it to finish or stop it")
        self.renewer = threading.Thread(target=self._renew, name="run-lock-lease", daemon=True)
        self.renewer.start()
        return self

    def _renew(self) -> None:
        while not self.stop.wait(self.LEASE_S / 3):
            with contextlib.suppress(StorageError):
                self._write()

    def release(self) -> None:
        self.stop.set()
        self.renewer.join()
        current = self._read()
        if current and current["token"] == self.token:
            self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def locked_run(run_dir: str | AnyPath, config: Config, command: str) -> Iterator[RunContext]:
    """open_run under the run directory's lock: a refused config or a busy run changes nothing in it."""
    validate(config)
    storage.configure(**dataclasses.asdict(config.storage))
    with RunLock(check_run_dir(run_dir), command):
        yield open_run(run_dir, config)


def run_stage(ctx: RunContext, name: str, **options) -> dict:
    """Run registered stage `name` (its stats.json, the completion record, is rewritten when it finishes)."""
    stage = stages.stage(name)
    ctx = dataclasses.replace(ctx, stage=name)
    if not stage.enabled(ctx.config):
        print(f"[{name}] {stage.enabled_by} is false: skipped", file=sys.stderr)
        return write_stats(ctx, stage.folder, {"enabled": False})
    return stage.function()(ctx, **options)


def ensure_ray(config: Config) -> None:
    """Join $RAY_ADDRESS / config.ray.address if given, else start a local instance sized to the machine."""
    if ray.is_initialized():
        return
    address = config.ray.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address)
    else:
        ray.init(address="local", num_cpus=config.ray.num_cpus or os.cpu_count())


# ---------------------------------------------------------------- file digests


def file_record(path: AnyPath, sha256: str | None = None) -> dict:
    """{size, mtime_ns, sha256} of a file: what a commit records of each file it writes or reads."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256 or storage.sha256_file(path)}


class Digests:
    """sha256 of files, reusing a commit's record of a file while its size and mtime still match."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.known: dict[str, dict] = {}

    def learn(self, commits: list[dict | None]) -> None:
        for commit in commits:
            if commit:
                self.known.update(commit.get("reads", {}))
                self.known.update(commit.get("files", {}))

    def records(self, names: list[str]) -> dict[str, dict]:
        """name -> record for run-relative or absolute file names; unknown or changed files are hashed."""
        out, todo = {}, []
        for name in dict.fromkeys(names):
            path = self.ctx.path(name)
            try:
                stat = path.stat()
            except FileNotFoundError:
                raise StageError(f"{path}: not found, but a partition reads it") from None
            known = self.known.get(name)
            if known and known["size"] == stat.st_size and known["mtime_ns"] == stat.st_mtime_ns:
                out[name] = known
            else:
                todo.append(name)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # hashlib releases the GIL
            for name, record in zip(todo, pool.map(lambda n: file_record(self.ctx.path(n)), todo)):
                out[name] = self.known[name] = record
        return out


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def partition_fingerprint(config_fp: str, spec: Any, reads: dict[str, dict]) -> str:
    return _hash([config_fp, _spec_without_reads(spec), {name: r["sha256"] for name, r in sorted(reads.items())}])


def _spec_without_reads(spec: Any) -> Any:
    return {k: v for k, v in spec.items() if k != "reads"} if isinstance(spec, dict) else spec


def _commit_path(ctx: RunContext, phase: str, index: int) -> Path:
    return ctx.path(phase, "_commits", f"part-{index:05d}.json")


def read_commit(ctx: RunContext, phase: str, index: int) -> dict | None:
    try:
        commit = json.loads(_commit_path(ctx, phase, index).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return commit if isinstance(commit.get("files"), dict) else None


def damaged_output(ctx: RunContext, commit: dict) -> str | None:
    """The first file a commit names that is gone or no longer what was written, else None."""
    for rel, record in commit["files"].items():
        path = ctx.path(rel)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return f"{rel} missing"
        if stat.st_size != record["size"]:
            return f"{rel} changed"
        if stat.st_mtime_ns != record["mtime_ns"] and storage.sha256_file(path) != record["sha256"]:
            return f"{rel} changed"
    return None


def rerun_reason(old: dict | None, config_fp: str, sections: tuple[str, ...], spec: Any, reads: dict) -> str:
    """Why a partition whose fingerprint no longer matches its commit runs again, in a few words."""
    if old is None:
        return "new"
    if old.get("config") != config_fp:
        return f"config [{', '.join(sections)}] changed"
    before = old.get("reads", {})
    added = [n for n in reads if n not in before]
    changed = [n for n, r in reads.items() if n in before and before[n]["sha256"] != r["sha256"]]
    for names, what in ((changed, "changed"), (added, "is a new input")):
        if names:
            return f"{names[0]} {what}" + (f" (+{len(names) - 1} more)" if len(names) > 1 else "")
    return "its inputs changed"


# ---------------------------------------------------------------- running a phase


def _run_one(fn: Callable, spec: Any, ctx: RunContext, phase: str, index: int, fingerprints: dict) -> dict:
    started = time.monotonic()
    result = fn(spec, ctx)
    counts = Counter(result.counts)
    unknown = sorted(k for k in counts if k not in ("in", "out") and not is_reason(k))
    if unknown:
        raise StageError(f"{phase} partition {index}: drop reason(s) {unknown} are not in pipeline/reasons.py: a bug "
                         "in the stage, please report it with this message")
    dropped = sum(v for k, v in counts.items() if k not in ("in", "out"))
    if counts["in"] != counts["out"] + dropped:
        raise StageError(
            f"{phase} partition {index}: counts do not add up (in={counts['in']} out={counts['out']} "
            f"dropped={dropped}): a bug in the stage, please report it with this message"
        )
    commit = {
        "partition": index,
        "stage": ctx.stage,
        **fingerprints,
        "counts": dict(sorted(counts.items())),
        "info": dict(sorted(result.info.items())),
        "files": {ctx.rel(p): file_record(p) for p in result.files},
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


def remove_temporaries(folder: AnyPath) -> None:
    """Delete `.tmp-*` files (storage.atomic_path's) left under `folder` by killed tasks; none is running.
    An object store has none: an unfinished upload never becomes an object."""
    if not storage.is_object(folder) and folder.is_dir():
        for path in folder.rglob(".tmp-*"):
            with contextlib.suppress(FileNotFoundError):
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
    remove_temporaries(ctx.path(phase))
    config_fp = ctx.config.fingerprint(*sections)
    old = [read_commit(ctx, phase, i) for i in range(len(specs))]
    digests = Digests(ctx)
    digests.learn(old)
    reads = [digests.records(spec.get("reads", []) if isinstance(spec, dict) else []) for spec in specs]
    fingerprints = [
        {"fingerprint": partition_fingerprint(config_fp, spec, r), "config": config_fp,
         "spec": _hash(_spec_without_reads(spec)), "reads": r}
        for spec, r in zip(specs, reads)
    ]
    commits: list[dict | None] = []
    reasons: dict[int, str] = {}
    for i, (commit, fp) in enumerate(zip(old, fingerprints)):
        if commit is not None and commit.get("fingerprint") == fp["fingerprint"]:
            damage = damaged_output(ctx, commit)
            if damage is None:
                commits.append(commit)
                continue
            reasons[i] = damage
        else:
            reasons[i] = rerun_reason(commit, config_fp, sections, specs[i], reads[i])
        commits.append(None)
    owner = stages.owner_of(phase)
    if reasons and owner:  # outputs are about to change: the stage is unfinished until its stats.json is rewritten
        ctx.path(owner.folder, "stats.json").unlink(missing_ok=True)
    options = {"num_cpus": num_cpus, "max_retries": 3}
    if memory_mb:
        options["memory"] = memory_mb * 1024 * 1024
    pending = {
        _run_remote.options(**options).remote(fn, specs[i], ctx, phase, i, fingerprints[i]): i for i in reasons
    }
    progress = Progress(phase, len(specs), reasons)
    failures = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(ready[0])
        try:
            commits[index] = ray.get(ready[0])
            progress.update(commits[index])
        except Exception as err:  # noqa: BLE001 - reported below with the partition named
            failures.append((index, err))
    remove_temporaries(ctx.path(phase))
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
    """What will run and why, then one line per finished partition on stderr: how far, how many, how fast."""

    def __init__(self, phase: str, total: int, reasons: dict[int, str]):
        self.phase, self.total, self.finished = phase, total, total - len(reasons)
        self.counts: Counter = Counter()
        self.started = time.monotonic()
        if self.finished:
            self._print(f"{self.finished} partitions already committed, skipped")
        rerun = {i: why for i, why in reasons.items() if why != "new"}
        if rerun:
            shown = ", ".join(f"{i} ({why})" for i, why in list(rerun.items())[:8])
            more = f" and {len(rerun) - 8} more" if len(rerun) > 8 else ""
            self._print(f"rerunning {len(rerun)} of {total} partitions: {shown}{more}")

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


# ---------------------------------------------------------------- reading upstream outputs


def upstream_partitions(ctx: RunContext, phase: str) -> list[dict[str, dict]]:
    """The files each committed partition of an upstream `phase` wrote ({name: record}), in partition order.

    The upstream must be whole: its stage finished (its stats.json, written last, exists), its commits are
    numbered 0..N-1, every file they name exists, and no part file beside them is unnamed. Anything else is
    a StageError naming the file and the command that rebuilds it; nothing is deleted. A committed file
    whose content changed since (rewritten by hand) is read as it is now: lineage reruns what reads it.
    """
    owner = stages.owner_of(phase)
    rebuild = ctx.command(owner.name)
    if not ctx.path(owner.folder, "stats.json").exists():
        raise StageError(f"{ctx.path(owner.folder)}: the {owner.name} stage has not finished in this run "
                         f"directory; run {rebuild} first")
    commit_files = sorted(ctx.path(phase, "_commits").glob("part-*.json"))
    commits = [read_commit(ctx, phase, i) for i in range(len(commit_files))]
    for i, (path, commit) in enumerate(zip(commit_files, commits)):
        if path.name != f"part-{i:05d}.json" or commit is None:
            raise StageError(f"{ctx.path(phase, '_commits', f'part-{i:05d}.json')}: missing or unreadable, so "
                             f"partition {i} of {phase} is unknown; rerun {rebuild} to rebuild it")
    named = {rel for c in commits for rel in c["files"]}
    for rel in sorted(named):
        if not ctx.path(rel).is_file():
            raise StageError(f"{ctx.path(rel)}: missing (partition of {phase} committed by {owner.name}); "
                             f"rerun {rebuild} to rebuild it")
    for folder in sorted({ctx.path(rel).parent for rel in named} | {ctx.path(phase)}):
        for path in sorted(folder.glob("part-*")):
            if path.is_file() and ctx.rel(path) not in named:
                raise StageError(f"{path}: not a committed partition of {phase}; remove it, or rerun {rebuild} "
                                 f"to rebuild {phase}")
    return [c["files"] for c in commits]


def phase_digest(commits: list[dict]) -> str:
    """One digest of every file a phase's commits wrote: changes when any of its partitions' outputs did."""
    return _hash([{rel: r["sha256"] for rel, r in sorted(c["files"].items())} for c in commits])


# ---------------------------------------------------------------- stage totals


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
        "bytes_written": sum(r["size"] for c in commits for r in c["files"].values()),
        "seconds": round(seconds, 3),
    }


def write_stats(ctx: RunContext, stage: str, stats: dict) -> dict:
    """Write `<stage>/stats.json`, the stage's completion record (seconds differ between identical runs)."""
    storage.write_json(ctx.path(stage, "stats.json"), {"stage": stage, **stats})
    return stats
