"""The run report: `<run>/report.md` with PNG plots, and the summary table `webtext run` prints.

Built from what the stages left in the run directory, so it can be regenerated at any time:

    python -m pipeline.report --run-dir runs/dryrun

The report is a list of sections. The first is the funnel: every registered stage's records in, out and
drops by reason (its stats.json), with a bar chart each. Then one section per stage that registers a
`report` function in pipeline/stages.py (for example dedup's cluster sizes, the token counts, the loss
curve), then those of commands that write into the run directory (the dry run's fine-tuning), then the
sections of optional scorers the caller passes: a scorer is a function of the run directory that knows
something the run does not, such as the dry-run web's true texts
(pipeline/devweb.py's `score_run`). A section function takes (run_dir, plots_dir) and returns a `Section`
or None when it has nothing to show.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline import storage  # noqa: E402

from pipeline.runner import RunContext  # noqa: E402
from pipeline.stages import STAGES  # noqa: E402


@dataclass
class Section:
    """A part of the report: lines for the summary table, plots (title, run-relative PNG) and plain data."""

    name: str
    lines: list[str] = field(default_factory=list)
    plots: list[tuple[str, str]] = field(default_factory=list)
    data: dict = field(default_factory=dict)


SectionFunction = Callable[[Path, Path], "Section | None"]


def read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def read_rows(run_dir: Path, pattern: str, columns: list[str]) -> list[dict] | None:
    """Rows of every Parquet file matching `pattern` under the run directory (None if there is none)."""
    folder, _, name = pattern.rpartition("/")
    files = sorted((run_dir / folder if folder else run_dir).glob(name))
    if not files:
        return None
    return storage.read_parquet(files, columns).to_pylist()


def bar(path: Path, labels: list[str], values: list[float], title: str, xlabel: str) -> None:
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * len(labels) + 1)))
    ax.barh(labels[::-1], values[::-1], color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    save_figure(fig, path)


def hist(path: Path, values: list[float], title: str, xlabel: str, log: bool = False) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.hist(values, bins=40, color="#55a868", log=log)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    save_figure(fig, path)


def save_figure(fig, path) -> None:
    """A figure as PNG at `path` (a local file or an object)."""
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes(path, png.getvalue())


def stage_stats(run_dir: Path) -> dict:
    """stats.json of every registered stage that has one, in pipeline order."""
    found = {}
    for stage in STAGES:
        stats = read_json(run_dir / stage.folder / "stats.json")
        if stats is not None:
            found[stage.name] = stats
    return found


def funnel_section(run_dir: Path, plots: Path) -> Section:
    """Records in, out and drops by reason per stage, a funnel chart and a drop chart per stage."""
    stages = stage_stats(run_dir)
    section = Section("stages", data=stages)
    counted = {name: stats for name, stats in stages.items() if "records_in" in stats}
    width = max([10, *map(len, counted)])
    section.lines = [f"{'stage':<{width}} {'in':>9} {'out':>9}  dropped by reason", "-" * 78]
    for name, stats in counted.items():
        drops = sorted(((k, v) for k, v in stats.get("dropped", {}).items() if v), key=lambda kv: -kv[1])
        reasons = ", ".join(f"{k}={v}" for k, v in drops) or "-"
        section.lines.append(f"{name:<{width}} {stats['records_in']:>9} {stats['records_out']:>9}  {reasons}")
        if drops:
            bar(plots / f"drops-{name}.png", [k for k, _ in drops], [v for _, v in drops],
                f"{name}: dropped by reason", "records")
            section.plots.append((f"Drop reasons: {name}", f"report/drops-{name}.png"))
    if counted:
        names = list(counted)
        bar(plots / "funnel.png", names, [counted[n]["records_out"] for n in names], "Records out of each stage",
            "records")
        section.plots.insert(0, ("Funnel", "report/funnel.png"))
    docs = read_rows(run_dir, "dedup/docs/part-*.parquet", ["chars", "domain"]) or read_rows(
        run_dir, "docs/part-*.parquet", ["chars", "domain"])
    if docs:
        hist(plots / "doc_lengths.png", [d["chars"] for d in docs], "Document length", "characters")
        top = Counter(d["domain"] for d in docs).most_common(15)
        bar(plots / "top_domains.png", [k for k, _ in top], [v for _, v in top], "Top domains", "documents")
        section.plots += [("Document lengths", "report/doc_lengths.png"), ("Top domains", "report/top_domains.png")]
    return section


# Sections of commands that write into the run directory beside the stages ("module:function").
COMMAND_SECTIONS = ("training.finetune:report_section",)


def sections(run_dir: Path, scorers: list[SectionFunction] = ()) -> list[Section]:
    """The funnel, every stage's own section, the commands' sections, then the scorers', skipping empty ones."""
    plots = run_dir / "report"
    plots.mkdir(exist_ok=True)
    commands = [getattr(importlib.import_module(m), f) for m, f in (t.split(":") for t in COMMAND_SECTIONS)]
    functions = [s.report_function() for s in STAGES if s.report] + commands + list(scorers)
    found = [funnel_section(run_dir, plots)]
    for function in functions:
        section = function(run_dir, plots)
        if section is not None:
            found.append(section)
    return found


def summary_table(found: list[Section]) -> str:
    """The plain-text summary: the stage table, then each other section's lines, a blank line between."""
    return "\n\n".join("\n".join(section.lines) for section in found if section.lines)


def write_report(ctx: RunContext, scorers: list[SectionFunction] = ()) -> list[Section]:
    """Write `<run>/report.md` and `<run>/report/*.png`; return the sections."""
    found = sections(ctx.run_dir, scorers)
    parts = [f"# webtext run report: {ctx.run_dir.name}\n", "```", summary_table(found), "```\n"]
    for section in found:
        parts += [f"## {title}\n\n![{title}]({path})\n" for title, path in section.plots]
    data = {section.name: section.data for section in found}
    parts.append("## Statistics\n\n```json\n" + json.dumps(data, indent=2, sort_keys=True) + "\n```\n")
    (ctx.run_dir / "report.md").write_text("\n".join(parts))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description="(re)write a run's report")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args()
    from pipeline import devweb
    from pipeline.config import load_config

    run_dir = storage.location(args.run_dir)
    scorers = [devweb.score_run] if devweb.was_used(run_dir) else []
    found = write_report(RunContext(run_dir=run_dir, config=load_config(run_dir / "config.toml")), scorers)
    print(summary_table(found))


if __name__ == "__main__":
    main()
