"""MinHash signatures of word n-gram shingles, compiled: equal to datasketch's, many times faster.

    sigs = signatures([normalize(t) for t in texts], 5, permutations(256, seed=1))   # (n, 256) uint32

Row i equals `datasketch.MinHash(num_perm, seed)` updated with every `shingles(normalize(texts[i]), ngram)`
(datasketch >= 2.0, its default "affine32" scheme; tests/test_dedup.py checks it):

1. each shingle is hashed with `datasketch.hashfunc.sha1_hash32`: the first 4 bytes of its SHA-1 digest,
   read little-endian;
2. that hash is pre-mixed with the 32-bit MurmurHash3 finalizer;
3. permutation k maps it to `a[k] * h + b[k] mod 2^32`, with `a` odd and `a`, `b` drawn from
   `np.random.RandomState(seed)` exactly as datasketch draws them;
4. the signature keeps the minimum over shingles per permutation (2^32 - 1 where there is no shingle).

datasketch's `update` runs this in Python and numpy calls per shingle, and `update_batch` still hashes each
shingle in a Python loop (hashlib costs ~0.6 us a call on our machines). Here all of it, SHA-1 included,
runs in one numba-compiled loop over a batch of documents, with no Python object per shingle; the
measured speedups are in benchmarks/dedup.py.

`band_keys(sigs, bands, rows)` gives each band of a signature a 128-bit key (the first 16 bytes of the SHA-1
of the band's values, computed by the same compiled SHA-1), so LSH buckets compare 16 bytes, whatever
`rows` is; equal bands have equal keys, and unequal ones collide with probability 2^-128.

Text rule (the same for the exact-duplicate hash in pipeline/dedup.py): `normalize` applies Unicode NFKC,
lowercases, and collapses every run of whitespace into one space (no leading or trailing space);
punctuation is kept. Words are the space-separated pieces of the normalized text; a shingle is `ngram`
consecutive words joined by one space, UTF-8 encoded. A document with fewer than `ngram` words has one
shingle, its whole normalized text; an empty document has none (its signature is all 2^32 - 1, and
pipeline/dedup.py leaves it to the exact hash).
"""

from __future__ import annotations

import unicodedata

import numba
import numpy as np

_MASK32 = np.uint64(0xFFFFFFFF)
_SPACE = 32


