"""The run report: `<run>/report.md` with PNG plots, and the summary table `webtext run` prints.

Built from what the stages left in the run directory (stats.json of each stage, docs, clusters, the
token manifest, training metrics), so it can be regenerated at any time:

    python -m pipeline.report --run-dir runs/dryrun

When the run used the dry-run web, extraction and dedup are also scored against its truth: token F1 of
each extracted document against the page's true article text, and the share of same-group page pairs
that dedup put in one cluster.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from itertools import combinations
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipeline.runner import RunContext  # noqa: E402
from pipeline.stages import STAGES  # noqa: E402



def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _table(run_dir: Path, pattern: str, columns: list[str]):
    files = sorted(run_dir.glob(pattern))
    if not files:
        return None
    return [row for f in files for row in pq.read_table(f, columns=columns).to_pylist()]


def score_against_truth(run_dir: Path) -> dict:
    """Extraction F1 and dedup pair recall against the dry-run web's truth (empty if not a dry run)."""
    from pipeline.devweb import load_truth
    from pipeline.quality import mean_f1

    if not (run_dir / "devweb" / "truth.jsonl").exists():
        return {}
    truth = {row["url"]: row for row in load_truth(run_dir / "devweb")}
    scores: dict = {}
    docs = _table(run_dir, "docs/part-*.parquet", ["doc_id", "url", "text"])
    if docs is not None:
        pairs = [(d["text"], truth[d["url"]]["text"]) for d in docs if truth.get(d["url"], {}).get("text")]
        precision, recall, f1 = mean_f1(pairs)
        expected = {u for u, t in truth.items() if t["expected"] in ("doc", "redirect_to_duplicate")}
        scores["extract"] = {"pages_scored": len(pairs), "precision": precision, "recall": recall, "f1": f1,
                             "expected_docs_found": len(expected & {d["url"] for d in docs}),
                             "expected_docs": len(expected)}
    clusters = _table(run_dir, "dedup/clusters.parquet", ["doc_id", "cluster_id"])
    if docs is not None and clusters is not None:
        cluster_of = {c["doc_id"]: c["cluster_id"] for c in clusters}
        groups: dict[str, list[str]] = {}
        for d in docs:
            group = truth.get(d["url"], {}).get("dup_group")
            if group:
                groups.setdefault(group, []).append(d["doc_id"])
        pairs = [(a, b) for ids in groups.values() for a, b in combinations(sorted(ids), 2)]
        found = sum(cluster_of.get(a) is not None and cluster_of.get(a) == cluster_of.get(b) for a, b in pairs)
        scores["dedup"] = {"groups": len(groups), "pairs": len(pairs), "pairs_found": found,
                           "pair_recall": found / len(pairs) if pairs else None}
    return scores


def _train_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "train" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def collect(run_dir: Path) -> dict:
    """Everything the report and the summary table show, as plain data."""
    stages = {}
    for stage in STAGES:
        stats = _read_json(run_dir / stage.folder / "stats.json")
        if stats is not None:
            stages[stage.name] = stats
    manifest = _read_json(run_dir / "tokens" / "manifest.json")
    metrics = _train_metrics(run_dir)
    train_losses = [m["loss"] for m in metrics if m.get("loss") is not None]
    val_losses = [m["val_loss"] for m in metrics if m.get("val_loss") is not None]
    return {
        "stages": stages,
        "truth": score_against_truth(run_dir),
        "tokens": manifest.get("totals") if manifest else None,
        "train": {"final_loss": train_losses[-1] if train_losses else None,
                  "final_val_loss": val_losses[-1] if val_losses else None,
                  "steps": metrics[-1].get("step") if metrics else None},
    }


def summary_table(summary: dict) -> str:
    """A plain-text table: per stage records in, out and drops by reason, then quality and training."""
    lines = [f"{'stage':<10} {'in':>9} {'out':>9}  dropped by reason", "-" * 78]
    for stage, stats in summary["stages"].items():
        if "records_in" not in stats:
            continue
        drops = ", ".join(f"{k}={v}" for k, v in sorted(stats.get("dropped", {}).items(), key=lambda kv: -kv[1]) if v)
        lines.append(f"{stage:<10} {stats.get('records_in', ''):>9} {stats.get('records_out', ''):>9}  {drops or '-'}")
    truth = summary["truth"]
    if "extract" in truth:
        e = truth["extract"]
        lines.append(f"\nextraction vs truth: F1 {e['f1']:.3f} (precision {e['precision']:.3f}, recall "
                     f"{e['recall']:.3f}) over {e['pages_scored']} pages; {e['expected_docs_found']}/"
                     f"{e['expected_docs']} expected documents kept")
    if truth.get("dedup", {}).get("pair_recall") is not None:
        d = truth["dedup"]
        lines.append(f"dedup vs truth: {d['pairs_found']}/{d['pairs']} duplicate pairs clustered "
                     f"(recall {d['pair_recall']:.3f}) across {d['groups']} groups")
    if summary["tokens"]:
        lines.append(f"tokens: {json.dumps(summary['tokens'], sort_keys=True)}")
    t = summary["train"]
    if t["final_loss"] is not None:
        val = f"{t['final_val_loss']:.3f}" if t["final_val_loss"] is not None else "n/a"
        lines.append(f"train: {t['steps']} steps, final train loss {t['final_loss']:.3f}, val loss {val}")
    return "\n".join(lines)


