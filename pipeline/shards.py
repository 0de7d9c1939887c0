"""Token shards in llm.c's format, and the manifest that lists them: the hand-off from pipeline to training.

A shard file is a header of 256 little-endian int32 followed by the tokens as little-endian uint16:

    header[0] = 20240520   magic (llm.c's data format)
    header[1] = 1          version (1 = uint16 tokens)
    header[2] = N          number of tokens that follow
    header[3:] = 0
    then N * uint16        token ids; every document is preceded by <|endoftext|> (50256)

So a valid file is exactly 1024 + 2 * N bytes. `read_shard` checks magic, version and that size, and
memory-maps the tokens (no copy; training slices windows straight out of the page cache).

`tokens/manifest.json` (written by pipeline/tokenize.py, read here by `load_manifest`):

    {"schema_version": 1, "tokenizer": "r50k_base", "vocab_size": 50257, "eot_token": 50256,
     "ranks_sha256": "306cd27f...", "dtype": "uint16",
     "header": {"int32_count": 256, "bytes": 1024, "magic": 20240520, "version": 1, "count_index": 2},
     "shards": [{"path": "train-00000.bin", "split": "train", "tokens": 100000000, "documents": 81234,
                 "sha256": "..."}, ...],
     "totals": {"train": {"shards": 3, "tokens": ..., "documents": ...}, "val": {...}},
     "source": {"dataset": "dedup/docs", "fingerprint": "..."}, "split": {...}}

Shard paths are relative to the manifest's folder, so a tokens/ folder can be moved or copied as a whole.
Usage (training/data.py):

    manifest = load_manifest(run_dir / "tokens" / "manifest.json")
    for path in manifest.shard_paths("train"):
        tokens = read_shard(path)          # np.memmap of uint16
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline import storage

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
MANIFEST_SCHEMA_VERSION = 1
SPLITS = ("train", "val")


class ShardError(ValueError):
    """A shard or manifest that cannot be used; the message names the file and the problem."""


def _checked(path: Path, tokens: np.ndarray) -> np.ndarray:
    """`tokens` as uint16, after checking every id fits (a wider vocabulary must not wrap around silently)."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ShardError(f"{path}: tokens must be a 1-D integer array, got {tokens.dtype} of shape {tokens.shape}")
    if tokens.dtype != TOKEN_DTYPE and tokens.size:
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high > np.iinfo(TOKEN_DTYPE).max:
            raise ShardError(
                f"{path}: token ids must be in [0, 65535] to fit uint16, got range [{low}, {high}]: "
                f"a tokenizer with a larger vocabulary needs a new shard version"
            )
    return tokens.astype(TOKEN_DTYPE, copy=False)


def _header(count: int) -> bytes:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, count
    return header.tobytes()


class ShardWriter:
    """Stream tokens into one shard file without holding it in memory; the file appears atomically on exit.

        with ShardWriter(path) as writer:
            writer.write(chunk)        # any number of times; writer.tokens counts them
    """

    def __init__(self, path: str | storage.AnyPath):
        self.path = storage.location(path)
        self.tokens = 0

    def __enter__(self) -> ShardWriter:
        self._atomic = storage.atomic_path(self.path)
        self._file = open(self._atomic.__enter__(), "wb")
        self._file.write(_header(0))
        return self

    def write(self, tokens: np.ndarray) -> None:
        tokens = _checked(self.path, tokens)
        if self.tokens + tokens.size > np.iinfo("<i4").max:
            raise ShardError(f"{self.path}: more than 2**31-1 tokens do not fit the int32 header count")
        tokens.tofile(self._file)
        self.tokens += tokens.size

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self._file.seek(0)
            self._file.write(_header(self.tokens))
        self._file.close()
        self._atomic.__exit__(*exc)


def write_shard(path: str | Path, tokens: np.ndarray) -> None:
    """Write `tokens` (any integer array with ids in [0, 65535]) as one shard file, atomically."""
    with ShardWriter(path) as writer:
        writer.write(tokens)


