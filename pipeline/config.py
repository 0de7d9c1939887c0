"""One typed configuration for a whole webtext run.

A run is configured by a TOML file with one table per section below (`[reddit]`, `[crawl]`, ...). Every
field has a default, so an empty file is a valid configuration. Overrides come from the command line:

    webtext reddit --run-dir runs/x --config jobs/configs/local.toml --set reddit.min_score=5

An unknown section or key, or a value of the wrong type, is an error that names the key and the file.
The resolved configuration is frozen into the run directory as `config.toml`; each stage fingerprints the
sections it depends on so a rerun with a changed configuration never reuses stale outputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and key to fix."""


@dataclass
class RayConfig:
    # Ray cluster address; "" means $RAY_ADDRESS if set, else start a local instance sized to the machine.
    address: str = ""
    # CPUs for a local instance; 0 means all cores. Ignored when joining a cluster.
    num_cpus: int = 0


@dataclass
class RedditConfig:
    # A submission is kept when its own score is >= this (per submission, see pipeline/reddit.py).
    min_score: int = 3
    # "drop" removes over_18 submissions; "keep" keeps them (their flag is carried in the output).
    nsfw: str = "drop"
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
    num_partitions: int = 16
    # Longest URL kept, in characters; longer ones are dropped as invalid.
    max_url_length: int = 2048


@dataclass
class CrawlConfig:
    # User-Agent sent with every request and matched against robots.txt rules.
    user_agent: str = "webtext-crawler/0.1 (+https://github.com/webtext/webtext)"
    # Requests in flight at once to one host.
    per_host_concurrency: int = 1
    # Minimum seconds between two requests to one host: after the previous one's start and its end.
    per_host_delay_s: float = 1.0
    # Extra random delay per request, as a fraction of per_host_delay_s (0.5 = up to +50%).
    delay_jitter: float = 0.5
    # robots.txt Crawl-delay is honoured up to this many seconds.
    max_crawl_delay_s: float = 10.0
    # Hosts crawled concurrently by one task. Politeness caps each host near one request per 1.35 s, so this
    # sets a task's top speed (1024 hosts of 4 pages: ~745 pages/s); 2 tasks of 1024 measured 926-949 pages/s
    # in benchmarks/crawl.py, of 512 207-625. Bodies held: up to this x page size (peak RSS ~270 MB a task).
    hosts_in_flight: int = 1024
    # Seconds to establish a TCP (and TLS) connection.
    connect_timeout_s: float = 10.0
    # Wall-clock seconds for a whole request, headers and body; a slow drip cannot outlast it.
    request_deadline_s: float = 30.0
    # Largest decoded (decompressed) body kept, in bytes; a larger response is abandoned as too_large.
    max_body_bytes: int = 5_000_000
    # Longest URL fetched, input or redirect target, in characters; longer ones are url_too_long.
    max_url_length: int = 2048
    # Redirects followed per URL.
    max_redirects: int = 5
    # Retries after a connection error, 408, 429 or 5xx.
    max_retries: int = 3
    # First retry backoff in seconds; doubles each retry, jittered.
    backoff_base_s: float = 1.0
    # Retry-After is honoured up to this many seconds; a longer one gives up the URL.
    max_retry_after_s: float = 60.0
    # A host is given up after this many consecutive failed URLs.
    host_max_failures: int = 5
    # Fetch from loopback, private, link-local and reserved addresses. Only the dry-run config sets it.
    allow_private_networks: bool = False
    # Seconds allowed to fetch robots.txt.
    robots_timeout_s: float = 10.0
    # Largest robots.txt read, in bytes.
    robots_max_bytes: int = 500_000
    # Content types accepted (after sniffing).
    content_types: list[str] = field(default_factory=lambda: ["text/html", "application/xhtml+xml"])


