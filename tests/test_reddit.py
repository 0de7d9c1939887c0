"""Reddit stage: every rule, every bad input, real Pushshift samples, resume and determinism."""

from __future__ import annotations

import bz2
import json
import lzma
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline import reddit
from pipeline.config import Config, RedditConfig, load_config
from pipeline.runner import StageError, open_run, run_partitions
from pipeline.urls import InvalidURL, domain_matches, normalize_url, split_url

TRACKING = tuple(RedditConfig().tracking_params)


def link(i=1, url="https://example.com/a", score=5, **extra) -> dict:
    record = {"id": f"t{i}", "url": url, "score": score, "is_self": False, "over_18": False,
              "subreddit": "news", "title": f"title {i}", "created_utc": 1600000000 + i}
    record.update(extra)
    return record


def filter_to_table(path: Path) -> tuple[pa.Table, list[dict], Counter, Counter]:
    """filter_dump with the default config, its kept batches gathered into one table."""
    batches = []
    rejects, counts, info = reddit.filter_dump(str(path), RedditConfig(), batches.append)
    return pa.Table.from_batches(batches, reddit.KEPT_SCHEMA), rejects, counts, info


def write_dump(path: Path, lines: list[bytes | dict]) -> Path:
    data = b"\n".join(line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines) + b"\n"
    if path.suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    elif path.suffix == ".xz":
        data = lzma.compress(data)
    elif path.suffix == ".bz2":
        data = bz2.compress(data)
    path.write_bytes(data)
    return path


# --- URL normalization -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "raw, expected",
    [
        ("HTTP://Example.COM/Path", "http://example.com/Path"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80", "http://example.com/"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("https://example.com/a#section", "https://example.com/a"),
        ("https://user:pw@example.com/a", "https://example.com/a"),
        ("https://example.com./a", "https://example.com/a"),
        ("https://bücher.de/x", "https://xn--bcher-kva.de/x"),
        ("https://example.com/a?utm_source=x&id=3&fbclid=y&gclid=z&b=2", "https://example.com/a?id=3&b=2"),
        ("https://example.com/a?b=2&amp;utm_medium=m&amp;a=1", "https://example.com/a?b=2&a=1"),
        ("https://example.com/a?q=%20x&UTM_Campaign=c", "https://example.com/a?q=%20x"),
        ("https://[2001:DB8::1]:8443/a", "https://[2001:db8::1]:8443/a"),
    ],
)
def test_normalize_url(raw, expected):
    assert normalize_url(raw, TRACKING)[0] == expected


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("ftp://example.com/a", "url_scheme"),
        ("javascript:alert(1)", "url_scheme"),
        ("www.example.com/a", "url_invalid"),
        ("http://", "url_invalid"),
        ("http://exa mple.com/", "url_invalid"),
        ("http://example.com:99999/", "url_invalid"),
        ("http://exa_mple!.com/", "url_invalid"),
        ("http://example.com/" + "a" * 3000, "url_too_long"),
    ],
)
def test_invalid_urls_have_reasons(raw, reason):
    with pytest.raises(InvalidURL) as err:
        normalize_url(raw, TRACKING)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "url",
    ["HTTP://Example.COM/Path", "https://user:pw@Host.com:8080/a/b.html?x=1&y=2#frag", "http://h.com?q",
     "http://h.com#f", "http://h.com/a?b#c?d", "http://:80/", "http://h.com:/", "http://h.com:0x50/",
     "http://h.com:99999/", "http:/h.com/", "http:h.com", "javascript:alert(1)", "//h.com/a", "h.com/a",
     "1http://h.com/", "web+x://h/", "https://[::1]:8/a", "https://[::1/a", "http://a@b@c.com/",
     "\x01\x02http://h.com/", "https://bücher.de/x", "http://H.com%2F/"],
)
def test_split_url_divides_as_urlsplit_does(url):
    try:
        parts = urlsplit(url)
        expected = (parts.scheme, parts.hostname, parts.netloc, parts.port, parts.path, parts.query)
    except ValueError as err:
        with pytest.raises(ValueError, match=re.escape(str(err))):
            split_url(url)
    else:
        assert split_url(url) == expected


def test_domain_rules_match_subdomains_only():
    rules = frozenset(["wikipedia.org", "youtu.be"])
    assert domain_matches("en.wikipedia.org", rules)
    assert domain_matches("wikipedia.org", rules)
    assert domain_matches("youtu.be", rules)
    assert not domain_matches("notwikipedia.org", rules)
    assert not domain_matches("wikipedia.org.evil.com", rules)


