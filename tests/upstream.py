"""Hand-written stage outputs, committed as their stage would have committed them.

Downstream stages read their upstream through the runner's commits (pipeline/runner.py), so a test that
writes, say, urls/part-00000.parquet by hand records it here as a finished reddit stage's partition.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import stages, storage
from pipeline.runner import file_record


def commit_as_upstream(run_dir: Path, phase: str, partitions: list[list[str]]) -> None:
    """Commit records for `phase` naming each partition's files (run-relative), and its stage's stats.json."""
    owner = stages.owner_of(phase)
    for index, files in enumerate(partitions):
        storage.write_json(run_dir / phase / "_commits" / f"part-{index:05d}.json", {
            "partition": index, "stage": owner.name, "fingerprint": "written-by-a-test", "config": "", "spec": "",
            "reads": {}, "counts": {}, "info": {}, "seconds": 0.0,
            "files": {rel: file_record(run_dir / rel) for rel in files},
        })
    if not (run_dir / owner.folder / "stats.json").exists():
        storage.write_json(run_dir / owner.folder / "stats.json", {"stage": owner.folder})
