"""Every registered stage in order, then the run report: what `webtext run`, `make dryrun` and
`jobs/webtext.py` call.

    webtext run --run-dir runs/dryrun --config jobs/configs/dryrun.toml --devweb

With `--devweb` (or no --input), the dry-run web is built into `<run>/devweb/`, served on 127.0.0.2..
while the stages run, and its dump is the reddit stage's input; the report then scores extraction and
dedup against its truth, and the run's model is fine-tuned on a generated classification task into
`<run>/finetune/` (its dev accuracy is in the summary). Each stage reruns only the partitions whose
config, inputs or upstream outputs changed (pipeline/runner.py), so rerunning after a crash or an edit
redoes only what it touches; a finished fine-tuning of the same model and data is not redone.
"""

from __future__ import annotations

import contextlib
import sys
import time

from pipeline.runner import RunContext, run_stage
from pipeline.stages import STAGES


def run_all(ctx: RunContext, inputs: list[str] | None = None, with_devweb: bool = False) -> list:
    """Run every stage of pipeline/stages.py on `inputs` (default: the dry-run web) and write the report."""
    from pipeline import devweb, report

    started = time.monotonic()
    serve = with_devweb or not inputs
    if serve:
        devweb_dir = devweb.build_for_run(ctx)
        inputs = inputs or [str(devweb_dir / "RS_devweb.zst")]
    with devweb.serving(ctx.path("devweb")) if serve else contextlib.nullcontext():
        for stage in STAGES:
            print(f"[run] stage {stage.name}", file=sys.stderr, flush=True)
            options = {"inputs": inputs} if any(o.dest == "inputs" for o in stage.options) else {}
            run_stage(ctx, stage.name, **options)
    if serve:  # the dry run also fine-tunes its model on a generated task (training/finetune.py)
        from training.finetune import dryrun_finetune

        print("[run] finetune (a generated task)", file=sys.stderr, flush=True)
        dryrun_finetune(ctx)
    summary = report.write_report(ctx, scorers=[devweb.score_run] if serve else [])
    print(report.summary_table(summary))
    print(f"\nreport: {ctx.path('report.md')}  ({time.monotonic() - started:.0f}s)")
    return summary
