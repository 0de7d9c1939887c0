"""The whole pipeline as a Ray job: every registered stage, then the report (`webtext run`'s code path).

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m jobs.webtext --config jobs/configs/cluster.toml --run-dir /shared/runs/2019 \\
        --input '/shared/pushshift/RS_2019-*.zst'

Inside a job, RAY_ADDRESS points at the cluster and every stage runs its partitions there. The run
directory must be on storage that every node mounts at the same path. Without --input the dry-run web is
built and served (a dry run on the submitting machine's cluster, as the CI test does). The options are
`webtext run`'s.
"""

from __future__ import annotations

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
