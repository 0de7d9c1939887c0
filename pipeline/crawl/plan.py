"""The crawl's makespan plan: how long the crawl will take at its politeness, and which hosts decide it.

    webtext crawl --plan --run-dir R [--set 'crawl.host_overrides={"news.bbc.co.uk" = {delay_s = 0.25}}']

Read before crawling from the urls partitions (url and host per row) and the config; nothing is fetched. The
arithmetic is the crawler's own schedule (pipeline/crawl/crawler.py):

- a host takes (its URLs + 1 robots.txt) x (gap + response) / per_host_concurrency seconds, where gap is its
  delay (crawl.host_overrides' delay_s, else per_host_delay_s) x (1 + delay_jitter / 2), the mean jitter,
  and response is the time of one request: the median of this run's crawl log when there is one, else
  DEFAULT_RESPONSE_S. A robots.txt Crawl-delay can only lengthen a host that is not forced; it is unknown
  until crawled.
- a task crawls its partition's hosts hosts_in_flight at a time, the busiest (most URLs) first, each on the
  first free slot: its time is that list schedule's end.
- the stage runs its tasks in partition order on `tasks_at_once` slots (the local instance's CPUs:
  ray.num_cpus or the machine's cores; all partitions at once when joining a cluster): the makespan is when
  the last one ends.
- source "archive": every URL goes to the archive instead, at its per-task politeness (crawl.archive's
  concurrency and delay_s): (URLs x requests per URL) x (delay_s + response) / concurrency per task, with 1
  request per URL at best for replay (the replay answers with the closest capture) and 2 for WARC ranges
  (the CDX, then the range).

`crawl_plan` returns plain data (below) and `plan_lines` the text `--plan` prints and the run report shows:
URL count per host (top hosts), the projected makespan, the hosts that bound it (among the ten slowest, those
without which the crawl would end sooner) and, for each, the largest delay_s override at which it no longer
does (found by bisection on the schedule) and what the makespan would then be.
"""

from __future__ import annotations

import heapq
import math
import os
from collections import Counter
from dataclasses import dataclass, replace

from pipeline.config import Config, CrawlConfig, HostOverride

DEFAULT_RESPONSE_S = 0.5  # a far-away server's time to first byte plus a 50-150 KB page; the log replaces it
TOP_HOSTS = 10


@dataclass(frozen=True)
class HostLoad:
    host: str
    urls: int
    delay_s: float
    seconds: float


def host_delay(config: CrawlConfig, host: str) -> float:
    override = config.host_overrides.get(host)
    return override.delay_s if override is not None else config.per_host_delay_s


def host_seconds(config: CrawlConfig, urls: int, delay_s: float, response_s: float) -> float:
    """One host's crawl time: (URLs + robots.txt) x (mean gap + response) / per-host concurrency."""
    gap = delay_s * (1 + config.delay_jitter / 2)
    return (urls + 1) * (gap + response_s) / config.per_host_concurrency


def list_schedule(durations: list[float], slots: int) -> float:
    """When the last job ends if each job, in order, starts on the first free of `slots` slots."""
    free = [0.0] * max(1, min(slots, len(durations)))
    for duration in durations:
        heapq.heapreplace(free, free[0] + duration)
    return max(free, default=0.0)


def host_order(config: CrawlConfig, hosts: Counter, response_s: float) -> list[tuple[str, float]]:
    """A partition's hosts in the crawler's order (most URLs first; ties keep first-seen order), with their times."""
    order = sorted(hosts.items(), key=lambda item: -item[1])
    return [(h, host_seconds(config, n, host_delay(config, h), response_s)) for h, n in order]


def task_seconds(config: CrawlConfig, hosts: Counter, response_s: float) -> float:
    """One task's time: its hosts busiest first on hosts_in_flight slots (live), or its URLs to the archive."""
    if config.source == "archive":
        a = config.archive
        per_url = 1 if a.replay_url else 2
        return sum(hosts.values()) * per_url * (a.delay_s + response_s) / a.concurrency
    return list_schedule([seconds for _, seconds in host_order(config, hosts, response_s)], config.hosts_in_flight)


def tasks_at_once(config: Config, partitions: int) -> int:
    """Tasks Ray runs at once: the local instance's CPUs, or every partition on a cluster."""
    if config.ray.address or os.environ.get("RAY_ADDRESS"):
        return partitions
    return max(1, min(partitions, config.ray.num_cpus or os.cpu_count() or 1))


def makespan(config: Config, partitions: list[Counter], response_s: float) -> float:
    durations = [task_seconds(config.crawl, hosts, response_s) for hosts in partitions]
    return list_schedule(durations, tasks_at_once(config, len(partitions)))


def with_overrides(config: Config, overrides: dict[str, HostOverride]) -> Config:
    return replace(config, crawl=replace(config.crawl, host_overrides=overrides))


