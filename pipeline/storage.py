"""Files every stage writes: atomic replacement, Parquet with fixed settings, checksums.

Run directories are local paths; on a cluster they must be on a disk every node mounts at the same path
(NFS, a FUSE-mounted bucket). A write goes to a temporary name in the destination folder, is fsynced and
renamed over the target, so a reader never sees half a file and a killed task leaves at most a `.tmp-*`
file that the next attempt overwrites.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_OPTIONS = dict(compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True)


@contextlib.contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary path beside `target`; on success fsync it and rename it onto `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: str | Path, obj) -> None:
    write_bytes(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_parquet(target: str | Path, table: pa.Table) -> None:
    """Write `table` atomically; same table -> byte-identical file."""
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, **PARQUET_OPTIONS)


def read_parquet(paths: list[str | Path] | str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read one file or concatenate several, in the order given."""
    if isinstance(paths, (str, Path)):
        return pq.read_table(paths, columns=columns)
    tables = [pq.read_table(p, columns=columns) for p in paths]
    return pa.concat_tables(tables) if tables else None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process and on every machine (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
