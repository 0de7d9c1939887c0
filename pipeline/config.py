"""One typed configuration for a whole webtext run.

A run is configured by a TOML file with one table per section below (`[reddit]`, `[crawl]`, ...). Every
field has a default, so an empty file is a valid configuration. Overrides come from the command line:

    webtext reddit --run-dir runs/x --config jobs/configs/local.toml --set reddit.min_score=5

The whole configuration is checked when it is loaded, before any stage runs and before the run's frozen
`config.toml` is written: an unknown section or key, a value of the wrong type, a value outside its range
(`Range` annotations), a choice outside its set (`Literal`) or a broken rule between fields (`check`
methods) is an error that names the key and where the value came from. So a refused `--set` leaves the
run exactly as it was. Each stage fingerprints the sections it reads, so a changed value reruns what it
touches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and key to fix."""


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field: `Annotated[float, Range(ge=0)]`; None leaves that side open."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def check(self, value, where: str) -> None:
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt)
              and not (isinstance(value, float) and math.isnan(value)))
        if not ok:
            raise ConfigError(f"{where}: {value!r} is outside {self}")

    def __str__(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else str(x)

        low = f"[{num(self.ge)}" if self.ge is not None else f"({num(self.gt)}" if self.gt is not None else "(-inf"
        high = f"{num(self.le)}]" if self.le is not None else f"{num(self.lt)})" if self.lt is not None else "inf)"
        return f"{low}, {high}"


NonNegative = Range(ge=0)
Positive = Range(gt=0)
AtLeastOne = Range(ge=1)
Probability = Range(ge=0, le=1)
Threshold = Range(gt=0, le=1)

# The GPT-2 sizes (training/model.py builds them): the paper's four and a tiny one for CPU dry runs.
ModelName = Literal["gpt2-tiny", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]
MODEL_DIMS = {
    "gpt2-tiny": dict(block_size=256, n_layer=2, n_head=2, n_embd=64),
    "gpt2": dict(block_size=1024, n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(block_size=1024, n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(block_size=1024, n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(block_size=1024, n_layer=48, n_head=25, n_embd=1600),
}
assert tuple(MODEL_DIMS) == typing.get_args(ModelName)

# The evaluation tasks (training/evaluation/tasks.py reads and scores each).
TaskName = Literal["lambada", "hellaswag", "wikitext", "text"]

# Junk heuristics of the extract stage, by reason name (pipeline/extract/heuristics.py implements each).
Heuristic = Literal[
    "junk_symbols", "junk_alpha_words", "junk_repeated_lines", "junk_no_punct", "junk_short_words", "junk_long_words"
]


@dataclass
class RayConfig:
    # Ray cluster address; "" means $RAY_ADDRESS if set, else start a local instance sized to the machine.
    address: str = ""
    # CPUs for a local instance; 0 means all cores. Ignored when joining a cluster.
    num_cpus: Annotated[int, NonNegative] = 0


@dataclass
class RedditConfig:
    # A submission is kept when its own score is >= this (per submission, see pipeline/reddit.py).
    min_score: int = 3
    # "drop" removes over_18 submissions; "keep" keeps them (their flag is carried in the output).
    nsfw: Literal["drop", "keep"] = "drop"
    # Hosts whose links are dropped; a rule matches the host and every subdomain of it.
    blocked_domains: list[str] = field(
        default_factory=lambda: [
            "wikipedia.org", "wikimedia.org", "wikidata.org", "reddit.com", "redd.it", "redditmedia.com",
            "redditstatic.com", "reddituploads.com", "imgur.com", "youtube.com", "youtu.be", "gfycat.com",
            "giphy.com", "redgifs.com", "twimg.com", "pic.twitter.com", "video.twimg.com", "pbs.twimg.com",
            "vimeo.com", "streamable.com", "flickr.com", "instagram.com", "tiktok.com", "twitch.tv",
        ]
    )
    # File extensions (lowercase, no dot) of URL paths that are not HTML pages.
    blocked_extensions: list[str] = field(
        default_factory=lambda: [
            "jpg", "jpeg", "png", "gif", "gifv", "webp", "bmp", "svg", "tif", "tiff", "ico", "heic",
            "mp4", "webm", "mov", "avi", "mkv", "wmv", "flv", "m4v", "mpg", "mpeg",
            "mp3", "wav", "ogg", "flac", "m4a", "aac", "opus",
            "zip", "gz", "tgz", "bz2", "xz", "7z", "rar", "tar", "zst",
            "exe", "msi", "dmg", "apk", "deb", "rpm", "bin", "iso", "jar",
            "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx",
        ]
    )
    # Query parameters removed during URL normalization; a trailing "*" matches a prefix.
    tracking_params: list[str] = field(
        default_factory=lambda: [
            "utm_*", "fbclid", "gclid", "dclid", "gclsrc", "msclkid", "mc_cid", "mc_eid", "yclid", "igshid",
            "_hsenc", "_hsmi", "mkt_tok", "ref_src", "spm",
        ]
    )
    # Number of host-hash partitions of urls/ (each crawl task takes one).
    num_partitions: Annotated[int, AtLeastOne] = 16
    # Longest URL kept, in characters; longer ones are dropped as url_too_long.
    max_url_length: Annotated[int, AtLeastOne] = 2048


@dataclass
class ArchiveConfig:
    # CDX endpoint asked for the captures of a URL: a pywb collection's (http://HOST/COLL/cdx), Common Crawl's
    # index server (https://index.commoncrawl.org/CC-MAIN-2016-50-index) or the Wayback Machine's
    # (https://web.archive.org/cdx/search/cdx).
    cdx_url: str = ""
    # Its answer format: "pywb" (pywb and Common Crawl: output=json, one JSON object per line) or "wayback"
    # (the Wayback Machine's CDX server: output=json, an array of rows after a header row).
    dialect: Literal["pywb", "wayback"] = "pywb"
    # Raw captures as replay URLs {replay_url}{timestamp}id_/{url} (pywb: http://HOST/COLL/, Wayback:
    # https://web.archive.org/web/). Set this or warc_url.
    replay_url: str = ""
    # Raw captures as byte ranges of {warc_url}{filename} from the CDX row's filename, offset and length (Common
    # Crawl: https://data.commoncrawl.org/). Relative to cdx_url when it has no host. Set this or replay_url.
    warc_url: str = ""
    # Captures farther than this from the submission's created_utc are not used.
    max_distance_days: Annotated[float, NonNegative] = 365.0
    # Captures asked of the CDX per URL, closest to the submission time first.
    max_captures: Annotated[int, AtLeastOne] = 25
    # Requests in flight at once to one archive host, per crawl task (the archive sees up to tasks x this).
    concurrency: Annotated[int, AtLeastOne] = 4
    # Minimum seconds between two requests to one archive host, per crawl task: after the previous one's
    # start and its end.
    delay_s: Annotated[float, NonNegative] = 0.25
    # Retries after a connection error, 408, 429 or 5xx from an archive host; the first backoff in seconds
    # (doubles each retry, jittered); Retry-After is honoured up to max_retry_after_s, a longer one gives up.
    max_retries: Annotated[int, NonNegative] = 5
    backoff_base_s: Annotated[float, NonNegative] = 2.0
    max_retry_after_s: Annotated[float, NonNegative] = 300.0

    def check(self) -> None:
        if self.cdx_url and bool(self.replay_url) == bool(self.warc_url):
            raise ConfigError(f"crawl.archive.cdx_url={self.cdx_url!r} needs exactly one of crawl.archive.replay_url "
                              f"(replay id_ URLs) and crawl.archive.warc_url (WARC byte ranges)")
        if self.warc_url and self.dialect == "wayback":
            raise ConfigError("crawl.archive.warc_url needs dialect \"pywb\": the Wayback CDX server gives no "
                              "filename, offset and length; use crawl.archive.replay_url with it")


@dataclass
class HostOverride:
    # Minimum seconds between two requests to this host, instead of crawl.per_host_delay_s.
    delay_s: Annotated[float, NonNegative]
    # Keep delay_s even when the host's robots.txt asks for a longer Crawl-delay.
    force: bool = False


@dataclass
class CrawlConfig:
    # Where pages come from: "live" (the web as it is now), "archive" (the capture nearest the submission
    # time, from crawl.archive) or "live_then_archive" (live; the archive when the live fetch finds no host,
    # no connection, no robots.txt answer, 404 or 410).
    source: Literal["live", "archive", "live_then_archive"] = "live"
    # User-Agent sent with every request and matched against robots.txt rules.
    user_agent: str = "webtext-crawler/0.1 (+https://github.com/webtext/webtext)"
    # Requests in flight at once to one host.
    per_host_concurrency: Annotated[int, AtLeastOne] = 1
    # Minimum seconds between two requests to one host: after the previous one's start and its end.
    per_host_delay_s: Annotated[float, NonNegative] = 1.0
    # Extra random delay per request, as a fraction of per_host_delay_s (0.5 = up to +50%).
    delay_jitter: Annotated[float, NonNegative] = 0.5
    # robots.txt Crawl-delay is honoured up to this many seconds.
    max_crawl_delay_s: Annotated[float, NonNegative] = 10.0
    # Hosts crawled concurrently by one task. Politeness caps each host near one request per
    # per_host_delay_s x (1 + delay_jitter / 2) plus its response time, so this sets a task's top speed
    # (benchmarks/crawl.py measures it). Bodies held: up to this x page size.
    hosts_in_flight: Annotated[int, AtLeastOne] = 1024
    # Seconds to establish a TCP (and TLS) connection.
    connect_timeout_s: Annotated[float, Positive] = 10.0
    # Wall-clock seconds for a whole request, headers and body; a slow drip cannot outlast it.
    request_deadline_s: Annotated[float, Positive] = 30.0
    # Largest decoded (decompressed) body kept, in bytes; a larger response is abandoned as too_large.
    max_body_bytes: Annotated[int, AtLeastOne] = 5_000_000
    # Longest URL fetched, input or redirect target, in characters; longer ones are url_too_long.
    max_url_length: Annotated[int, AtLeastOne] = 2048
    # Redirects followed per URL.
    max_redirects: Annotated[int, NonNegative] = 5
    # Retries after a connection error, 408, 429 or 5xx.
    max_retries: Annotated[int, NonNegative] = 3
    # First retry backoff in seconds; doubles each retry, jittered.
    backoff_base_s: Annotated[float, NonNegative] = 1.0
    # Retry-After is honoured up to this many seconds; a longer one gives up the URL.
    max_retry_after_s: Annotated[float, NonNegative] = 60.0
    # A host is given up after this many consecutive failed URLs.
    host_max_failures: Annotated[int, AtLeastOne] = 5
    # Fetch from loopback, private, link-local and reserved addresses. Only the dry-run config sets it.
    allow_private_networks: bool = False
    # Seconds allowed to fetch robots.txt.
    robots_timeout_s: Annotated[float, Positive] = 10.0
    # Largest robots.txt read, in bytes.
    robots_max_bytes: Annotated[int, AtLeastOne] = 500_000
    # Content types accepted (after sniffing).
    content_types: list[str] = field(default_factory=lambda: ["text/html", "application/xhtml+xml"])
    # Per-host politeness instead of per_host_delay_s, e.g. {"news.bbc.co.uk" = {delay_s = 0.25}}; a
    # robots.txt Crawl-delay still wins unless force = true. `webtext crawl --plan` shows what they change.
    host_overrides: dict[str, HostOverride] = field(default_factory=dict)
    # The web archive: its CDX index, how captures are fetched, and its own politeness ([crawl.archive]).
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)

    def check(self) -> None:
        if self.source != "live" and not self.archive.cdx_url:
            raise ConfigError(f"crawl.source={self.source!r} needs crawl.archive.cdx_url (and replay_url or "
                              f"warc_url); see the README's archive section")
        self.archive.check()


@dataclass
class ExtractConfig:
    # Seconds one document may spend in extraction before its worker is killed (extract_timeout).
    timeout_s: Annotated[float, Positive] = 20.0
    # HTML is cut to this many bytes before decoding and extraction.
    max_html_bytes: Annotated[int, AtLeastOne] = 2_000_000
    # newspaper3k is consulted on English pages where trafilatura's text covers less than this share of
    # resiliparse's tokens (pipeline/extract/selector.py); 0 consults it only when trafilatura finds nothing.
    consult_newspaper_below: Annotated[float, Probability] = 0.2
    # Documents shorter than this many GPT-2 tokens are dropped (too_short; OpenWebText used 128).
    min_tokens: Annotated[int, NonNegative] = 128
    # Documents longer than this many characters are dropped (too_long).
    max_chars: Annotated[int, AtLeastOne] = 1_000_000
    # Languages kept (lid.176's codes: ISO 639-1 where there is one); empty keeps all.
    languages: list[str] = field(default_factory=lambda: ["en"])
    # Minimum language-identification probability for a kept language; a text under it on its first 500
    # characters is judged again on its first 2,000.
    min_language_score: Annotated[float, Probability] = 0.5
    # Junk heuristics applied, by reason name (pipeline/extract/heuristics.py); remove a name to turn it off.
    heuristics: list[Heuristic] = field(
        default_factory=lambda: [
            "junk_symbols", "junk_alpha_words", "junk_repeated_lines", "junk_no_punct", "junk_short_words",
            "junk_long_words",
        ]
    )
    # Bounds of those heuristics (pipeline/extract/heuristics.py), set from the distributions that
    # `benchmarks/extract.py --pages` prints: below (or above) every real article's value, past the junk's.
    max_symbol_ratio: Annotated[float, Probability] = 0.1
    min_alpha_words: Annotated[float, Probability] = 0.6
    max_repeated_lines: Annotated[float, Probability] = 0.5
    min_sentence_ends: Annotated[float, Probability] = 0.01
    min_mean_word_length: Annotated[float, NonNegative] = 3.0
    max_mean_word_length: Annotated[float, NonNegative] = 10.0

    def check(self) -> None:
        if self.min_mean_word_length > self.max_mean_word_length:
            raise ConfigError(f"extract.min_mean_word_length={self.min_mean_word_length} is above "
                              f"extract.max_mean_word_length={self.max_mean_word_length}")


@dataclass
class DedupConfig:
    # Off: tokenize reads docs/ directly.
    enabled: bool = True
    # Jaccard similarity (of word n-gram shingle sets) from which two documents are near-duplicates;
    # 0.7 catches articles re-posted with a few percent of words changed (pipeline/dedup.py, S-curve).
    threshold: Annotated[float, Threshold] = 0.7
    # MinHash permutations per signature (256 estimates J within +-0.03; see the S-curves in pipeline/dedup.py).
    num_perm: Annotated[int, AtLeastOne] = 256
    # Word n-gram size of shingles.
    ngram: Annotated[int, AtLeastOne] = 5
    # MinHash seed: signatures equal datasketch.MinHash(num_perm, seed).
    seed: int = 1
    # Bands x rows; both 0 derives them with datasketch's optimal-parameter rule (32 x 8 by default).
    bands: Annotated[int, NonNegative] = 0
    rows: Annotated[int, NonNegative] = 0
    # Weight of false negatives in that rule (false positives get 1 - it). Above 0.5 because verification
    # removes false positives, while a missed pair stays missed.
    false_negative_weight: Annotated[float, Range(gt=0, lt=1)] = 0.9
    # Check each candidate by estimated Jaccard >= threshold before joining clusters.
    verify: bool = True
    # Buckets the band keys are shuffled into (one phase-2 task each); 0 means one per docs partition.
    num_buckets: Annotated[int, NonNegative] = 0

    def check(self) -> None:
        if (self.bands or self.rows) and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise ConfigError(
                f"dedup.bands={self.bands} x dedup.rows={self.rows} must both be >= 1 and use at most "
                f"dedup.num_perm={self.num_perm} values; set both, or both to 0 to derive them from threshold"
            )


@dataclass
class DecontaminateConfig:
    # Off: tokenize reads the dedup output directly.
    enabled: bool = True
    # Eval sets removed from the corpus (GPT-3's appendix C), their files located as [eval] locates them; with
    # eval.data_dir empty, documents pass through unchanged (the stage says so).
    tasks: list[TaskName] = field(default_factory=lambda: ["lambada", "hellaswag", "wikitext"])
    # Words per n-gram (GPT-3: 13; words are lowercased, punctuation stripped, split on whitespace).
    ngram: Annotated[int, AtLeastOne] = 13
    # Characters removed on each side of a matching n-gram; the document is split there.
    context_chars: Annotated[int, NonNegative] = 200
    # Pieces of a split document shorter than this many characters are dropped.
    min_piece_chars: Annotated[int, NonNegative] = 200
    # A document split more than this many times is dropped whole (contaminated).
    max_splits: Annotated[int, NonNegative] = 10
    # Eval n-grams found in more than this many corpus documents are common phrases, not leaks: ignored.
    max_doc_frequency: Annotated[int, AtLeastOne] = 10


@dataclass
class TokenizeConfig:
    # Tokens per shard file (the last shard of each split holds the rest); at most 2**31-1 (int32 header).
    shard_tokens: Annotated[int, Range(ge=1, le=2**31 - 1)] = 100_000_000
    # Fraction of documents (by hash of doc_id) in the validation split; val is never empty (see tokenize.py).
    val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.005


@dataclass
class TrainConfig:
    # Model size (training/model.py): gpt2-tiny (dry runs), gpt2 (124M), gpt2-medium, gpt2-large, gpt2-xl.
    model: ModelName = "gpt2"
    # Ray Train workers, one per GPU with use_gpu (DDP over NCCL); CPU workers use gloo.
    num_workers: Annotated[int, AtLeastOne] = 1
    use_gpu: bool = True
    # Total optimizer steps (with the default 524,288 tokens per step, 10,000 steps are 5.2B tokens).
    max_steps: Annotated[int, AtLeastOne] = 10_000
    # Sequences per worker per micro-step (lower it if a step runs out of GPU memory; gradient accumulation
    # keeps tokens_per_step).
    micro_batch_size: Annotated[int, AtLeastOne] = 16
    # Context length used for training (<= the model's 1024; gpt2-tiny has 256).
    seq_len: Annotated[int, AtLeastOne] = 1024
    # Tokens per optimizer step across all workers; gradient accumulation fills it, so it must be a multiple
    # of micro_batch_size x seq_len x num_workers. 524,288 = 2**19, about GPT-3 small's 0.5M batch.
    tokens_per_step: Annotated[int, AtLeastOne] = 524_288
    # Peak learning rate (GPT-3 small's 6e-4), reached after warmup_steps, then cosine decay to
    # learning_rate x min_lr_ratio at max_steps.
    learning_rate: Annotated[float, Positive] = 6e-4
    min_lr_ratio: Annotated[float, Probability] = 0.1
    warmup_steps: Annotated[int, NonNegative] = 700
    # AdamW decoupled weight decay, applied to matrices only (not biases or LayerNorm gains).
    weight_decay: Annotated[float, NonNegative] = 0.1
    # Gradients are clipped to this global L2 norm.
    grad_clip: Annotated[float, Positive] = 1.0
    # Optimizer steps between checkpoints (the last step always checkpoints) and checkpoints kept on disk.
    checkpoint_every: Annotated[int, AtLeastOne] = 500
    keep_checkpoints: Annotated[int, AtLeastOne] = 2
    # Steps between validation evaluations (and at the last step); val batches per worker per evaluation.
    eval_every: Annotated[int, AtLeastOne] = 250
    eval_batches: Annotated[int, AtLeastOne] = 20
    # torch.compile the model; only on CUDA (on CPU the compile time outweighs a dry run).
    compile: bool = True
    # Seed of the initial weights and of the training data order.
    seed: int = 1337
    # Worker-group restarts Ray Train allows after a failure; each resumes from the latest checkpoint.
    max_failures: Annotated[int, NonNegative] = 3
    # Continuations sampled from <|endoftext|> at the end (train/samples.json), and their length in tokens.
    num_samples: Annotated[int, NonNegative] = 3
    sample_length: Annotated[int, AtLeastOne] = 64
    # Peak FLOP/s of one device for MFU; 0 = the bf16 dense peak of a known GPU (H100/H200/A100), else the
    # fp32 matmul rate measured on the worker at start-up (CPU).
    peak_flops: Annotated[float, NonNegative] = 0.0
    # Fault injection for tests and drills: the last rank hard-exits (os._exit) when it reaches this step,
    # only in an attempt that started from scratch, so the restart from the checkpoint then completes. 0 = off.
    crash_at_step: Annotated[int, NonNegative] = 0
    # Eval tasks scored every eval_every steps beside the val loss (files as [eval] locates them), on the
    # first eval_items items of each, into metrics.jsonl and the loss plot; [] scores none.
    eval_tasks: list[TaskName] = field(default_factory=list)
    eval_items: Annotated[int, AtLeastOne] = 500
    # Checkpoints record the fingerprint of the token manifest they were trained on; a run whose manifest
    # has changed (retokenized or new data) starts from scratch unless this is true, and then says it resumed.
    resume_on_changed_data: bool = False

    def check(self, world_size: int | None = None) -> None:
        block_size = MODEL_DIMS[self.model]["block_size"]
        if self.seq_len > block_size:
            raise ConfigError(f"train.seq_len={self.seq_len} must be at most {block_size}, the context of {self.model}")
        workers = world_size or self.num_workers
        per_micro = self.micro_batch_size * self.seq_len * workers
        if self.tokens_per_step % per_micro:
            raise ConfigError(
                f"train.tokens_per_step={self.tokens_per_step} is not a multiple of micro_batch_size x seq_len x "
                f"workers = {self.micro_batch_size} x {self.seq_len} x {workers} = {per_micro}; set it to a multiple"
            )


@dataclass
class FinetuneConfig:
    # Ray Train workers of `webtext finetune`, one per GPU with use_gpu (DDP over NCCL); CPU workers use gloo.
    num_workers: Annotated[int, AtLeastOne] = 1
    use_gpu: bool = True
    # Peak learning rate (GPT-1's 6.25e-5): linear warmup over warmup_fraction of all steps (GPT-1's 0.2%),
    # then linear decay to 0 at the last step.
    learning_rate: Annotated[float, Positive] = 6.25e-5
    warmup_fraction: Annotated[float, Probability] = 0.002
    # Examples per optimizer step across all workers (GPT-1: 32); a multiple of micro_batch_size x num_workers
    # (examples per worker per micro-step; gradient accumulation fills the rest).
    batch_size: Annotated[int, AtLeastOne] = 32
    micro_batch_size: Annotated[int, AtLeastOne] = 8
    # Passes over the training file (GPT-1: 3); the last partial batch of an epoch is left out.
    epochs: Annotated[int, AtLeastOne] = 3
    # lambda: weight of the auxiliary language-model loss on the same sequences (GPT-1: 0.5); 0 turns it off.
    lm_weight: Annotated[float, NonNegative] = 0.5
    # Dropout on the extract token's final state, before the linear head (GPT-1: 0.1).
    head_dropout: Annotated[float, Range(ge=0, lt=1)] = 0.1
    # AdamW (betas 0.9/0.999, GPT-1's Adam) decoupled weight decay on matrices (GPT-1's w = 0.01), and the
    # global gradient-norm clip.
    weight_decay: Annotated[float, NonNegative] = 0.01
    grad_clip: Annotated[float, Positive] = 1.0
    # Longest sequence in tokens, the three special tokens included; 0 = the model's context. A longer input
    # is cut from the left of its context (never the answer) and counted (training/tasks.py).
    max_len: Annotated[int, NonNegative] = 0
    # Optimizer steps between checkpoints (the last step always checkpoints) and checkpoints kept on disk.
    checkpoint_every: Annotated[int, AtLeastOne] = 500
    keep_checkpoints: Annotated[int, AtLeastOne] = 2
    # Seed of the new weights (head, special-token rows), of the example order and of the dropout masks.
    seed: int = 1337
    # Worker-group restarts Ray Train allows after a failure; each resumes from the latest checkpoint.
    max_failures: Annotated[int, NonNegative] = 3
    # Fault injection, as train.crash_at_step: the last rank hard-exits at this step in an attempt that
    # started from scratch. 0 = off.
    crash_at_step: Annotated[int, NonNegative] = 0

    def check(self, world_size: int | None = None) -> None:
        workers = world_size or self.num_workers
        if self.batch_size % (self.micro_batch_size * workers):
            raise ConfigError(
                f"finetune.batch_size={self.batch_size} is not a multiple of micro_batch_size x workers = "
                f"{self.micro_batch_size} x {workers}; set it to a multiple"
            )


@dataclass
class EvalConfig:
    # Folder of the eval sets; "" = none (the eval stage of `webtext run` is then skipped and says so). A
    # relative path is under the run directory; `webtext eval --data-dir D` (relative to the current
    # directory) overrides it. Nothing is downloaded.
    data_dir: str = ""
    # Each task's file, relative to data_dir or absolute (formats: training/evaluation/tasks.py).
    lambada_file: str = "lambada_test.jsonl"
    hellaswag_file: str = "hellaswag_val.jsonl"
    wikitext_file: str = "wiki.test.tokens"
    text_file: str = ""
    # Few-shot demonstrations are drawn from these files; "" draws them from the evaluated file itself,
    # never the item itself (LAMBADA has no training split; GPT-3 drew from its development set).
    lambada_shots_file: str = ""
    hellaswag_shots_file: str = "hellaswag_train.jsonl"
    # Tasks `webtext run` evaluates after training (`webtext eval` takes --tasks).
    tasks: list[TaskName] = field(default_factory=lambda: ["lambada", "hellaswag", "wikitext"])
    # Demonstrations per item (GPT-3's K; 0 = zero-shot) and items per task (the first N; 0 = all).
    shots: Annotated[int, NonNegative] = 0
    limit: Annotated[int, NonNegative] = 0
    # Seed of the demonstrations drawn for each item.
    seed: int = 1234
    # Tokens each perplexity window predicts; 0 = the model's context (disjoint windows, as the harness).
    stride: Annotated[int, NonNegative] = 0
    # Scoring workers: 0 = one per GPU of the cluster, or, when it has none, one per cpus_per_worker of its
    # CPUs (never more than there are batches); CPUs (torch threads) per CPU worker.
    num_workers: Annotated[int, NonNegative] = 0
    cpus_per_worker: Annotated[int, AtLeastOne] = 1
    # Tokens per forward pass (rows x longest row): speed and memory; scores change only by float rounding.
    batch_tokens: Annotated[int, AtLeastOne] = 16384


@dataclass
class DevwebConfig:
    # Port of the dry-run web server on every 127.0.0.N host; 0 picks a free one when the web is built.
    port: Annotated[int, Range(ge=0, le=65535)] = 0
    # Distinct loopback hosts (127.0.0.2 ..) the pages are spread over.
    hosts: Annotated[int, Range(ge=1, le=250)] = 12
    # Article pages generated (at most the prose available allows, about 130).
    num_articles: Annotated[int, AtLeastOne] = 100
    # Articles that get exact or near-duplicate copies on other hosts (1-3 copies each).
    dup_groups: Annotated[int, NonNegative] = 12
    # Seconds the slow page waits before answering (set above crawl.request_deadline_s).
    slow_seconds: Annotated[float, NonNegative] = 5.0
    seed: int = 0


@dataclass
class StorageConfig:
    # Endpoint of an S3-compatible server (http://host:port); "" uses $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL,
    # else AWS. Credentials are never configured here: they come from the environment or ~/.aws, as for AWS tools.
    endpoint_url: str = ""
    # Region of the buckets; "" uses $AWS_REGION or $AWS_DEFAULT_REGION.
    region: str = ""
    # Attempts per object-store request: throttling (503 SlowDown), 5xx and timeouts are retried with backoff.
    max_attempts: Annotated[int, AtLeastOne] = 5


@dataclass
class Config:
    ray: RayConfig = field(default_factory=RayConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    reddit: RedditConfig = field(default_factory=RedditConfig)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontaminate: DecontaminateConfig = field(default_factory=DecontaminateConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    devweb: DevwebConfig = field(default_factory=DevwebConfig)

    def fingerprint(self, *sections: str) -> str:
        """sha256 of the named sections' values: a stage's outputs are reusable while this is unchanged."""
        data = {name: dataclasses.asdict(getattr(self, name)) for name in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _check_value(value, expected, where: str):
    """Return value converted to `expected` (int widens to float), or raise ConfigError naming `where`."""
    origin = typing.get_origin(expected)
    if origin is Annotated:
        base, *rules = typing.get_args(expected)
        value = _check_value(value, base, where)
        for rule in rules:
            rule.check(value, where)
        return value
    if origin is Literal:
        choices = typing.get_args(expected)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if dataclasses.is_dataclass(expected):
        return _check_table(value, expected, where)
    if origin is dict:
        key_type, item_type = typing.get_args(expected)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {_check_value(k, key_type, f"{where} key {k!r}"): _check_value(v, item_type, f"{where}[{k!r}]")
                for k, v in value.items()}
    if origin is list:
        (item_type,) = typing.get_args(expected)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check_value(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(f"{where}: expected {expected.__name__}, got {type(value).__name__} {value!r}")
    return value


def _check_table(value, table_type: type, where: str):
    """A nested table (a dataclass): an instance is checked field by field, a dict is built into one."""
    hints = typing.get_type_hints(table_type, include_extras=True)
    if isinstance(value, table_type):
        for key, hint in hints.items():
            _check_value(getattr(value, key), hint, f"{where}.{key}")
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {value!r}")
    unknown = [key for key in value if key not in hints]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; it has: {', '.join(hints)}")
    required = [f.name for f in dataclasses.fields(table_type)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [key for key in required if key not in value]
    if missing:
        raise ConfigError(f"{where}: {missing[0]} is required")
    return table_type(**{key: _check_value(v, hints[key], f"{where}.{key}") for key, v in value.items()})


def _apply(config: Config, section: str, key: str, value, source: str) -> None:
    """Set `section.key` (a dotted key reaches into a nested table: crawl.archive.cdx_url), checked."""
    where = f"{source}: {section}.{key}"
    if section not in _SECTION_TYPES:
        raise ConfigError(f"{source}: unknown section [{section}]; known: {', '.join(_SECTION_TYPES)}")
    target, table_type, table = getattr(config, section), _SECTION_TYPES[section], section
    *parents, name = key.split(".")
    for part in parents:
        hint = typing.get_type_hints(table_type, include_extras=True).get(part)
        if hint is None or not dataclasses.is_dataclass(hint):
            raise ConfigError(f"{where}: [{table}] has no table {part!r}")
        target, table_type, table = getattr(target, part), hint, f"{table}.{part}"
    hints = typing.get_type_hints(table_type, include_extras=True)
    if name not in hints:
        raise ConfigError(f"{where}: unknown key; [{table}] has: {', '.join(hints)}")
    setattr(target, name, _check_value(value, hints[name], where))


_SECTION_TYPES = {f.name: f.default_factory for f in dataclasses.fields(Config)}


def parse_override(text: str) -> tuple[str, str, object]:
    """`section.key=value` -> (section, key, value); value is a TOML literal, else a bare string."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set reddit.min_score=5")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the TOML file at `path` (if any), then `--set` overrides, each checked."""
    config = Config()
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: {section} must be a [table], got {values!r}")
            for key, value in values.items():
                _apply(config, section, key, value, str(path))
    for text in overrides:
        section, key, value = parse_override(text)
        _apply(config, section, key, value, "--set")
    try:
        validate(config)
    except ConfigError as err:
        sources = [str(path)] if path is not None else []
        raise ConfigError(f"{' + '.join(sources + (['--set'] if overrides else [])) or 'defaults'}: {err}") from None
    return config


def validate(config: Config) -> None:
    """Every field against its type, range and choices, then each section's rules between fields."""
    for section, section_type in _SECTION_TYPES.items():
        values = getattr(config, section)
        for key, hint in typing.get_type_hints(section_type, include_extras=True).items():
            _check_value(getattr(values, key), hint, f"{section}.{key}")
        if hasattr(values, "check"):
            values.check()


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if dataclasses.is_dataclass(value):
        return _toml_value(dataclasses.asdict(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def _toml_table(name: str, values) -> list[str]:
    """`[name]` with its keys, then its nested tables as `[name.key]` (TOML puts keys before subtables)."""
    lines, nested = [f"[{name}]"], []
    for f in dataclasses.fields(values):
        value = getattr(values, f.name)
        if dataclasses.is_dataclass(value):
            nested += _toml_table(f"{name}.{f.name}", value)
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    return lines + [""] + nested


def dump_config(config: Config) -> str:
    """The whole configuration as TOML that load_config reads back to an equal Config."""
    return "\n".join(line for section in _SECTION_TYPES for line in _toml_table(section, getattr(config, section)))
