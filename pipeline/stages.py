"""The registry of stages: the one place a stage is named.

`webtext <stage>`, `webtext run`, `jobs/webtext.py` and the run report all read `STAGES`, in pipeline
order. A stage is:

    Stage(name, folder, sections, upstream, run)

- `name`: the command (`webtext crawl`) and the name in commits, stats and the report;
- `folder`: where it writes under the run directory; its `stats.json` there is written last, so it is the
  stage's completion record, and downstream stages refuse an upstream without one;
- `sections`: the config sections it reads, folded into its partitions' fingerprints;
- `upstream`: the stages whose outputs it reads (lineage folds their outputs' digests in);
- `run`: "module:function", called as `function(ctx, **options)`; imported only when the stage runs, so
  this table imports no stage (stages import the runner, which imports this table);
- `options`: its command-line options beyond --run-dir/--config/--set (passed to `run` by name);
- `dataset`: the documents table it writes, for a stage that reads "the documents so far";
- `enabled_by`: a boolean config key ("dedup.enabled"); when false the stage is skipped and readers of
  documents look further upstream;
- `report`: "module:function" returning the stage's section of the run report (pipeline/report.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    """One command-line option of a stage: argparse's add_argument(*flags, **kwargs)."""

    flags: tuple[str, ...]
    kwargs: dict

    @property
    def dest(self) -> str:
        return self.kwargs.get("dest") or self.flags[0].lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Stage:
    name: str
    folder: str
    sections: tuple[str, ...]
    upstream: tuple[str, ...]
    run: str
    help: str
    options: tuple[Option, ...] = ()
    dataset: str = ""
    enabled_by: str = ""
    report: str = ""

    def enabled(self, config) -> bool:
        if not self.enabled_by:
            return True
        section, key = self.enabled_by.split(".")
        return bool(getattr(getattr(config, section), key))

    def function(self):
        return _load(self.run)

    def report_function(self):
        return _load(self.report)


def _load(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


INPUT = Option(("--input",), dict(dest="inputs", nargs="+", required=True, help="dump files, directories or globs"))
PLAN = Option(("--plan",), dict(action="store_true", help="print the projected makespan and the hosts that bound it; "
                                "crawl nothing"))
EVAL_OPTIONS = (
    Option(("--tasks",), dict(required=True, help="comma-separated: lambada,hellaswag,wikitext,text")),
    Option(("--checkpoint",), dict(help="a checkpoint file or step-N folder (default: the run's latest)")),
    Option(("--hf",), dict(help="an HF-format GPT-2 folder (config.json + model.safetensors) instead")),
    Option(("--shots",), dict(type=int, help="few-shot demonstrations per item (default eval.shots)")),
    Option(("--limit",), dict(type=int, help="the first N items of each task (default eval.limit; 0 = all)")),
    Option(("--data-dir",), dict(help="folder of the eval files (default eval.data_dir)")),
    Option(("--clean-only",), dict(action="store_true", help="also score the items decontam/overlap.json calls clean")),
)

STAGES = (
    Stage("reddit", "urls", ("reddit",), (), "pipeline.reddit:run",
          "Pushshift dumps -> candidate URLs with karma >= 3", options=(INPUT,)),
    Stage("crawl", "crawl", ("crawl",), ("reddit",), "pipeline.crawl:run",
          "fetch every URL politely into WARC files and a crawl log", options=(PLAN,),
          report="pipeline.crawl.stage:report_section"),
    Stage("extract", "docs", ("extract",), ("crawl", "reddit"), "pipeline.extract:run",
          "WARC -> main text, language and quality filters -> documents", dataset="docs"),
    Stage("dedup", "dedup", ("dedup",), ("extract",), "pipeline.dedup:run",
          "exact and MinHash LSH near-duplicate removal", dataset="dedup/docs", enabled_by="dedup.enabled",
          report="pipeline.dedup:report_section"),
    Stage("decontaminate", "decontam", ("decontaminate",), ("dedup",), "pipeline.decontaminate:run",
          "remove eval passages (13-gram overlaps) from the documents", dataset="decontam/docs",
          enabled_by="decontaminate.enabled", report="pipeline.decontaminate:report_section"),
    Stage("tokenize", "tokens", ("tokenize",), ("decontaminate",), "pipeline.tokenize:run",
          "GPT-2 BPE -> llm.c token shards and manifest.json", report="pipeline.tokenize:report_section"),
    Stage("train", "train", ("train",), ("tokenize",), "training.train:run",
          "pretrain GPT-2 on the token shards with Ray Train", report="training.train:report_section"),
    Stage("eval", "eval", ("eval",), ("train",), "training.evaluation.stage:run",
          "score the trained (or an HF-format) GPT-2 on LAMBADA, HellaSwag, perplexity", options=EVAL_OPTIONS,
          report="training.evaluation.stage:report_section"),
)
BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    return BY_NAME[name]


def owner_of(phase: str) -> Stage | None:
    """The stage writing `phase` (a folder under the run directory): the one with the longest matching folder."""
    owners = [s for s in STAGES if phase == s.folder or phase.startswith(s.folder + "/")]
    return max(owners, key=lambda s: len(s.folder)) if owners else None


def documents_source(config, name: str) -> Stage:
    """The nearest enabled stage upstream of `name` that writes documents: what `name` reads as its docs."""
    for up in stage(name).upstream:
        candidate = stage(up)
        if candidate.dataset and candidate.enabled(config):
            return candidate
        if candidate.upstream:
            return documents_source(config, up)
    raise ValueError(f"no stage upstream of {name} writes documents")