@dataclass
class ExtractConfig:
    # Seconds one document may spend in extraction before its worker is killed (extract_timeout).
    timeout_s: float = 20.0
    # HTML is cut to this many bytes before decoding and extraction.
    max_html_bytes: int = 2_000_000
    # newspaper3k is consulted when trafilatura and resiliparse agree less than this (token F1 between
    # their texts); 0 never consults it, 1 always does. See pipeline/extract.py for the measurement.
    second_opinion_below: float = 0.7
    # Documents shorter than this many GPT-2 tokens are dropped (too_short; OpenWebText used 128).
    min_tokens: int = 128
    # Documents longer than this many characters are dropped (too_long).
    max_chars: int = 1_000_000
    # Languages kept (lid.176's codes: ISO 639-1 where there is one); empty keeps all.
    languages: list[str] = field(default_factory=lambda: ["en"])
    # Minimum language-identification probability for a kept language; a text under it on its first 500
    # characters is judged again on its first 2,000.
    min_language_score: float = 0.5
    # Junk heuristics applied, by reason name (pipeline/quality.py); remove a name to turn it off.
    heuristics: list[str] = field(
        default_factory=lambda: [
            "junk_symbols", "junk_alpha_words", "junk_repeated_lines", "junk_no_punct", "junk_short_words",
            "junk_long_words",
        ]
    )
    # Bounds of those heuristics (Gopher's and C4's rules, see pipeline/quality.py).
    max_symbol_ratio: float = 0.1
    min_alpha_words: float = 0.8
    max_repeated_lines: float = 0.3
    min_punctuated_lines: float = 0.5
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0


@dataclass
class DedupConfig:
    # Off: tokenize reads docs/ directly.
    enabled: bool = True
    # Jaccard similarity (of word n-gram shingle sets) from which two documents are near-duplicates;
    # 0.7 catches articles re-posted with a few percent of words changed (pipeline/dedup.py, S-curve).
    threshold: float = 0.7
    # MinHash permutations per signature (256 estimates J within +-0.03; see the S-curves in pipeline/dedup.py).
    num_perm: int = 256
    # Word n-gram size of shingles.
    ngram: int = 5
    # MinHash seed: signatures equal datasketch.MinHash(num_perm, seed).
    seed: int = 1
    # Bands x rows; both 0 derives them with datasketch's optimal-parameter rule (32 x 8 by default).
    bands: int = 0
    rows: int = 0
    # Weight of false negatives in that rule (false positives get 1 - it). Above 0.5 because verification
    # removes false positives, while a missed pair stays missed.
    false_negative_weight: float = 0.9
    # Check each candidate by estimated Jaccard >= threshold before joining clusters.
    verify: bool = True
    # Buckets the band keys are shuffled into (one phase-2 task each); 0 means one per docs partition.
    num_buckets: int = 0


@dataclass
class TokenizeConfig:
    # Tokens per shard file (the last shard of each split holds the rest); at most 2**31-1 (int32 header).
    shard_tokens: int = 100_000_000
    # Fraction of documents (by hash of doc_id) in the validation split; val is never empty (see tokenize.py).
    val_fraction: float = 0.005


