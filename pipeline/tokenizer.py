"""GPT-2's BPE tokenizer (tiktoken's `r50k_base`), loaded offline from the ranks file shipped in the package.

tiktoken downloads `r50k_base.tiktoken` from OpenAI's blob store and caches it under
`$TIKTOKEN_CACHE_DIR/<sha1 hex of the blob URL>`. Machines running webtext have no internet, so the package
ships the file (`pipeline/assets/r50k_base.tiktoken`, the GPT-2 ranks as shipped in openai-whisper, MIT) and
`get_encoding()` copies it into that cache slot first. tiktoken then loads it and checks its sha256 itself.

We check the sha256 before seeding too: when a cached file does not match, tiktoken deletes it and tries to
download, which here would hang on the network instead of saying the asset is broken.

The cache is a per-user folder, `$XDG_CACHE_HOME/webtext/tiktoken` (default `~/.cache/webtext/tiktoken`),
never the package folder (which may be read-only). A `TIKTOKEN_CACHE_DIR` already set is used as it is.

    from pipeline.tokenizer import get_encoding, EOT_TOKEN
    get_encoding().encode_ordinary("Hello world")   # [15496, 995]
"""

from __future__ import annotations

import functools
import hashlib
import os
from importlib import resources
from pathlib import Path

import tiktoken

from pipeline import storage

ENCODING_NAME = "r50k_base"
RANKS_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
VOCAB_SIZE = 50257
EOT_TOKEN = 50256  # <|endoftext|>, the only special token

ASSET = resources.files("pipeline") / "assets" / "r50k_base.tiktoken"


class TokenizerError(RuntimeError):
    """The tokenizer cannot be loaded offline; the message names the file and what to do."""


def default_cache_dir() -> Path:
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return Path(os.environ["TIKTOKEN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "webtext" / "tiktoken"


def seed_cache(asset: Path, cache_dir: Path) -> Path:
    """Put the verified ranks file at the cache path tiktoken looks up for RANKS_URL; return that path."""
    try:
        data = Path(asset).read_bytes()
    except FileNotFoundError:
        raise TokenizerError(
            f"{asset}: tokenizer ranks file missing; reinstall webtext (it ships as package data) "
            f"or copy r50k_base.tiktoken (sha256 {RANKS_SHA256}) there"
        ) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != RANKS_SHA256:
        raise TokenizerError(
            f"{asset}: tokenizer ranks file corrupt: sha256 {actual}, expected {RANKS_SHA256}; reinstall webtext"
        )
    cached = Path(cache_dir) / hashlib.sha1(RANKS_URL.encode()).hexdigest()
    try:
        if not cached.exists() or hashlib.sha256(cached.read_bytes()).hexdigest() != RANKS_SHA256:
            storage.write_bytes(cached, data)
    except OSError as err:
        raise TokenizerError(
            f"{cached}: cannot write tiktoken's cache ({err}); set TIKTOKEN_CACHE_DIR to a writable folder"
        ) from None
    return cached


@functools.cache
def get_encoding() -> tiktoken.Encoding:
    """The r50k_base encoding, once per process (Ray workers each load their own)."""
    cache_dir = default_cache_dir()
    with resources.as_file(ASSET) as asset:
        seed_cache(asset, cache_dir)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    encoding = tiktoken.get_encoding(ENCODING_NAME)
    assert encoding.n_vocab == VOCAB_SIZE and encoding.eot_token == EOT_TOKEN, "unexpected r50k_base vocabulary"
    return encoding