# --- Filter rules ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "record, reason",
    [
        ([1, 2], "malformed_json"),
        (link(is_self=True), "self_post"),
        (link(url="https://www.reddit.com/r/x/comments/abc/title/"), "reddit_post_link"),
        (link(removed_by_category="moderator"), "deleted_removed"),
        (link(_meta={"removal_type": "deleted"}), "deleted_removed"),
        (link(selftext="[removed]"), "deleted_removed"),
        (link(score=None), "score_missing"),
        (link(score="lots"), "score_missing"),
        (link(score=2), "below_min_score"),
        (link(over_18=True), "nsfw"),
        (link(url=None), "url_missing"),
        (link(url=""), "url_missing"),
        (link(url="mailto:a@b.c"), "url_scheme"),
        (link(url="http://a b/"), "url_invalid"),
        (link(url="https://en.m.wikipedia.org/wiki/X"), "blocked_domain"),
        (link(url="https://i.redd.it/x.png"), "blocked_domain"),
        (link(url="https://youtu.be/abc"), "blocked_domain"),
        (link(url="https://example.com/cat.JPG"), "blocked_extension"),
        (link(url="https://example.com/setup.exe?x=1"), "blocked_extension"),
    ],
)
def test_each_rule_drops_with_its_reason(record, reason):
    rules = reddit.SubmissionFilter(RedditConfig())
    for outcome in rules.check(record, Counter()), rules.check_line(json.dumps(record).encode(), Counter()):
        assert isinstance(outcome, reddit.Drop) and outcome.reason == reason


def test_kept_record_fields_and_schema_drift():
    rules = reddit.SubmissionFilter(RedditConfig())
    info = Counter()
    for created in (1600000000, "1600000000", 1600000000.0):
        kept = rules.check(link(created_utc=created, score="7", _meta={"note": "x"}), info)
        assert kept["created_utc"] == 1600000000 and kept["score"] == 7
    missing = {"id": "m", "url": "https://example.com/m", "score": 3}
    kept = rules.check(missing, info)
    assert kept["subreddit"] == "" and kept["created_utc"] is None and info["created_utc_invalid"] == 1


def test_nsfw_keep_option_and_min_score():
    rules = reddit.SubmissionFilter(RedditConfig(nsfw="keep", min_score=10))
    assert rules.check(link(over_18=True, score=10), Counter())["over_18"] is True
    assert rules.check(link(score=9), Counter()).reason == "below_min_score"


# --- Bad input in files ------------------------------------------------------------------------------

def test_bad_lines_are_counted_and_rejected_with_line_numbers(tmp_path):
    lines = [
        link(1),
        b"",
        b'{"id": "x", "url": ',
        b'{"id": "n", "url": "https://example.com/nul", "sc\x00ore": 1}',
        json.dumps(link(2, url="https://example.com/\x00nul")).encode().replace(b"\\u0000", b"\x00"),
        b'{"id": "s", "url": "https://example.com/s", "score": 5, "title": "bad \\ud800 surrogate"}',
        link(3, score=None),
        b"[1, 2, 3]",
    ]
    path = write_dump(tmp_path / "bad.jsonl", lines)
    table, rejects, counts, info = filter_to_table(path)
    kept = table.to_pylist()
    assert counts["in"] == 8
    assert counts["in"] == counts["out"] + sum(v for k, v in counts.items() if k not in ("in", "out"))
    assert counts["blank_line"] == 1 and counts["malformed_json"] == 2
    assert counts["score_missing"] == 1 and counts["below_min_score"] == 1
    assert counts["out"] == 3
    assert info["nul_bytes_stripped"] == 2 and info["strings_scrubbed"] == 1
    titles = {k["reddit_id"]: k["title"] for k in kept}
    assert titles["s"] == "bad \ufffd surrogate"
    assert {k["url"] for k in kept} == {"https://example.com/a", "https://example.com/nul", "https://example.com/s"}
    assert sorted((r["line"], r["reason"]) for r in rejects) == [
        (3, "malformed_json"), (7, "score_missing"),
        (8, "malformed_json")
    ]
    assert all(r["file"] == "bad.jsonl" for r in rejects)


def test_self_posts_skipped_unparsed_only_when_unambiguous(tmp_path):
    crosspost = link(5, url="https://example.com/x", crosspost_parent_list=[{"is_self": True}])
    lines = [
        json.dumps(link(1, is_self=True), separators=(",", ":")).encode(),
        json.dumps(link(2, is_self=True)).encode(),
        json.dumps(crosspost).encode(),
        json.dumps(link(3, is_self=True)).encode()[:-10],
    ]
    _, rejects, counts, _ = filter_to_table(write_dump(tmp_path / "s.jsonl", lines))
    assert counts["self_post"] == 2 and counts["out"] == 1 and counts["malformed_json"] == 1
    assert [r["line"] for r in rejects] == [4]