@dataclass
class TrainConfig:
    # Model size (training/model.py): gpt2-tiny (dry runs), gpt2 (124M), gpt2-medium, gpt2-large, gpt2-xl.
    model: str = "gpt2"
    # Ray Train workers, one per GPU with use_gpu (DDP over NCCL); CPU workers use gloo.
    num_workers: int = 1
    use_gpu: bool = True
    # Total optimizer steps (with the default 524,288 tokens per step, 10,000 steps are 5.2B tokens).
    max_steps: int = 10_000
    # Sequences per worker per micro-step (16 x 1024 fits an 80 GB GPU for gpt2 in bf16).
    micro_batch_size: int = 16
    # Context length used for training (<= the model's 1024; gpt2-tiny has 256).
    seq_len: int = 1024
    # Tokens per optimizer step across all workers; gradient accumulation fills it, so it must be a multiple
    # of micro_batch_size x seq_len x num_workers. 524,288 = 2**19, about GPT-3 small's 0.5M batch.
    tokens_per_step: int = 524_288
    # Peak learning rate (GPT-3 small's 6e-4), reached after warmup_steps, then cosine decay to
    # learning_rate x min_lr_ratio at max_steps.
    learning_rate: float = 6e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 700
    # AdamW decoupled weight decay, applied to matrices only (not biases or LayerNorm gains).
    weight_decay: float = 0.1
    # Gradients are clipped to this global L2 norm.
    grad_clip: float = 1.0
    # Optimizer steps between checkpoints (the last step always checkpoints) and checkpoints kept on disk.
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    # Steps between validation evaluations (and at the last step); val batches per worker per evaluation.
    eval_every: int = 250
    eval_batches: int = 20
    # torch.compile the model; only on CUDA (on CPU the compile time outweighs a dry run).
    compile: bool = True
    # Seed of the initial weights and of the training data order.
    seed: int = 1337
    # Worker-group restarts Ray Train allows after a failure; each resumes from the latest checkpoint.
    max_failures: int = 3
    # Continuations sampled from <|endoftext|> at the end (train/samples.json), and their length in tokens.
    num_samples: int = 3
    sample_length: int = 64
    # Peak FLOP/s of one device for MFU; 0 = the bf16 dense peak of a known GPU (H100/H200/A100), else the
    # fp32 matmul rate measured on the worker at start-up (CPU).
    peak_flops: float = 0.0
    # Fault injection for tests and drills: the last rank hard-exits (os._exit) when it reaches this step,
    # only in an attempt that started from scratch, so the restart from the checkpoint then completes. 0 = off.
    crash_at_step: int = 0


@dataclass
class DevwebConfig:
    # Port of the dry-run web server on every 127.0.0.N host; 0 picks a free one when the web is built.
    port: int = 0
    # Distinct loopback hosts (127.0.0.2 ..) the pages are spread over.
    hosts: int = 12
    # Article pages generated (at most the prose available allows, about 130).
    num_articles: int = 100
    # Articles that get exact or near-duplicate copies on other hosts (1-3 copies each).
    dup_groups: int = 12
    # Seconds the slow page waits before answering (set above crawl.request_deadline_s).
    slow_seconds: float = 5.0
    seed: int = 0


@dataclass
class Config:
    ray: RayConfig = field(default_factory=RayConfig)
    reddit: RedditConfig = field(default_factory=RedditConfig)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    devweb: DevwebConfig = field(default_factory=DevwebConfig)

    def fingerprint(self, *sections: str) -> str:
        """sha256 of the named sections' values: a stage's outputs are reusable while this is unchanged."""
        data = {name: dataclasses.asdict(getattr(self, name)) for name in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _check_value(value, expected, where: str):
    """Return value converted to `expected` (int widens to float), or raise ConfigError naming `where`."""
    origin = typing.get_origin(expected)
    if origin is list:
        (item_type,) = typing.get_args(expected)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {item_type.__name__}, got {value!r}")
        return [_check_value(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(f"{where}: expected {expected.__name__}, got {type(value).__name__} {value!r}")
    return value


def _apply(config: Config, section: str, key: str, value, source: str) -> None:
    where = f"{source}: {section}.{key}"
    if section not in _SECTION_TYPES:
        raise ConfigError(f"{source}: unknown section [{section}]; known: {', '.join(_SECTION_TYPES)}")
    hints = typing.get_type_hints(_SECTION_TYPES[section])
    if key not in hints:
        raise ConfigError(f"{where}: unknown key; [{section}] has: {', '.join(hints)}")
    setattr(getattr(config, section), key, _check_value(value, hints[key], where))


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
    return config


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def dump_config(config: Config) -> str:
    """The whole configuration as TOML that load_config reads back to an equal Config."""
    lines = []
    for section in _SECTION_TYPES:
        lines.append(f"[{section}]")
        for key, value in dataclasses.asdict(getattr(config, section)).items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)
