"""The run directory: lineage, the lock, config checked before anything runs, clear errors, the registry.

Each test here is one way a user could break a run directory (issue 13's list): a changed input or upstream
partition, a second writer, a deleted upstream file, a refused --set, an out-of-range value, an unusable
--run-dir, a dump with a BOM or nothing readable. The stages run for real on the dry-run web.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import cli, crawl, dedup, extract, reddit, stages, storage, tokenize
from pipeline.config import load_config
from pipeline.runner import RunDirError, RunLock, StageError, open_run, run_stage

REPO = Path(__file__).resolve().parents[1]
DRYRUN = REPO / "jobs" / "configs" / "dryrun.toml"


def _commit_times(run_dir: Path, phase: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((run_dir / phase / "_commits").glob("part-*.json"))}


def _dump(path: Path, urls: list[str], score: int = 10) -> Path:
    lines = [json.dumps({"id": f"x{i}", "url": u, "score": score, "is_self": False, "subreddit": "s",
                         "title": f"t{i}", "created_utc": 1_200_000_000 + i}) for i, u in enumerate(urls)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _urls_files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / "urls").glob("part-*.parquet"))}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, devweb_site, ray_session):
    """reddit -> tokenize on the dry-run web, once; tests work on copies (copytree keeps mtimes)."""
    config = load_config(DRYRUN, [f"eval.data_dir={devweb_site['dir'] / 'eval'}"])  # the web's eval sets
    ctx = open_run(tmp_path_factory.mktemp("lineage") / "run", config)
    for stage in stages.STAGES[: stages.STAGES.index(stages.stage("tokenize")) + 1]:
        options = {"inputs": [str(devweb_site["dump"])]} if stage.name == "reddit" else {}
        run_stage(ctx, stage.name, **options)
    return ctx.run_dir


def _copy(run_dir: Path, dest: Path):
    shutil.copytree(run_dir, dest)
    return open_run(dest, load_config(dest / "config.toml"))


# ---------------------------------------------------------------- lineage


def test_a_second_dump_gives_the_urls_of_a_fresh_run_on_it(tmp_path, ray_session):
    first = _dump(tmp_path / "RS_a.jsonl", [f"http://a{i}.example.com/p" for i in range(30)])
    second = _dump(tmp_path / "RS_b.jsonl", [f"http://b{i}.example.org/q/{i}" for i in range(12)])
    config = load_config(None, ["reddit.num_partitions=4"])
    ctx = open_run(tmp_path / "run", config)
    run_stage(ctx, "reddit", inputs=[str(first)])
    stats = run_stage(ctx, "reddit", inputs=[str(second)])
    fresh = open_run(tmp_path / "fresh", config)
    run_stage(fresh, "reddit", inputs=[str(second)])
    assert _urls_files(ctx.run_dir) == _urls_files(fresh.run_dir) != {}
    assert stats["records_in"] == 12 and stats["inputs"] == [str(second)]
    assert sorted(p.name for p in (ctx.run_dir / "urls" / "_map").glob("part-*")) == sorted(
        p.name for p in (fresh.run_dir / "urls" / "_map").glob("part-*"))


def test_an_edited_dump_reruns_its_map_and_a_touched_one_does_not(tmp_path, ray_session, capsys):
    dump = _dump(tmp_path / "RS_a.jsonl", [f"http://a{i}.example.com/p" for i in range(20)])
    ctx = open_run(tmp_path / "run", load_config(None, ["reddit.num_partitions=2"]))
    run_stage(ctx, "reddit", inputs=[str(dump)])
    before = _commit_times(ctx.run_dir, "urls/_map")
    os.utime(dump)  # same bytes, new mtime: hashed again, same digest, nothing reruns
    run_stage(ctx, "reddit", inputs=[str(dump)])
    assert _commit_times(ctx.run_dir, "urls/_map") == before
    _dump(dump, [f"http://a{i}.example.com/p" for i in range(25)])
    capsys.readouterr()
    assert run_stage(ctx, "reddit", inputs=[str(dump)])["records_in"] == 25
    assert f"rerunning 1 of 1 partitions: 0 ({dump} changed)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_changed_urls_partition_reruns_its_crawl_alone(finished_run, tmp_path, capsys):
    ctx = _copy(finished_run, tmp_path / "run")
    part = ctx.run_dir / "urls" / "part-00000.parquet"
    table = pq.read_table(part)
    storage.write_parquet(part, table.slice(0, 5))
    before = _commit_times(ctx.run_dir, "crawl")
    capsys.readouterr()
    run_stage(ctx, "crawl")
    after = _commit_times(ctx.run_dir, "crawl")
    assert after["part-00000.json"] != before["part-00000.json"]
    assert {k: v for k, v in after.items() if k != "part-00000.json"} == {
        k: v for k, v in before.items() if k != "part-00000.json"}
    log = pq.read_table(ctx.run_dir / "crawl" / "log" / "part-00000.parquet")
    assert log.column("url").to_pylist() == table.slice(0, 5).column("url").to_pylist()
    assert "rerunning 1 of 4 partitions: 0 (urls/part-00000.parquet changed)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_changed_docs_partition_reruns_dedup_and_tokenize_not_crawl(finished_run, tmp_path):
    ctx = _copy(finished_run, tmp_path / "run")
    part = ctx.run_dir / "docs" / "part-00001.parquet"
    docs = pq.read_table(part)
    storage.write_parquet(part, docs.slice(1))
    crawl_before = _commit_times(ctx.run_dir, "crawl")
    sign_before = _commit_times(ctx.run_dir, dedup.SIGN_PHASE)
    tokens_before = _commit_times(ctx.run_dir, tokenize.PHASE)
    manifest_before = (ctx.run_dir / "tokens" / "manifest.json").read_bytes()
    run_stage(ctx, "crawl")
    run_stage(ctx, "dedup")
    run_stage(ctx, "decontaminate")
    run_stage(ctx, "tokenize")
    assert _commit_times(ctx.run_dir, "crawl") == crawl_before
    sign_after = _commit_times(ctx.run_dir, dedup.SIGN_PHASE)
    assert [k for k in sign_after if sign_after[k] != sign_before[k]] == ["part-00001.json"]
    assert _commit_times(ctx.run_dir, tokenize.PHASE) != tokens_before
    assert (ctx.run_dir / "tokens" / "manifest.json").read_bytes() != manifest_before


@pytest.mark.slow
def test_a_missing_upstream_partition_is_an_error_and_nothing_downstream_is_deleted(finished_run, tmp_path):
    ctx = _copy(finished_run, tmp_path / "run")
    (ctx.run_dir / "urls" / "part-00003.parquet").unlink()
    crawl_files = sorted(p for p in (ctx.run_dir / "crawl").rglob("*") if p.is_file())
    with pytest.raises(StageError, match=r"urls/part-00003.parquet: missing .* rerun `webtext reddit --run-dir"):
        run_stage(ctx, "crawl")
    assert sorted(p for p in (ctx.run_dir / "crawl").rglob("*") if p.is_file()) == crawl_files
    storage.write_bytes(ctx.run_dir / "urls" / "part-00009.parquet", b"not mine")
    (ctx.run_dir / "urls" / "part-00003.parquet").write_bytes(b"")
    with pytest.raises(StageError, match=r"part-00009.parquet: not a committed partition of urls"):
        run_stage(ctx, "extract")


@pytest.mark.slow
def test_a_damaged_crawl_log_names_crawl_as_the_fix_and_a_killed_tasks_temporaries_go(finished_run, tmp_path):
    ctx = _copy(finished_run, tmp_path / "run")
    log = ctx.run_dir / "crawl" / "log" / "part-00002.parquet"
    log.write_bytes(log.read_bytes()[:100])
    leftover = ctx.run_dir / "docs" / ".tmp-99999-part-00002.parquet"
    leftover.write_bytes(b"half a file")
    with pytest.raises(StageError, match=r"(?s)crawl/log/part-00002.parquet: unreadable.*rerun `webtext crawl --run"):
        run_stage(ctx, "extract")
    assert not leftover.exists()
    run_stage(ctx, "crawl")  # its commit no longer matches the log, so crawl rebuilds that partition
    assert run_stage(ctx, "extract")["records_out"] > 0


# ---------------------------------------------------------------- the lock


def test_a_second_writer_fails_at_once_naming_the_first(tmp_path, ray_session):
    first = _dump(tmp_path / "RS_a.jsonl", [f"http://a{i}.example.com/p" for i in range(8)])
    second = _dump(tmp_path / "RS_b.jsonl", [f"http://b{i}.example.com/p" for i in range(9)])
    ctx = open_run(tmp_path / "run", load_config(None, ["reddit.num_partitions=2"]))
    with RunLock(ctx.run_dir, "webtext reddit --input RS_a.jsonl"):
        other = subprocess.run([sys.executable, "-m", "pipeline.cli", "reddit", "--run-dir", str(ctx.run_dir),
                                "--input", str(second)], capture_output=True, text=True, timeout=120, cwd=REPO)
        run_stage(ctx, "reddit", inputs=[str(first)])
    assert other.returncode == 2
    assert f"is in use by `webtext reddit --input RS_a.jsonl` (pid {os.getpid()}" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    assert json.loads((ctx.run_dir / "urls" / "stats.json").read_text())["records_in"] == 8


def test_a_dead_holders_lock_is_taken_over_with_a_warning(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").write_text("`webtext crawl --run-dir run` (pid 4242 on elsewhere, since 2026-01-01)")
    with RunLock(run_dir, "webtext tokenize"):
        assert "webtext tokenize" in (run_dir / ".lock").read_text()
    assert "took over the lock of `webtext crawl --run-dir run` (pid 4242" in capsys.readouterr().err
    assert (run_dir / ".lock").read_text() == ""


# ---------------------------------------------------------------- config checked before anything runs


def test_a_refused_set_leaves_the_frozen_config_byte_identical(tmp_path, capsys):
    ctx = open_run(tmp_path / "run", load_config(None, ["tokenize.shard_tokens=5000"]))
    frozen = (ctx.run_dir / "config.toml").read_bytes()
    for bad in ("tokenize.shard_tokens=0", "train.model=gpt3", "train.tokens_per_step=1000"):
        assert cli.main(["tokenize", "--run-dir", str(ctx.run_dir), "--set", bad]) == 2
        assert (ctx.run_dir / "config.toml").read_bytes() == frozen
    assert "tokens_per_step=1000 is not a multiple" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("crawl.per_host_delay_s=-1", "crawl.per_host_delay_s: -1.0 is outside [0, inf)"),
    ("dedup.threshold=1.5", "dedup.threshold: 1.5 is outside (0, 1]"),
    ("crawl.per_host_concurrency=0", "crawl.per_host_concurrency: 0 is outside [1, inf)"),
    ("train.model=gpt3", "train.model: 'gpt3' is not one of 'gpt2-tiny', 'gpt2'"),
    ("reddit.nsfw=maybe", "reddit.nsfw: 'maybe' is not one of 'drop', 'keep'"),
    ("tokenize.val_fraction=1", "tokenize.val_fraction: 1.0 is outside [0, 1)"),
])
def test_each_range_rule_is_refused_before_any_output_exists(tmp_path, capsys, override, message):
    dump = _dump(tmp_path / "RS_a.jsonl", ["http://a.example.com/"])
    run_dir = tmp_path / "run"
    assert cli.main(["run", "--run-dir", str(run_dir), "--input", str(dump), "--set", override]) == 2
    assert message in capsys.readouterr().err
    assert not run_dir.exists()


# ---------------------------------------------------------------- clear one-line errors


def _one_line_error(argv: list[str], capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_an_unusable_run_dir_is_one_clear_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "is a file, not a directory" in _one_line_error(["crawl", "--run-dir", str(afile)], capsys)
    assert "hdfs:// is not supported; use a local path, s3:// or gs://" in _one_line_error(
        ["crawl", "--run-dir", "hdfs://namenode/run"], capsys)
    assert not Path("hdfs:").exists()
    assert "ftp:// is not supported" in _one_line_error(
        ["reddit", "--run-dir", str(tmp_path / "r"), "--input", "ftp://host/RS_2019-01.zst"], capsys)
    assert "no such file" in _one_line_error(
        ["reddit", "--run-dir", str(tmp_path / "r"), "--input", str(tmp_path / "RS_missing.zst")], capsys)


def test_a_read_only_run_dir_is_one_clear_line(capsys):
    read_only = Path("/sys/kernel")  # sysfs refuses new files even to root, for whom permission bits do not count
    if not read_only.is_dir():
        pytest.skip(f"{read_only} is not here to stand for a read-only directory")
    with pytest.raises(RunDirError, match=r"/sys/kernel: not writable"):
        open_run(read_only, load_config())
    assert "cannot create it" in _one_line_error(["crawl", "--run-dir", "/sys/kernel/webtext-run"], capsys)


# ---------------------------------------------------------------- Reddit input


def test_a_bom_is_skipped_and_does_not_cost_the_first_record(tmp_path):
    dump = _dump(tmp_path / "RS_bom.jsonl", ["http://a.example.com/1", "http://a.example.com/2"])
    dump.write_bytes(b"\xef\xbb\xbf" + dump.read_bytes())
    _, counts, _ = reddit.filter_dump(str(dump), load_config().reddit, lambda batch: None)
    assert counts["out"] == 2 and counts["malformed_json"] == 0


def test_empty_and_garbage_dumps_warn_and_fail_when_nothing_is_usable(tmp_path, ray_session, capsys):
    empty = tmp_path / "RS_empty.jsonl"
    empty.write_bytes(b"")
    garbage = tmp_path / "RS_garbage.jsonl"
    garbage.write_bytes(random.Random(3).randbytes(20_000))
    good = _dump(tmp_path / "RS_good.jsonl", ["http://a.example.com/1"])
    ctx = open_run(tmp_path / "run", load_config(None, ["reddit.num_partitions=2"]))
    with pytest.raises(StageError, match="no usable input"):
        run_stage(ctx, "reddit", inputs=[str(empty), str(garbage)])
    err = capsys.readouterr().err
    assert f"{empty}: empty (0 lines)" in err and re.search(rf"{garbage}: \d+ of \d+ lines are not JSON", err)
    stats = run_stage(ctx, "reddit", inputs=[str(empty), str(garbage), str(good)])
    assert stats["records_out"] == 1 and len(stats["unusable_inputs"]) == 2


def test_score_missing_rejects_carry_the_id_and_url(tmp_path):
    dump = tmp_path / "RS_noscore.jsonl"
    dump.write_text(json.dumps({"id": "abc", "url": "http://a.example.com/x", "is_self": False}) + "\n")
    rejects, counts, _ = reddit.filter_dump(str(dump), load_config().reddit, lambda batch: None)
    assert counts["score_missing"] == 1
    assert (rejects[0]["reddit_id"], rejects[0]["url"]) == ("abc", "http://a.example.com/x")


def test_a_truncated_dump_warning_names_the_last_complete_line(tmp_path, capsys):
    """Also: a zstd block still incomplete after a read is not taken for the end of the stream."""
    import zstandard

    words = random.Random(5)
    raw = b"".join(json.dumps({"id": f"i{i}", "url": f"http://h{i}.example.com/", "score": 5, "title": " ".join(
        str(words.randrange(10**6)) for _ in range(30))}).encode() + b"\n" for i in range(6000))  # many zstd blocks
    data = zstandard.ZstdCompressor().compress(raw)
    dump = tmp_path / "RS_cut.zst"
    dump.write_bytes(data[: len(data) * 3 // 4])
    _, counts, _ = reddit.filter_dump(str(dump), load_config().reddit, lambda batch: None)
    err = capsys.readouterr().err
    complete = int(re.search(r"damaged after line (\d+)", err).group(1))
    assert f"line {complete + 1} was cut short" in err
    assert counts["in"] == complete + 1 and counts["malformed_json"] == 1


# ---------------------------------------------------------------- quiet failures


@pytest.mark.slow
def test_failed_dns_lookups_are_counted_without_tracebacks(tmp_path):
    script = (
        "import asyncio, io, time\n"
        "from pipeline.crawl import crawl_urls\n"
        "from pipeline.config import CrawlConfig\n"
        "cfg = CrawlConfig(max_retries=0, request_deadline_s=0.001, robots_timeout_s=0.001)\n"
        "urls = [f'http://h{i}.no-such-host-webtext.invalid-tld/x' for i in range(20)]\n"
        "rows = asyncio.run(crawl_urls(urls, [u.split('/')[2] for u in urls], cfg, io.BytesIO(), 'w'))\n"
        "time.sleep(1.0)\n"
        "print(sorted({r.reason for r in rows}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() in ("['dns_error']", "['robots_unavailable']", "['dns_error', 'robots_unavailable']")
    assert "Traceback" not in out.stderr and "Event loop is closed" not in out.stderr


# ---------------------------------------------------------------- the registry is the only list of stages


def test_the_cli_the_report_and_the_jobs_list_the_registered_stages(tmp_path):
    commands = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert commands == {s.name for s in stages.STAGES} | {"run", "devweb", "export-hf", "finetune"}
    run_dir = tmp_path / "run"
    for stage in reversed(stages.STAGES):
        storage.write_json(run_dir / stage.folder / "stats.json", {"records_in": 1, "records_out": 1})
    from pipeline import report

    assert list(report.stage_stats(run_dir)) == [s.name for s in stages.STAGES]
    assert "main([\"run\"" in (REPO / "jobs" / "webtext.py").read_text()
    names = [s.name for s in stages.STAGES]
    for path in [*REPO.glob("pipeline/**/*.py"), *REPO.glob("training/**/*.py"), *REPO.glob("jobs/**/*.py")]:
        if path.name == "stages.py":
            continue
        for line in path.read_text().splitlines():
            assert sum(f'"{n}"' in line for n in names) < 3, f"{path}: lists stages outside the registry: {line}"


def test_every_registered_stage_function_imports():
    assert all(callable(s.function()) for s in stages.STAGES)
    assert {crawl.run, extract.run, dedup.run, tokenize.run} <= {s.function() for s in stages.STAGES}