def test_the_two_parser_path_agrees_with_the_stdlib_parser(samples_dir):
    """check_line (simdjson for the first rules, then orjson) decides every line as json.loads + check does."""
    rules = reddit.SubmissionFilter(RedditConfig())
    lines = [line for name in ("RS_v2_2005-07.jsonl", "pushshift_importer_test_submissions.jsonl")
             for line in (samples_dir / name).read_bytes().splitlines()]
    lines += [json.dumps({**link(i, score=i % 5), **extra}).encode() for i, extra in enumerate(
        [{}, {"is_self": True}, {"removed_by_category": "spam"}, {"selftext": "[deleted]"},
         {"url": "https://www.reddit.com/r/a/comments/b/c/"}, {"crosspost_parent_list": [{"score": 9}]},
         {"score": None}, {"_meta": {"removal_type": "deleted"}}, {"score": "2"}, {"score": 2**70},
         {"created_utc": 10**30},
         {"title": "caf\u00e9 \ud83d\ude00"}])]
    outcomes = Counter()
    for line in lines:
        ours = rules.check_line(line, Counter())
        expected = rules.check(json.loads(line), Counter())
        if isinstance(expected, reddit.Drop):
            assert isinstance(ours, reddit.Drop) and ours.reason == expected.reason, line[:200]
        else:
            assert ours == expected, line[:200]
        outcomes[ours.reason if isinstance(ours, reddit.Drop) else "kept"] += 1
    assert outcomes["self_post"] >= 12 and outcomes["below_min_score"] >= 2 and outcomes["kept"] >= 2


@pytest.mark.parametrize("suffix", [".zst", ".xz", ".bz2", ".jsonl", ".ndjson"])
def test_every_format_reads_the_same(tmp_path, suffix):
    records = [link(i, url=f"https://site{i % 3}.com/{i}", score=i) for i in range(50)]
    path = write_dump(tmp_path / f"RS_x{suffix}", records)
    kept, _, counts, _ = filter_to_table(path)
    assert counts["in"] == 50 and counts["below_min_score"] == 3
    assert kept.column("reddit_id").to_pylist() == [f"t{i}" for i in range(3, 50)]


def test_map_writes_each_bucket_while_reading(tmp_path, monkeypatch):
    """Kept rows reach their bucket files in several flushes; a failure part-way leaves no file behind."""
    monkeypatch.setattr(reddit, "KEPT_BATCH_ROWS", 7)
    monkeypatch.setattr(reddit, "FLUSH_ROWS", 20)
    records = [link(i, url=f"https://site{i % 11}.example.org/{i}", score=3 + i % 4) for i in range(300)]
    dump = write_dump(tmp_path / "RS_x.jsonl", records)
    expected, _, _, _ = filter_to_table(dump)
    config = RedditConfig(num_partitions=4)
    files, _, counts, _ = reddit.map_dump(str(dump), config, lambda b: tmp_path / "map" / f"part-{b}.parquet")
    assert counts["out"] == 300 and len(files) > 1
    written = []
    for path in files:
        table = pq.read_table(path)
        assert pq.ParquetFile(path).num_row_groups > 1
        bucket = int(path.stem.split("-")[1])
        assert set(table.column("bucket").to_pylist()) == {bucket}
        assert all(reddit.storage.stable_hash(h) % 4 == bucket for h in table.column("host").to_pylist())
        written += table.drop_columns("bucket").to_pylist()
    assert sorted(written, key=lambda r: r["reddit_id"]) == sorted(expected.to_pylist(), key=lambda r: r["reddit_id"])

    broken = write_dump(tmp_path / "RS_broken.jsonl", records[:100] + [link(999, created_utc=None)])
    monkeypatch.setattr(reddit, "_created_utc", lambda value: 1 / 0 if value is None else int(value))
    with pytest.raises(ZeroDivisionError):
        reddit.map_dump(str(broken), config, lambda b: tmp_path / "broken" / f"part-{b}.parquet")
    assert list((tmp_path / "broken").iterdir()) == []


