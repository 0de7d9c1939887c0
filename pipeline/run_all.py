"""Every stage in order, then the run report: what `webtext run`, `make dryrun` and `jobs/webtext.py` call.

    webtext run --run-dir runs/dryrun --config jobs/configs/dryrun.toml --devweb

With `--devweb` (or no --input), the dry-run web is built into `<run>/devweb/`, served on 127.0.0.2..
while the stages run, and its dump is the reddit stage's input; the report then scores extraction and
dedup against its truth. Each stage resumes from its committed partitions, so rerunning after a crash
redoes only unfinished work. A stage that is not built yet ends the run there, saying so.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time

from pipeline.cli import STAGES
from pipeline.runner import RunContext


def _stage(name: str):
    try:
        return importlib.import_module(STAGES[name])
    except ModuleNotFoundError as err:
        if err.name == STAGES[name]:
            return None
        raise


def run_all(ctx: RunContext, inputs: list[str] | None = None, with_devweb: bool = False) -> dict:
    """Run reddit -> ... -> train on `inputs` (default: the dry-run web) and write the report."""
    from pipeline import devweb, report

    started = time.monotonic()
    serve = with_devweb or not inputs
    if serve:
        devweb_dir = devweb.build_for_run(ctx)
        inputs = inputs or [str(devweb_dir / "RS_devweb.zst")]
    if not ctx.config.dedup.enabled:
        print("[run] dedup disabled: tokenize reads docs/", file=sys.stderr)
    with devweb.serving(ctx.path("devweb")) if serve else contextlib.nullcontext():
        for name in STAGES:
            if name == "dedup" and not ctx.config.dedup.enabled:
                continue
            module = _stage(name)
            if module is None:
                print(f"[run] the {name} stage is not built yet ({STAGES[name]}); stopping after the stages "
                      "before it", file=sys.stderr)
                break
            print(f"[run] stage {name}", file=sys.stderr, flush=True)
            module.run(ctx, inputs=inputs) if name == "reddit" else module.run(ctx)
    summary = report.write_report(ctx)
    print(report.summary_table(summary))
    print(f"\nreport: {ctx.path('report.md')}  ({time.monotonic() - started:.0f}s)")
    return summary