def normalize(text: str) -> str:
    """NFKC, lowercase, whitespace runs -> one space, trimmed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def shingles(normalized: str, ngram: int) -> list[bytes]:
    """The shingles of a normalized text, in order (the reference definition the compiled loop follows)."""
    words = normalized.split(" ") if normalized else []
    if len(words) < ngram:
        return [normalized.encode()] if words else []
    return [" ".join(words[i : i + ngram]).encode() for i in range(len(words) - ngram + 1)]


def permutations(num_perm: int, seed: int) -> np.ndarray:
    """The (2, num_perm) uint32 parameters (a, b) that `datasketch.MinHash(num_perm, seed)` draws."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return np.array([a, b])


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands, 2) uint64: the first 16 bytes of SHA-1(sig[band * rows:(band + 1) * rows].tobytes()), read
    as two big-endian words."""
    data = np.ascontiguousarray(sigs, dtype="<u4").view(np.uint8).reshape(-1)
    keys = np.empty((len(sigs), bands, 2), dtype=np.uint64)
    _band_keys(data, sigs.shape[1] * 4 if len(sigs) else 0, rows * 4, keys)
    return keys


def signatures(normalized_texts: list[str], ngram: int, perms: np.ndarray) -> np.ndarray:
    """(len(texts), num_perm) uint32 MinHash signatures of already normalized texts."""
    encoded = [t.encode() for t in normalized_texts]
    bounds = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=bounds[1:])
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    out = np.empty((len(encoded), perms.shape[1]), dtype=np.uint32)
    _signatures(data, bounds, ngram, perms[0], perms[1], out)
    return out


@numba.njit(cache=True, inline="always")
def _rotl(x, n):
    return ((x << np.uint64(n)) | (x >> np.uint64(32 - n))) & _MASK32


@numba.njit(cache=True)
def _sha1(data, start, end, w):
    """The SHA-1 digest of bytes(data[start:end]) as five 32-bit words; `w` is an 80-word scratch array."""
    length = end - start
    h0, h1, h2 = np.uint64(0x67452301), np.uint64(0xEFCDAB89), np.uint64(0x98BADCFE)
    h3, h4 = np.uint64(0x10325476), np.uint64(0xC3D2E1F0)
    num_blocks = (length + 8) // 64 + 1  # message + 0x80 byte + 64-bit length, padded to 64 bytes
    for block in range(num_blocks):
        for i in range(16):
            pos = block * 64 + i * 4
            if pos + 4 <= length:
                p = start + pos
                w[i] = (
                    (np.uint64(data[p]) << np.uint64(24))
                    | (np.uint64(data[p + 1]) << np.uint64(16))
                    | (np.uint64(data[p + 2]) << np.uint64(8))
                    | np.uint64(data[p + 3])
                )
            else:
                word = np.uint64(0)
                for j in range(pos, pos + 4):
                    byte = np.uint64(data[start + j]) if j < length else np.uint64(0x80 if j == length else 0)
                    word = (word << np.uint64(8)) | byte
                w[i] = word
        if block == num_blocks - 1:
            bits = np.uint64(length) * np.uint64(8)
            w[14] = bits >> np.uint64(32)
            w[15] = bits & _MASK32
        for t in range(16, 80):
            w[t] = _rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1)
        a, b, c, d, e = h0, h1, h2, h3, h4
        for t in range(0, 20):
            temp = (_rotl(a, 5) + (d ^ (b & (c ^ d))) + e + np.uint64(0x5A827999) + w[t]) & _MASK32
            e, d, c, b, a = d, c, _rotl(b, 30), a, temp
        for t in range(20, 40):
            temp = (_rotl(a, 5) + (b ^ c ^ d) + e + np.uint64(0x6ED9EBA1) + w[t]) & _MASK32
            e, d, c, b, a = d, c, _rotl(b, 30), a, temp
        for t in range(40, 60):
            temp = (_rotl(a, 5) + ((b & c) | (d & (b | c))) + e + np.uint64(0x8F1BBCDC) + w[t]) & _MASK32
            e, d, c, b, a = d, c, _rotl(b, 30), a, temp
        for t in range(60, 80):
            temp = (_rotl(a, 5) + (b ^ c ^ d) + e + np.uint64(0xCA62C1D6) + w[t]) & _MASK32
            e, d, c, b, a = d, c, _rotl(b, 30), a, temp
        h0 = (h0 + a) & _MASK32
        h1 = (h1 + b) & _MASK32
        h2 = (h2 + c) & _MASK32
        h3 = (h3 + d) & _MASK32
        h4 = (h4 + e) & _MASK32
    return h0, h1, h2, h3, h4


@numba.njit(cache=True, inline="always")
def _sha1_hash32(data, start, end, w):
    """datasketch's sha1_hash32: the digest's first 4 bytes (h0, big-endian) read little-endian."""
    h0 = _sha1(data, start, end, w)[0]
    return (
        ((h0 & np.uint64(0xFF)) << np.uint64(24))
        | (((h0 >> np.uint64(8)) & np.uint64(0xFF)) << np.uint64(16))
        | (((h0 >> np.uint64(16)) & np.uint64(0xFF)) << np.uint64(8))
        | (h0 >> np.uint64(24))
    )


@numba.njit(cache=True, inline="always")
def _fmix32(h):
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & _MASK32
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & _MASK32
    return h ^ (h >> np.uint64(16))


@numba.njit(cache=True)
def _signatures(data, bounds, ngram, a, b, out):
    """out[d] = signature of the text data[bounds[d]:bounds[d + 1]] (normalized, UTF-8)."""
    num_perm = a.shape[0]
    w = np.empty(80, dtype=np.uint64)
    mins = np.empty(num_perm, dtype=np.uint32)
    for doc in range(bounds.shape[0] - 1):
        start, end = bounds[doc], bounds[doc + 1]
        mins[:] = np.uint32(0xFFFFFFFF)
        if end > start:
            word_starts = np.empty(end - start + 1, dtype=np.int64)
            word_ends = np.empty(end - start + 1, dtype=np.int64)
            num_words = 0
            word_starts[0] = start
            for i in range(start, end):
                if data[i] == _SPACE:
                    word_ends[num_words] = i
                    num_words += 1
                    word_starts[num_words] = i + 1
            word_ends[num_words] = end
            num_words += 1
            num_shingles = max(num_words - ngram + 1, 1)
            last_word = min(ngram, num_words) - 1
            for s in range(num_shingles):
                h = np.uint32(_fmix32(_sha1_hash32(data, word_starts[s], word_ends[s + last_word], w)))
                for k in range(num_perm):
                    mins[k] = min(mins[k], np.uint32(a[k] * h + b[k]))  # uint32: wraps mod 2^32
        out[doc, :] = mins


@numba.njit(cache=True)
def _band_keys(data, sig_bytes, band_bytes, keys):
    w = np.empty(80, dtype=np.uint64)
    for doc in range(keys.shape[0]):
        for band in range(keys.shape[1]):
            start = doc * sig_bytes + band * band_bytes
            h0, h1, h2, h3, _ = _sha1(data, start, start + band_bytes, w)
            keys[doc, band, 0] = (h0 << np.uint64(32)) | h1
            keys[doc, band, 1] = (h2 << np.uint64(32)) | h3