@pytest.mark.parametrize("suffix", [".zst", ".xz", ".bz2"])
def test_truncated_compressed_file_keeps_what_was_readable(tmp_path, suffix, capsys):
    records = [link(i, url=f"https://example.com/{i}", title=f"{i * 7919 % 100003} " * 40) for i in range(20000)]
    full = write_dump(tmp_path / f"full{suffix}", records)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    kept, _, counts, info = filter_to_table(cut)
    assert info["truncated_files"] == 1
    assert 0 < counts["out"] < 20000
    assert kept.column("reddit_id").to_pylist() == [f"t{i}" for i in range(len(kept))]
    assert counts["in"] == counts["out"] + counts["malformed_json"]
    assert "damaged" in capsys.readouterr().err


def test_unreadable_file_names_itself(tmp_path):
    path = tmp_path / "RS_junk.zst"
    path.write_bytes(b"this is not zstd at all" * 10)
    with pytest.raises(ValueError, match="RS_junk.zst: nothing readable"):
        filter_to_table(path)


def test_expand_inputs(tmp_path):
    (tmp_path / "d").mkdir()
    a = write_dump(tmp_path / "d" / "RS_a.jsonl", [link()])
    b = write_dump(tmp_path / "RS_b.zst", [link()])
    (tmp_path / "d" / "notes.txt").write_text("x")
    assert reddit.expand_inputs([str(tmp_path / "d"), str(tmp_path / "RS_*.zst"), str(a)]) == sorted(
        [str(a), str(b)]
    )
    with pytest.raises(Exception, match="no such file"):
        reddit.expand_inputs([str(tmp_path / "missing.zst")])
    with pytest.raises(Exception, match="unsupported file type"):
        reddit.expand_inputs([str(tmp_path / "d" / "notes.txt")])


def test_aggregate_per_url():
    base = dict(host="example.com", subreddit="a", title="T", over_18=False)
    rows = [
        dict(base, url="https://example.com/x", score=5, reddit_id="b", created_utc=20),
        dict(base, url="https://example.com/x", score=7, reddit_id="a", created_utc=10, subreddit="b", title="U"),
        dict(base, url="https://example.com/x", score=7, reddit_id="a", created_utc=10, subreddit="b", title="U"),
        dict(base, url="https://example.com/y", score=3, reddit_id="c", created_utc=None),
    ]
    out, counts = reddit.aggregate_urls(rows)
    assert [r["url"] for r in out] == ["https://example.com/x", "https://example.com/y"]
    x = out[0]
    assert (x["score_sum"], x["score_max"], x["num_submissions"]) == (12, 7, 2)
    assert x["reddit_ids"] == ["a", "b"] and x["subreddits"] == ["a", "b"]
    assert x["titles"] == ["U", "T"] and x["created_utc"] == 10
    assert counts == Counter({"in": 4, "out": 2, "duplicate_submission": 1, "duplicate_url": 1})


# --- The stage on Ray --------------------------------------------------------------------------------

def expected_from_rules(path: Path, config: RedditConfig) -> tuple[set[str], int]:
    """URLs the rules keep, derived independently with plain json and urllib, and the line count."""
    from urllib.parse import urlsplit

    blocked = config.blocked_domains
    urls, lines = set(), 0
    for line in path.read_text().splitlines():
        lines += 1
        r = json.loads(line)
        host = (urlsplit(r["url"]).hostname or "").lower()
        ext = urlsplit(r["url"]).path.rsplit("/", 1)[-1].rpartition(".")[2].lower()
        if (r["is_self"] or r.get("selftext") in ("[deleted]", "[removed]") or r["score"] < 3 or r["over_18"]
                or any(host == d or host.endswith("." + d) for d in blocked)
                or ("." in urlsplit(r["url"]).path.rsplit("/", 1)[-1] and ext in config.blocked_extensions)):
            continue
        urls.add(r["url"])
    return urls, lines


def test_real_samples_through_the_stage(tmp_path, ray_session, samples_dir):
    ctx = open_run(tmp_path / "run", Config())
    stats = reddit.run(ctx, [str(samples_dir / "RS_v2_2005-06.xz"), str(samples_dir / "RS_v2_2005-07.xz")])
    kept = set()
    lines = 0
    for name in ("RS_v2_2005-06.jsonl", "RS_v2_2005-07.jsonl"):
        urls, n = expected_from_rules(samples_dir / name, ctx.config.reddit)
        kept |= {normalize_url(u, TRACKING)[0] for u in urls}
        lines += n
    tables = [pq.read_table(p) for p in sorted((ctx.run_dir / "urls").glob("part-*.parquet"))]
    got = [u for t in tables for u in t.column("url").to_pylist()]
    assert len(got) == len(set(got)) and set(got) == kept
    assert stats["records_in"] == lines
    assert stats["records_in"] == stats["records_out"] + sum(stats["dropped"].values())
    hosts_per_part = [set(t.column("host").to_pylist()) for t in tables]
    assert all(not (a & b) for i, a in enumerate(hosts_per_part) for b in hosts_per_part[i + 1:])
    assert all(t.column("url").to_pylist() == sorted(t.column("url").to_pylist()) for t in tables)
    assert json.loads((ctx.run_dir / "urls" / "stats.json").read_text())["records_out"] == len(kept)