def _bar(path: Path, labels: list[str], values: list[float], title: str, xlabel: str) -> None:
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * len(labels) + 1)))
    ax.barh(labels[::-1], values[::-1], color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _hist(path: Path, values: list[float], title: str, xlabel: str, log: bool = False) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.hist(values, bins=40, color="#55a868", log=log)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plots(run_dir: Path, summary: dict) -> list[tuple[str, str]]:
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    made = []
    stages = summary["stages"]
    funnel = [(label, stages[s]["records_out"]) for s, label in
              [("reddit", "URLs"), ("crawl", "fetched"), ("extract", "extracted"), ("dedup", "deduplicated")]
              if s in stages]
    if funnel:
        _bar(out / "funnel.png", [f[0] for f in funnel], [f[1] for f in funnel], "Funnel", "records")
        made.append(("Funnel", "report/funnel.png"))
    for stage, stats in stages.items():
        drops = sorted(((k, v) for k, v in stats.get("dropped", {}).items() if v), key=lambda kv: -kv[1])
        if drops:
            _bar(out / f"drops-{stage}.png", [k for k, _ in drops], [v for _, v in drops],
                 f"{stage}: dropped by reason", "records")
            made.append((f"Drop reasons: {stage}", f"report/drops-{stage}.png"))
    docs = _table(run_dir, "dedup/docs/part-*.parquet", ["chars", "domain"]) or _table(
        run_dir, "docs/part-*.parquet", ["chars", "domain"])
    if docs:
        _hist(out / "doc_lengths.png", [d["chars"] for d in docs], "Document length", "characters")
        made.append(("Document lengths", "report/doc_lengths.png"))
        top = Counter(d["domain"] for d in docs).most_common(15)
        _bar(out / "top_domains.png", [k for k, _ in top], [v for _, v in top], "Top domains", "documents")
        made.append(("Top domains", "report/top_domains.png"))
    clusters = _table(run_dir, "dedup/clusters.parquet", ["cluster_id"])
    if clusters:
        sizes = list(Counter(c["cluster_id"] for c in clusters).values())
        _hist(out / "cluster_sizes.png", sizes, "Dedup cluster sizes (documents per cluster)", "size", log=True)
        made.append(("Dedup cluster sizes", "report/cluster_sizes.png"))
    metrics = _train_metrics(run_dir)
    if metrics:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        train = [(m["step"], m["loss"]) for m in metrics if m.get("loss") is not None]
        val = [(m["step"], m["val_loss"]) for m in metrics if m.get("val_loss") is not None]
        for points, style, label in ((train, "-", "train"), (val, "o-", "val")):
            if points:
                ax.plot(*zip(*points), style, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("Training loss")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "loss.png", dpi=100)
        plt.close(fig)
        made.append(("Training loss", "report/loss.png"))
    return made


def write_report(ctx: RunContext) -> dict:
    """Write `<run>/report.md` and `<run>/report/*.png`; return the summary."""
    summary = collect(ctx.run_dir)
    plots = _plots(ctx.run_dir, summary)
    parts = [f"# webtext run report: {ctx.run_dir.name}\n", "```", summary_table(summary), "```\n"]
    parts += [f"## {title}\n\n![{title}]({path})\n" for title, path in plots]
    parts.append("## Stage statistics\n\n```json\n" + json.dumps(summary, indent=2, sort_keys=True) + "\n```\n")
    (ctx.run_dir / "report.md").write_text("\n".join(parts))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description="(re)write a run's report")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args()
    from pipeline.config import load_config

    run_dir = Path(args.run_dir).resolve()
    summary = write_report(RunContext(run_dir=run_dir, config=load_config(run_dir / "config.toml")))
    print(summary_table(summary))


if __name__ == "__main__":
    main()
