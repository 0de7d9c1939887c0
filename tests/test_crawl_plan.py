"""The makespan plan: its projection is the crawler's schedule worked out by hand; overrides change it so.

The arithmetic (pipeline/crawl/plan.py): a host takes (URLs + 1) x (delay x (1 + jitter / 2) + response) /
per_host_concurrency; a task runs its hosts busiest first on hosts_in_flight slots; the stage runs its
tasks in order on the slots Ray has.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pipeline.config import Config, HostOverride, load_config
from pipeline.crawl import crawl_plan, plan_lines

RESPONSE_S = 0.5


@pytest.fixture
def local_ray(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def plan_config(cpus: int, **crawl) -> Config:
    config = load_config(None, [f"ray.num_cpus={cpus}", "crawl.per_host_delay_s=1.0", "crawl.delay_jitter=0.5",
                                "crawl.hosts_in_flight=2"])
    for key, value in crawl.items():
        setattr(config.crawl, key, value)
    return config


def per_host(urls: int, delay: float) -> float:
    return (urls + 1) * (delay * 1.25 + RESPONSE_S)


PARTITIONS = [Counter({"a.example": 10, "b.example": 4, "c.example": 1}), Counter({"d.example": 6})]


def test_makespan_is_the_schedule_of_per_host_times(local_ray):
    plan = crawl_plan(plan_config(cpus=2), PARTITIONS, RESPONSE_S)
    a, b, c, d = per_host(10, 1), per_host(4, 1), per_host(1, 1), per_host(6, 1)
    # task 0: a on one slot, b then c on the other; task 1: d; both tasks at once
    assert plan["makespan_s"] == pytest.approx(max(a, b + c, d))
    assert [h["host"] for h in plan["top_hosts"]] == ["a.example", "d.example", "b.example", "c.example"]
    assert [h["urls"] for h in plan["top_hosts"]] == [10, 6, 4, 1]
    # one task at a time: task 1 starts when task 0 ends
    assert crawl_plan(plan_config(cpus=1), PARTITIONS, RESPONSE_S)["makespan_s"] == pytest.approx(max(a, b + c) + d)


def test_the_bounding_host_and_the_override_that_frees_it(local_ray):
    plan = crawl_plan(plan_config(cpus=2), PARTITIONS, RESPONSE_S)
    (bound,) = plan["bounding_hosts"]
    rest = max(per_host(4, 1) + per_host(1, 1), per_host(6, 1))  # the crawl without a.example
    assert bound["host"] == "a.example" and bound["makespan_without_s"] == pytest.approx(rest)
    freeing = (rest / 11 - RESPONSE_S) / 1.25  # the delay at which a.example takes as long as the rest
    assert bound["suggested_delay_s"] == pytest.approx(freeing, abs=0.001) and bound["suggested_delay_s"] <= freeing
    assert bound["makespan_with_suggestion_s"] == pytest.approx(rest)
    assert any(line.startswith("bounded by a.example: 10 URLs") for line in plan_lines(plan))


def test_host_overrides_change_the_makespan_as_computed(local_ray):
    overrides = {"a.example": HostOverride(delay_s=0.25), "d.example": HostOverride(delay_s=2.0, force=True)}
    plan = crawl_plan(plan_config(cpus=2, host_overrides=overrides), PARTITIONS, RESPONSE_S)
    a, b, c, d = per_host(10, 0.25), per_host(4, 1), per_host(1, 1), per_host(6, 2.0)
    # a.example is still placed first (most URLs); c.example follows on the slot that frees first
    task0 = max(a, b, min(a, b) + c)
    assert plan["makespan_s"] == pytest.approx(max(task0, d))
    plain = max(per_host(10, 1), per_host(4, 1) + per_host(1, 1), per_host(6, 1))
    assert plan["makespan_without_overrides_s"] == pytest.approx(plain)
    assert plan["overrides"]["d.example"] == {"delay_s": 2.0, "force": True}


def test_archive_source_plans_the_archive_politeness(local_ray):
    config = plan_config(cpus=2, source="archive")
    config.crawl.archive.cdx_url, config.crawl.archive.warc_url = "http://cdx.example/cdx", "http://data.example/"
    config.crawl.archive.concurrency, config.crawl.archive.delay_s = 4, 0.5
    plan = crawl_plan(config, PARTITIONS, RESPONSE_S)
    # two requests per URL (CDX, then the range), 4 at once per task: task 0 has 15 URLs, task 1 has 6
    assert plan["makespan_s"] == pytest.approx(15 * 2 * (0.5 + RESPONSE_S) / 4)


@pytest.mark.slow
def test_plan_command_on_the_2005_samples(tmp_path, ray_session, samples_dir, capsys):
    from pipeline import cli, storage

    run_dir = str(tmp_path / "run")
    inputs = [str(samples_dir / "RS_v2_2005-06.xz"), str(samples_dir / "RS_v2_2005-07.xz")]
    assert cli.main(["reddit", "--run-dir", run_dir, "--input", *inputs]) == 0
    capsys.readouterr()
    assert cli.main(["crawl", "--plan", "--run-dir", run_dir]) == 0
    out = capsys.readouterr()
    plan = json.loads(out.out)
    hosts = Counter(h for f in sorted((tmp_path / "run" / "urls").glob("part-*.parquet"))
                    for h in storage.read_parquet(f, columns=["host"]).column("host").to_pylist())
    top = sorted(hosts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [(h["host"], h["urls"]) for h in plan["top_hosts"]] == top
    assert plan["urls"] == sum(hosts.values()) and plan["hosts"] == len(hosts)
    assert f"top hosts by URLs: {top[0][0]} {top[0][1]}" in out.err
    assert not (tmp_path / "run" / "crawl").exists()  # a plan crawls nothing