def test_schema_drift_sample_merges_duplicates(tmp_path, ray_session, samples_dir):
    ctx = open_run(tmp_path / "run", load_config(None, ["reddit.num_partitions=4"]))
    stats = reddit.run(ctx, [str(samples_dir / "pushshift_importer_test_submissions.jsonl"),
                             str(samples_dir / "RS_v2_2005-06.xz")])
    assert stats["dropped"]["duplicate_submission"] > 0
    assert stats["dropped"]["self_post"] >= 12
    assert stats["records_in"] == 31 + 103
    assert stats["records_in"] == stats["records_out"] + sum(stats["dropped"].values())


def _urls_bytes(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / "urls").glob("part-*.parquet"))}


def test_resume_and_determinism(tmp_path, ray_session):
    dumps = [write_dump(tmp_path / f"RS_{m}.jsonl", [link(m * 100 + i, url=f"https://h{i % 7}.org/{m}/{i}")
                                                     for i in range(40)]) for m in range(3)]
    config = load_config(None, ["reddit.num_partitions=4"])
    ctx = open_run(tmp_path / "a", config)
    reddit.run(ctx, [str(d) for d in dumps])
    commits = sorted((ctx.run_dir / "urls" / "_map" / "_commits").glob("*.json"))
    before = {p.name: p.stat().st_mtime_ns for p in commits}

    # Interrupt: partition 1's commit and output vanish as if its task died before committing.
    (ctx.run_dir / "urls" / "_map" / "_commits" / "part-00001.json").unlink()
    reddit.run(ctx, [str(d) for d in dumps])
    after = {p.name: p.stat().st_mtime_ns for p in commits}
    assert after["part-00000.json"] == before["part-00000.json"]
    assert after["part-00002.json"] == before["part-00002.json"]
    assert (ctx.run_dir / "urls" / "_map" / "_commits" / "part-00001.json").exists()

    # A changed config redoes every partition.
    ctx2 = open_run(ctx.run_dir, load_config(None, ["reddit.num_partitions=4", "reddit.min_score=4"]))
    reddit.run(ctx2, [str(d) for d in dumps])
    assert all(p.stat().st_mtime_ns != before[p.name] for p in commits)

    # Two runs from scratch give byte-identical Parquet.
    run_a, run_b = open_run(tmp_path / "x", config), open_run(tmp_path / "y", config)
    reddit.run(run_a, [str(d) for d in dumps])
    reddit.run(run_b, [str(d) for d in dumps])
    assert _urls_bytes(run_a.run_dir) == _urls_bytes(run_b.run_dir) != {}


def _fail_on_odd(spec, ctx):
    from pipeline.runner import PartitionResult

    if spec % 2:
        raise OSError(f"disk on fire for {spec}")
    return PartitionResult(counts={"in": 1, "out": 1})


def test_failed_partition_names_itself_and_keeps_the_rest(tmp_path, ray_session):
    ctx = open_run(tmp_path / "run", Config())
    with pytest.raises(StageError) as err:
        run_partitions(ctx, "demo", [0, 1, 2, 3], _fail_on_odd, ("reddit",))
    assert "2 of 4 partitions failed" in str(err.value) and "disk on fire for 3" in str(err.value)
    assert sorted(p.name for p in (ctx.run_dir / "demo" / "_commits").iterdir()) == [
        "part-00000.json", "part-00002.json"
    ]


@pytest.mark.slow
def test_cli_on_real_sample_accounts_for_every_line(tmp_path, samples_dir):
    run_dir = tmp_path / "cli"
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "reddit", "--run-dir", str(run_dir), "--input",
         str(samples_dir / "RS_v2_2005-07.xz"), "--set", "ray.num_cpus=1"],
        capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    stats = json.loads(out.stdout)
    assert stats["records_in"] == 1079
    assert stats["records_in"] == stats["records_out"] + sum(stats["dropped"].values())
    assert (run_dir / "config.toml").exists()
    bad = subprocess.run([sys.executable, "-m", "pipeline.cli", "reddit", "--run-dir", str(run_dir), "--input",
                          "x.zst", "--set", "reddit.min_scor=1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "reddit.min_scor: unknown key" in bad.stderr
