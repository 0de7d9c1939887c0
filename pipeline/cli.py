"""The `webtext` command: one subcommand per registered stage (pipeline/stages.py), plus `run`, `devweb`,
`export-hf` and `finetune`.

    webtext reddit   --run-dir runs/x --input 'dumps/RS_2019-*.zst' [--config FILE] [--set k=v ...]
    webtext crawl    --run-dir runs/x          (and every other stage of pipeline/stages.py)
    webtext run      --run-dir runs/x --input ... (every stage in order, then the report)
    webtext devweb   --run-dir runs/x            (build the dry-run web and serve it until Ctrl-C)
    webtext export-hf --run-dir runs/x --out DIR (latest checkpoint -> transformers GPT-2 folder)
    webtext finetune --task sst2 --data DIR --from runs/x --out DIR   (GPT-1 fine-tuning, training/finetune.py)

`finetune` is a command, not a stage: the stages are the corpus pipeline over one run directory, each
reading its upstream's committed partitions, run in order by `webtext run`; fine-tuning reads a user's task
files and any pretrained model (a run, a checkpoint or a transformers folder), once per task, into its own
--out folder, which it locks and freezes its config into as a stage does a run directory.

With no --config, a rerun uses the config frozen in the run directory, so `--set` changes one value of an
existing run. The whole config is checked before anything runs, and frozen only once it is valid; a
command that writes holds the run directory's lock. Errors are one line: exit 2 for a config, input or
run-directory problem (nothing ran), 1 for a stage that failed. Without RAY_ADDRESS, a local Ray
instance is started; with it, the command joins that cluster.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from pipeline.config import Config, ConfigError, load_config
from pipeline.stages import STAGES, stage


def _config_for(args) -> Config:
    from pipeline.runner import resolve_run_dir

    frozen = resolve_run_dir(args.out if args.command == "finetune" else args.run_dir) / "config.toml"
    path = args.config or (frozen if frozen.exists() else None)
    return load_config(path, args.set)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True, help="run directory (outputs and frozen config)")
    p.add_argument("--config", help="TOML config (default: the run's frozen config.toml, else built-in)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a value")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webtext", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for s in STAGES:
        p = sub.add_parser(s.name, help=s.help)
        _add_common(p)
        for option in s.options:
            p.add_argument(*option.flags, **option.kwargs)
    p = sub.add_parser("run", help="run every stage in order, then write the report")
    _add_common(p)
    p.add_argument("--input", nargs="+", help="dump files, directories or globs (default: the dry-run web's)")
    p.add_argument("--devweb", action="store_true", help="build and serve the dry-run web for this run")
    p = sub.add_parser("devweb", help="build the dry-run web and serve it until interrupted")
    _add_common(p)
    p = sub.add_parser("export-hf", help="write the latest checkpoint as a transformers GPT-2 folder")
    _add_common(p)
    p.add_argument("--out", required=True, help="output folder (config.json + model.safetensors)")
    p = sub.add_parser("finetune", help="fine-tune a pretrained GPT-2 on a task with GPT-1's input transformations")
    p.add_argument("--task", required=True, help="sst2, rte, mrpc, stsb, race, storycloze or custom (training/tasks.py)")
    p.add_argument("--data", required=True, help="folder holding the task's train and dev files")
    p.add_argument("--from", dest="source", required=True,
                   help="run directory, checkpoint.pt (or its folder), or transformers GPT-2 folder")
    p.add_argument("--out", required=True, help="output folder: checkpoints, results.json, hf/ (and its frozen config)")
    p.add_argument("--config", help="TOML config (default: OUT's frozen config.toml, else built-in)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a value")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    from pipeline.runner import RunLock, StageError, check_run_dir, locked_run, resolve_run_dir, run_stage

    command_line = shlex.join(["webtext", *argv])
    try:
        config = _config_for(args)
        if args.command == "export-hf":
            from training.export import export_hf

            print(json.dumps(export_hf(resolve_run_dir(args.run_dir), args.out), indent=2))
            return 0
        if args.command == "finetune":
            from training.finetune import finetune

            with RunLock(check_run_dir(args.out), command_line):  # finetune freezes the config once it is accepted
                print(json.dumps(finetune(config, args.task, args.data, args.source, resolve_run_dir(args.out)), indent=2))
            return 0
        with locked_run(args.run_dir, config, command_line) as ctx:
            if args.command == "devweb":
                from pipeline import devweb

                out_dir = devweb.build_for_run(ctx)
            elif args.command == "run":
                from pipeline.run_all import run_all

                run_all(ctx, inputs=args.input, with_devweb=args.devweb)
            else:
                options = {o.dest: getattr(args, o.dest) for o in stage(args.command).options}
                print(json.dumps(run_stage(ctx, args.command, **options), indent=2))
        if args.command == "devweb":
            devweb.serve_forever(out_dir)  # outside the lock: stages run against this web meanwhile
        return 0
    except ConfigError as err:
        print(f"webtext {args.command}: {err}", file=sys.stderr)
        return 2
    except StageError as err:
        print(f"webtext {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
