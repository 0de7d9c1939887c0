"""Benchmark: the tokenize stage (Parquet -> shards on disk) against raw `encode_ordinary_batch` in memory.

    .venv/bin/python -m benchmarks.tokenize [--mb 24] [--partitions 8] [--threads 2]

(Run it as a module: as a script, benchmarks/ would come first on sys.path and this file would shadow the
standard library's `tokenize`.)

Corpus: the standard library's triple-quoted strings (docstrings, i.e. English prose with some code), cut
into documents of about 4 KB, written as `docs/part-*.parquet` in a temporary run directory. Both sides
encode the same texts with the same thread count, in the same run:

- baseline: `get_encoding().encode_ordinary_batch(texts, num_threads=T)` on texts already in memory;
- stage: `pipeline.tokenize.run` on a local Ray instance with T CPUs (one single-threaded task per
  partition), from reading Parquet to fsynced shards, manifest and checksums. `ray.init` is outside the
  timing (the CLI pays it once per command, whatever the data size).

The two sides run alternately, `--repeats` times (the stage from scratch into a fresh run directory each time),
and each repeat's ratio compares two measurements taken seconds apart, so that load from other jobs on the
machine drifts less into the comparison. Repeat 1 of the stage starts cold: its Ray workers import pyarrow and
tiktoken and build the BPE tables (about 1-2 s per worker, once per command whatever the data size); later
repeats reuse warm workers, which is what the stage costs per byte at scale. The summary line is the median
ratio of the warm repeats. Target: stage >= 0.85x baseline.

Measured 2026-11-22 on the 2-core dev box while other jobs kept its load average at 10-20 (so noisy: the same
baseline took 3.9-9.7 s), 32 MB, 8 partitions, 2 threads. Three invocations: median warm ratio 0.94x (load
2.7 at the start, 7.7 at the end; warm repeats 0.52x, 1.29x, 1.05x, 0.83x), 0.74x and 0.60x (load 10-20); an
earlier best-of-each version of the script gave 0.74x, 0.90x and 0.62x. Cold first repeats: 0.36x-0.60x.
The stage's own per-partition work, run in one process without Ray on 8 MB, took less wall time than
`encode_ordinary_batch(num_threads=1)` on the same texts (ratio 1.17-1.43x, batches of 256 documents allocate
less than one batch of all), so the gap measured here is Ray's processes (driver, raylet, GCS, two workers)
competing for two oversubscribed cores. The figure that counts needs a quiet machine with more cores.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import ray

from pipeline import storage, tokenize
from pipeline.config import Config
from pipeline.runner import open_run
from pipeline.tokenizer import get_encoding


def stdlib_documents(target_bytes: int, doc_bytes: int = 4000) -> list[str]:
    """Documents of ~doc_bytes built from the stdlib's triple-quoted strings, until target_bytes."""
    pieces = []
    for path in sorted(Path(re.__file__).parent.rglob("*.py")):
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        pieces += [s.strip() for s in re.findall(r'"""(.*?)"""', source, re.S) if len(s.strip()) > 40]
    docs, current, total, n = [], [], 0, 0
    while total < target_bytes:
        piece = pieces[n % len(pieces)]
        n += 1
        current.append(piece)
        if sum(len(p) for p in current) >= doc_bytes:
            docs.append("\n\n".join(current))
            total += len(docs[-1].encode())
            current = []
    return docs


def write_docs(run_dir: Path, docs: list[str], partitions: int) -> None:
    rows = [{"doc_id": f"{i:040x}", "text": t} for i, t in enumerate(docs)]
    for p in range(partitions):
        storage.write_parquet(run_dir / "docs" / f"part-{p:05d}.parquet", pa.Table.from_pylist(rows[p::partitions]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=24, help="corpus size in MB of UTF-8 text")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="Ray CPUs for the stage = baseline threads")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    docs = stdlib_documents(int(args.mb * 1e6))
    encoding = get_encoding()
    config = Config()
    config.dedup.enabled = False
    config.tokenize.shard_tokens = 1_000_000
    config.tokenize.val_fraction = 0.005
    ray.init(address="local", num_cpus=args.threads, include_dashboard=False)  # never join another cluster

    baseline_s, stage_s, tokens = [], [], 0
    with tempfile.TemporaryDirectory(prefix="bench-tokenize-") as tmp:
        for repeat in range(args.repeats):
            started = time.perf_counter()
            encoded = encoding.encode_ordinary_batch(docs, num_threads=args.threads)
            baseline_s.append(time.perf_counter() - started)
            tokens = sum(len(t) for t in encoded) + len(encoded)  # + one EOT per document, as in the shards
            del encoded

            run_dir = Path(tmp) / f"run{repeat}"
            write_docs(run_dir, docs, args.partitions)
            ctx = open_run(run_dir, config)
            started = time.perf_counter()
            stats = tokenize.run(ctx)
            stage_s.append(time.perf_counter() - started)
            assert stats["info"]["tokens"] == tokens, (stats["info"]["tokens"], tokens)
            shutil.rmtree(run_dir)

    mb = sum(len(d.encode()) for d in docs) / 1e6
    print(f"corpus: {len(docs)} documents, {mb:.1f} MB, {tokens:,} tokens (EOTs included); "
          f"{args.threads} threads; {args.partitions} partitions")
    print(f"| repeat | encode_ordinary_batch in memory, {args.threads} threads: s, tokens/s "
          f"| tokenize stage Parquet -> shards, {args.threads} Ray CPUs: s, tokens/s | stage vs baseline |")
    print("|---|---|---|---|")
    for repeat, (base, stage) in enumerate(zip(baseline_s, stage_s), 1):
        label = f"{repeat} (cold workers)" if repeat == 1 else str(repeat)
        print(f"| {label} | {base:.2f} s, {tokens / base:,.0f} | {stage:.2f} s, {tokens / stage:,.0f} | {base / stage:.2f}x |")
    warm = [b / s for b, s in zip(baseline_s[1:], stage_s[1:])]
    if warm:
        print(f"median warm ratio: {statistics.median(warm):.2f}x (target >= 0.85x)")

if __name__ == "__main__":
    main()
