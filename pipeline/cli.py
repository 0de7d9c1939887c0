"""The `webtext` command: one subcommand per stage, plus `run` (all stages) and `devweb` (the dry-run web).

    webtext reddit   --run-dir runs/x --input 'dumps/RS_2019-*.zst' [--config FILE] [--set k=v ...]
    webtext crawl    --run-dir runs/x
    webtext extract  --run-dir runs/x
    webtext dedup    --run-dir runs/x
    webtext tokenize --run-dir runs/x
    webtext train    --run-dir runs/x
    webtext run      --run-dir runs/x --input ... (every stage in order)
    webtext devweb   --run-dir runs/x            (build the dry-run web and serve it until Ctrl-C)
    webtext export-hf --run-dir runs/x --out DIR (latest checkpoint -> transformers GPT-2 folder)

With no --config, a rerun uses the config frozen in the run directory, so `--set` changes one value of an
existing run. Without RAY_ADDRESS, a local Ray instance is started; with it, the command joins that cluster.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from pipeline.config import ConfigError, load_config

# stage name -> module whose run(ctx, ...) runs it; the order is the pipeline's.
STAGES = {
    "reddit": "pipeline.reddit",
    "crawl": "pipeline.crawl",
    "extract": "pipeline.extract",
    "dedup": "pipeline.dedup",
    "tokenize": "pipeline.tokenize",
    "train": "training.train",
}


def stage_module(name: str):
    """The module that implements stage `name`, or a clear error when that stage is not built yet."""
    try:
        module = importlib.import_module(STAGES[name])
    except ModuleNotFoundError as err:
        if err.name == STAGES[name]:
            raise SystemExit(f"webtext: the {name} stage is not built yet ({STAGES[name]} does not exist)")
        raise
    return module


def _config_for(args) -> "Config":  # noqa: F821
    frozen = Path(args.run_dir) / "config.toml"
    path = args.config or (frozen if frozen.exists() else None)
    return load_config(path, args.set)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True, help="run directory (outputs and frozen config)")
    p.add_argument("--config", help="TOML config (default: the run's frozen config.toml, else built-in)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a value")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webtext", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in STAGES:
        p = sub.add_parser(name, help=f"run the {name} stage")
        _add_common(p)
        if name == "reddit":
            p.add_argument("--input", nargs="+", required=True, help="dump files, directories or globs")
    p = sub.add_parser("run", help="run every stage in order")
    _add_common(p)
    p.add_argument("--input", nargs="+", help="dump files, directories or globs (default: the dry-run web's)")
    p.add_argument("--devweb", action="store_true", help="build and serve the dry-run web for this run")
    p = sub.add_parser("devweb", help="build the dry-run web and serve it until interrupted")
    _add_common(p)
    p = sub.add_parser("export-hf", help="write the latest checkpoint as a transformers GPT-2 folder")
    _add_common(p)
    p.add_argument("--out", required=True, help="output folder (config.json + model.safetensors)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = _config_for(args)
    except ConfigError as err:
        print(f"webtext: config error: {err}", file=sys.stderr)
        return 2
    from pipeline.runner import StageError, open_run

    ctx = open_run(args.run_dir, config)
    try:
        if args.command == "devweb":
            from pipeline import devweb

            devweb.serve_forever(ctx)
            return 0
        if args.command == "export-hf":
            from training.export import export_hf

            print(json.dumps(export_hf(ctx.run_dir, args.out), indent=2))
            return 0
        if args.command == "run":
            from pipeline.run_all import run_all

            run_all(ctx, inputs=args.input, with_devweb=args.devweb)
            return 0
        module = stage_module(args.command)
        stats = module.run(ctx, inputs=args.input) if args.command == "reddit" else module.run(ctx)
        print(json.dumps(stats, indent=2))
        return 0
    except (StageError, ConfigError) as err:
        print(f"webtext {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