class WhatIf:
    """The live makespan with one host's time changed: only that host's task is scheduled again."""

    def __init__(self, config: Config, partitions: list[Counter], response_s: float):
        self.config, self.response_s = config, response_s
        self.orders = [host_order(config.crawl, hosts, response_s) for hosts in partitions]
        self.where = {host: (p, i) for p, order in enumerate(self.orders) for i, (host, _) in enumerate(order)}
        self.tasks = [list_schedule([s for _, s in order], config.crawl.hosts_in_flight) for order in self.orders]
        self.slots = tasks_at_once(config, len(partitions))

    def makespan(self, host: str, seconds: float) -> float:
        p, i = self.where[host]
        durations = [s for _, s in self.orders[p]]
        durations[i] = seconds
        tasks = list(self.tasks)
        tasks[p] = list_schedule(durations, self.config.crawl.hosts_in_flight)
        return list_schedule(tasks, self.slots)

    def freeing_delay(self, load: HostLoad, rest: float) -> float:
        """The largest delay_s (to the ms) at which `load`'s host no longer lengthens the crawl beyond `rest`."""
        low, high = 0.0, load.delay_s
        seconds = lambda delay: host_seconds(self.config.crawl, load.urls, delay, self.response_s)  # noqa: E731
        for _ in range(20):
            middle = (low + high) / 2
            if self.makespan(load.host, seconds(middle)) <= rest * (1 + 1e-9):
                low = middle
            else:
                high = middle
        return math.floor(low * 1000) / 1000


def crawl_plan(config: Config, partitions: list[Counter], response_s: float = DEFAULT_RESPONSE_S) -> dict:
    """The plan of crawling `partitions` (URL count per host, per urls partition) under `config`: plain data."""
    c = config.crawl
    totals = Counter()
    for hosts in partitions:
        totals.update(hosts)
    loads = sorted((HostLoad(h, n, host_delay(c, h), host_seconds(c, n, host_delay(c, h), response_s))
                    for h, n in totals.items()), key=lambda load: (-load.seconds, -load.urls, load.host))
    total = makespan(config, partitions, response_s)
    plan = {
        "source": c.source, "urls": sum(totals.values()), "hosts": len(totals), "partitions": len(partitions),
        "tasks_at_once": tasks_at_once(config, len(partitions)), "hosts_in_flight": c.hosts_in_flight,
        "response_s": response_s, "makespan_s": total,
        "top_hosts": [vars(load) for load in sorted(loads, key=lambda x: (-x.urls, x.host))[:TOP_HOSTS]],
        "bounding_hosts": [], "overrides": {h: vars(o) for h, o in c.host_overrides.items()},
    }
    if c.host_overrides:
        plan["makespan_without_overrides_s"] = makespan(with_overrides(config, {}), partitions, response_s)
    if c.source == "archive":
        return plan
    what_if = WhatIf(config, partitions, response_s)
    for load in loads[:TOP_HOSTS]:  # a host bounds the crawl when the crawl would end sooner without it
        rest = what_if.makespan(load.host, 0.0)
        if rest >= total * (1 - 1e-9):
            continue
        delay = what_if.freeing_delay(load, rest)
        with_delay = what_if.makespan(load.host, host_seconds(c, load.urls, delay, response_s))
        plan["bounding_hosts"].append({**vars(load), "makespan_without_s": rest, "suggested_delay_s": delay,
                                       "makespan_with_suggestion_s": with_delay})
    return plan


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{seconds / 86400:.1f} days"


def plan_lines(plan: dict) -> list[str]:
    """The plan as the text `webtext crawl --plan` prints."""
    lines = [f"crawl plan ({plan['source']}): {plan['urls']} URLs on {plan['hosts']} hosts in {plan['partitions']} "
             f"partitions, {plan['tasks_at_once']} tasks at once x {plan['hosts_in_flight']} hosts in flight, "
             f"{plan['response_s']:.2f} s per response",
             f"projected makespan: {_duration(plan['makespan_s'])}"
             + (f" (without host_overrides: {_duration(plan['makespan_without_overrides_s'])})"
                if "makespan_without_overrides_s" in plan else "")]
    lines.append("top hosts by URLs: " + ", ".join(f"{h['host']} {h['urls']}" for h in plan["top_hosts"]))
    for h in plan["bounding_hosts"]:
        lines.append(f"bounded by {h['host']}: {h['urls']} URLs at {h['delay_s']:g} s -> {_duration(h['seconds'])}; "
                     f"host_overrides {{\"{h['host']}\" = {{delay_s = {h['suggested_delay_s']:g}}}}} -> makespan "
                     f"{_duration(h['makespan_with_suggestion_s'])} (the rest alone: {_duration(h['makespan_without_s'])})")
    if not plan["bounding_hosts"] and plan["source"] != "archive":
        limit = (f"{plan['tasks_at_once']} tasks at once for {plan['partitions']} partitions"
                 if plan["tasks_at_once"] < plan["partitions"] else f"hosts_in_flight = {plan['hosts_in_flight']}")
        lines.append(f"no single host bounds it: {limit} does")
    return lines