def read_header(path: str | storage.AnyPath) -> int:
    """Validate the shard's header and size; return its token count."""
    path = storage.location(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ShardError(f"{path}: shard file not found; rerun `webtext tokenize` for this run") from None
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: truncated: {size} bytes is shorter than the {HEADER_BYTES}-byte header")
    with storage.open_read(path) as f:
        header = np.frombuffer(f.read(HEADER_BYTES), dtype="<i4")
    if header[0] != MAGIC:
        raise ShardError(f"{path}: bad magic {int(header[0])}, expected {MAGIC}: not an llm.c token shard")
    if header[1] != VERSION:
        raise ShardError(f"{path}: unsupported version {int(header[1])}, this reader knows version {VERSION}")
    count = int(header[2])
    expected = HEADER_BYTES + count * TOKEN_DTYPE.itemsize
    if count < 0 or size != expected:
        raise ShardError(
            f"{path}: file is {size} bytes but the header says {count} tokens ({expected} bytes): "
            f"{'truncated' if size < expected else 'trailing bytes'}; rerun `webtext tokenize`"
        )
    return count


def read_shard(path: str | storage.AnyPath) -> np.ndarray:
    """The shard's tokens as a read-only np.memmap of uint16, after validating header and size (a shard on an
    object store is mapped from a local copy: storage.local_copy)."""
    count = read_header(path)
    if count == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(storage.local_copy(storage.location(path)), dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES,
                     shape=(count,))


@dataclass
class ShardInfo:
    path: str  # relative to the manifest's folder
    split: str  # "train" or "val"
    tokens: int
    documents: int
    sha256: str


@dataclass
class ShardManifest:
    tokenizer: str
    vocab_size: int
    eot_token: int
    ranks_sha256: str
    shards: list[ShardInfo]
    source: dict  # {"dataset": "dedup/docs", "fingerprint": ...}: what the shards were made from
    split: dict  # how documents were assigned to train/val (see pipeline/tokenize.py)
    schema_version: int = MANIFEST_SCHEMA_VERSION
    dtype: str = "uint16"
    header: dict = field(
        default_factory=lambda: {
            "int32_count": HEADER_INTS, "bytes": HEADER_BYTES, "magic": MAGIC, "version": VERSION, "count_index": 2
        }
    )
    root: Path | None = None  # the manifest's folder; set by load_manifest, not stored

    def shard_paths(self, split: str) -> list[Path]:
        """Absolute paths of the split's shards, in order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if self.root is None:
            raise ValueError("manifest has no root folder; load it with load_manifest(path)")
        return [self.root / s.path for s in self.shards if s.split == split]

    def totals(self) -> dict:
        return {
            split: {
                "shards": sum(1 for s in self.shards if s.split == split),
                "tokens": sum(s.tokens for s in self.shards if s.split == split),
                "documents": sum(s.documents for s in self.shards if s.split == split),
            }
            for split in SPLITS
        }

    def fingerprint(self) -> str:
        """Identity of the training data: every shard's name, split and sha256 (what checkpoints are keyed on)."""
        text = json.dumps([[s.path, s.split, s.sha256] for s in self.shards])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("root")
        data["totals"] = self.totals()
        return data


def write_manifest(path: str | Path, manifest: ShardManifest) -> None:
    storage.write_json(path, manifest.to_json())


def load_manifest(path: str | storage.AnyPath) -> ShardManifest:
    """Read `manifest.json`; shard paths resolve against its folder."""
    path = storage.location(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path}: manifest not found; run `webtext tokenize` for this run first") from None
    except json.JSONDecodeError as err:
        raise ShardError(f"{path}: not valid JSON ({err}); rerun `webtext tokenize`") from None
    if data.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise ShardError(
            f"{path}: schema_version {data.get('schema_version')!r}, this reader knows {MANIFEST_SCHEMA_VERSION}"
        )
    data.pop("totals", None)
    try:
        shards = [ShardInfo(**s) for s in data.pop("shards")]
        manifest = ShardManifest(shards=shards, **data, root=path.parent)
    except (KeyError, TypeError) as err:
        raise ShardError(f"{path}: malformed manifest ({err}); rerun `webtext tokenize`") from None
    for s in manifest.shards:
        if s.split not in SPLITS:
            raise ShardError(f"{path}: shard {s.path} has unknown split {s.split!r}; expected one of {SPLITS}")
    return manifest
