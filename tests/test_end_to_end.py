"""End to end: the dry-run pipeline submitted to a real Ray cluster, a killed driver, a killed worker.

The cluster test starts its own head node (`ray start --head --block` on 127.0.0.1, in its own process
group so that stopping it leaves the test session's Ray instance alone), submits `jobs.webtext` with
`ray job submit` under token authentication, and keeps the run as the reference for the crash tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from pipeline import devweb, reddit
from pipeline.config import load_config
from pipeline.runner import open_run

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DRYRUN = "jobs/configs/dryrun.toml"
pytestmark = [pytest.mark.timeout(1200), pytest.mark.slow]
SHORT_TRAIN = ["--set", "train.max_steps=10", "--set", "train.eval_every=5", "--set", "train.checkpoint_every=5",
               "--set", "finetune.epochs=1"]


def web_at(port: int) -> list[str]:
    """The dry-run web and its archive (served on 127.0.2.1, see jobs/configs/dryrun.toml) on `port`."""
    return ["--set", f"devweb.port={port}", "--set", f"crawl.archive.cdx_url=http://127.0.2.1:{port}/cdx"]


def _env() -> dict:
    env = dict(os.environ, RAY_AUTH_MODE="token", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    return env


def _stop_group(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def _shard_hashes(run_dir: Path) -> dict[str, str]:
    manifest = json.loads((run_dir / "tokens" / "manifest.json").read_text())
    return {s["path"]: s["sha256"] for s in manifest["shards"]}


@pytest.fixture(scope="module")
def web_port() -> int:
    return devweb.free_port()


@pytest.fixture(scope="module")
def job_run(tmp_path_factory, web_port) -> Path:
    """The dry-run pipeline, submitted with `ray job submit` to a head node started for this test."""
    run_dir = tmp_path_factory.mktemp("job") / "run"
    gcs_port, dashboard_port, agent_port, agent_grpc_port = (devweb.free_port() for _ in range(4))
    # Own agent ports: the test session's Ray instance already holds the default ones on this machine,
    # and a head whose job agent cannot bind refuses every submission ("No available agent").
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--port", str(gcs_port), "--num-cpus", "2",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
         "--dashboard-agent-listen-port", str(agent_port), "--dashboard-agent-grpc-port", str(agent_grpc_port)],
        env=_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    submit = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dashboard_port}",
              "--working-dir", str(REPO), "--", "python", "-m", "jobs.webtext", "--config", DRYRUN,
              "--run-dir", str(run_dir), *web_at(web_port), *SHORT_TRAIN]
    try:
        deadline = time.monotonic() + 180
        while True:
            out = subprocess.run(submit, env=_env(), capture_output=True, text=True, timeout=900)
            # The job agent comes up some seconds after the head; until then submission is refused.
            retry = "No available agent" in out.stderr + out.stdout or "Connection refused" in out.stderr
            if out.returncode == 0 or not retry or time.monotonic() > deadline:
                break
            time.sleep(3)
        (run_dir.parent / "job.log").write_text(out.stdout + out.stderr)
        assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
        assert "succeeded" in out.stdout + out.stderr
    finally:
        _stop_group(head)
    return run_dir


def test_ray_job_submit_runs_the_dry_run(job_run):
    for produced in ("urls/stats.json", "crawl/stats.json", "docs/stats.json", "dedup/clusters.parquet",
                     "tokens/manifest.json", "finetune/results.json", "report.md"):
        assert (job_run / produced).exists(), produced
    crawl = json.loads((job_run / "crawl" / "stats.json").read_text())
    urls = json.loads((job_run / "urls" / "stats.json").read_text())
    assert crawl["records_in"] == urls["records_out"] > 100
    assert sum(s["tokens"] for s in json.loads((job_run / "tokens" / "manifest.json").read_text())["shards"]) > 0


def _commits(run_dir: Path, phase: str) -> int:
    return len(list((run_dir / phase / "_commits").glob("part-*.json")))


def test_driver_killed_mid_crawl_then_rerun_gives_the_same_shards(job_run, web_port, tmp_path):
    # The web outlives a crashed crawler, so the test serves it rather than the driver being killed.
    run_dir = tmp_path / "killed"
    config = load_config(REPO / DRYRUN, web_at(web_port)[1::2])
    site = devweb.build(run_dir / "devweb", web_port, config.devweb, config.reddit)
    cmd = [sys.executable, "-m", "jobs.webtext", "--config", DRYRUN, "--run-dir", str(run_dir),
           *web_at(web_port), *SHORT_TRAIN, "--input", str(site / "RS_devweb.zst")]
    with devweb.serving(site):
        driver = subprocess.Popen(cmd, cwd=REPO, env=_env(), start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while _commits(run_dir, "crawl") < 1 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.2)
        assert driver.poll() is None, "the driver finished before it could be killed"
        _stop_group(driver, signal.SIGKILL)
        assert _commits(run_dir, "crawl") < 4 and not (run_dir / "tokens" / "manifest.json").exists()

        rerun = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "already committed, skipped" in rerun.stderr
    assert _shard_hashes(run_dir) == _shard_hashes(job_run)


def _kill_first_partition_worker(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first Ray worker seen running a partition task (Ray titles it ray::_run_one)."""
    while not stop.is_set() and not killed:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if any("ray::_run_one" in part for part in proc.info["cmdline"] or []):
                proc.kill()
                killed.append(proc.info["pid"])
                return
        time.sleep(0.05)


def test_worker_killed_mid_stage_gives_the_same_output(tmp_path, ray_session):
    lines = [{"id": f"k{i}", "url": f"https://site{i % 97}.example/{i}?utm_source=x", "score": 3 + i % 50,
              "is_self": False, "over_18": False, "subreddit": "news", "title": "t" * 30,
              "created_utc": 1500000000 + i} for i in range(150_000)]
    dump = tmp_path / "RS_big.jsonl"
    dump.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    config = load_config(None, ["reddit.num_partitions=4"])

    calm = open_run(tmp_path / "calm", config)
    reddit.run(calm, [str(dump)])

    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_partition_worker, args=(stop, killed))
    killer.start()
    crashed = open_run(tmp_path / "crashed", config)
    try:
        stats = reddit.run(crashed, [str(dump)])
    finally:
        stop.set()
        killer.join()
    assert killed, "no partition worker was seen to kill"
    assert stats["records_in"] == len(lines)
    for calm_part in sorted((calm.run_dir / "urls").glob("part-*.parquet")):
        assert (crashed.run_dir / "urls" / calm_part.name).read_bytes() == calm_part.read_bytes()
