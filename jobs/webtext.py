"""The whole pipeline as a Ray job: reddit -> crawl -> extract -> dedup -> tokenize -> train, then the report.

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m jobs.webtext --config jobs/configs/cluster.toml --run-dir /shared/runs/2019 \\
        --input '/shared/pushshift/RS_2019-*.zst'

Inside a job, RAY_ADDRESS points at the cluster and every stage runs its partitions there. The run
directory must be on storage that every node mounts at the same path. Without --input the dry-run web is
built and served (a dry run on the submitting machine's cluster, as the CI test does).
"""

from __future__ import annotations

import argparse
import sys

from pipeline.config import ConfigError, load_config
from pipeline.run_all import run_all
from pipeline.runner import StageError, open_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.webtext", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--config", help="TOML config, e.g. jobs/configs/cluster.toml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--input", nargs="+", help="Pushshift dumps: files, directories or globs")
    args = parser.parse_args(argv)
    try:
        ctx = open_run(args.run_dir, load_config(args.config, args.set))
        run_all(ctx, inputs=args.input, with_devweb=not args.input)
    except (ConfigError, StageError) as err:
        print(f"jobs.webtext: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
