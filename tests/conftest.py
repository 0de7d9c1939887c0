"""Shared fixtures: one real local Ray instance for the whole session, temporary run directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "reddit"


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance shared by every test that runs stages (ray.init costs ~7 s)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def samples_dir() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} not present (the shared/ folder beside the project)")
    return SAMPLES
