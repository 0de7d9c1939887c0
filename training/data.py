"""Training batches from the token shards: (B, T+1) windows, a disjoint deterministic stream per worker.

    windows = TokenWindows(run_dir / "tokens" / "manifest.json", "train", seq_len=1024, seed=1337)
    batch = windows.batch(start, 8)      # int64 tensor (8, 1025): inputs batch[:, :-1], targets batch[:, 1:]

A split's shards, in manifest order, are one token stream (documents are already separated by
<|endoftext|>). The stream is cut into N = (tokens - 1) // T windows of T+1 tokens that start every T tokens,
so each token is predicted exactly once per epoch and windows cross shard boundaries freely.

Every window has a global index g = 0, 1, 2, ... over an endless sequence of epochs: epoch g // N visits the
N windows in a random order drawn from (seed, epoch) for the train split, in stream order for val. Training
keeps one integer, `position` (windows consumed by all workers together): at each micro-step worker r of W
takes the B windows `position + r*B ...`, then every worker adds W*B. Workers therefore never share a window,
the stream is the same on every run, and a checkpoint that stores `position` resumes it exactly, even
with a different number of workers.

Opening a split validates every shard (header magic, version, file size: pipeline.shards.read_header) and
checks its token count against the manifest, so a truncated or swapped file fails at start-up with its
name, not hours in. The sha256 in the manifest is not recomputed here: hashing a 9B-token corpus would cost
each worker minutes at every start; `webtext tokenize` wrote and checked it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.shards import ShardError, load_manifest, read_header, read_shard


class TokenWindows:
    """One split of the manifest as an endless, deterministic sequence of (T+1)-token windows."""

    def __init__(self, manifest_path: str | Path, split: str, seq_len: int, seed: int, shuffle: bool):
        self.manifest = load_manifest(manifest_path)
        self.split, self.seq_len, self.seed, self.shuffle = split, seq_len, seed, shuffle
        self.shards = []
        for info, path in zip(
            [s for s in self.manifest.shards if s.split == split], self.manifest.shard_paths(split)
        ):
            count = read_header(path)
            if count != info.tokens:
                raise ShardError(
                    f"{path}: holds {count} tokens but {manifest_path} lists {info.tokens}; "
                    f"the tokens/ folder is inconsistent, rerun `webtext tokenize`"
                )
            if count:
                self.shards.append(read_shard(path))
        self.starts = np.cumsum([0] + [len(s) for s in self.shards])  # stream offset of each shard
        self.tokens = int(self.starts[-1])
        self.num_windows = max(self.tokens - 1, 0) // seq_len
        self._epoch, self._order = -1, None

    def _window_start(self, g: int) -> int:
        """Stream offset of global window g."""
        epoch, k = divmod(g, self.num_windows)
        if self.shuffle:
            if epoch != self._epoch:
                self._epoch = epoch
                self._order = np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)
            k = int(self._order[k])
        return k * self.seq_len

    def read(self, start: int, length: int) -> np.ndarray:
        """`length` tokens of the stream from offset `start`, joined across shard boundaries."""
        parts = []
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        while length > 0:
            offset = start - int(self.starts[shard])
            piece = self.shards[shard][offset : offset + length]
            parts.append(piece)
            start, length, shard = start + len(piece), length - len(piece), shard + 1
        return np.concatenate(parts) if len(parts) > 1 else np.asarray(parts[0])

    def window(self, g: int) -> np.ndarray:
        return self.read(self._window_start(g), self.seq_len + 1)

    def batch(self, start: int, count: int) -> torch.Tensor:
        """Windows start .. start+count-1 as an int64 tensor (count, T+1)."""
        rows = np.stack([self.window(g) for g in range(start, start + count)]).astype(np.int64)
        return torch.from_numpy(rows)


def open_train(manifest_path: str | Path, seq_len: int, seed: int) -> TokenWindows:
    windows = TokenWindows(manifest_path, "train", seq_len, seed, shuffle=True)
    if windows.num_windows == 0:
        raise ShardError(
            f"{manifest_path}: the train split has {windows.tokens} tokens, fewer than train.seq_len + 1 = "
            f"{seq_len + 1}; lower train.seq_len or tokenize more documents"
        )
    return windows


def open_val(manifest_path: str | Path, seq_len: int) -> TokenWindows:
    """The val split in stream order; it may hold no window at all (then training reports no val loss)."""
    return TokenWindows(manifest_path, "val", seq_len, seed=0, shuffle=False)


def val_batches(windows: TokenWindows, rank: int, world_size: int, batch_size: int, max_batches: int):
    """This worker's share of the first max_batches x B x W val windows: window i goes to worker i mod W.

    Each val window is read at most once per evaluation, so a val split smaller than the request yields
    fewer (and a last partial) batch rather than counting windows twice.
    """
    mine = list(range(rank, min(windows.num_windows, max_batches * batch_size * world_size), world_size))
    for i in range(0, len(mine), batch_size):
        rows = [windows.window(g) for g in mine[i : i + batch_size]]
        yield torch.from_numpy(np.stack(rows).astype(np.int64))
