"""Shared fixtures: one real local Ray instance for the whole session, temporary run directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "reddit"


def pytest_collection_modifyitems(items):
    """Every test that runs stages on Ray is slow (`make test-fast` leaves them out), whichever fixture brings Ray."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance shared by every test that runs stages (ray.init costs ~7 s)."""
    import ray

    if not ray.is_initialized():
        # Workers import functions defined in test modules (tests/ is not a package).
        tests_dir = str(Path(__file__).resolve().parent)
        path = os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


@pytest.fixture
def samples_dir() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} not present (the shared/ folder beside the project)")
    return SAMPLES


@pytest.fixture(scope="session")
def devweb_site(tmp_path_factory):
    """The dry-run web, built once and served on 127.0.0.2.. for the whole session.

    Yields {"dir": build folder, "site": routes.json dict, "truth": truth rows, "dump": the .zst dump}.
    """
    from pipeline import devweb
    from pipeline.config import DevwebConfig

    out = devweb.build(tmp_path_factory.mktemp("devweb"), devweb.free_port(), DevwebConfig(slow_seconds=3.0))
    with devweb.serving(out) as site:
        yield {"dir": out, "site": site, "truth": devweb.load_truth(out), "dump": out / "RS_devweb.zst"}


@pytest.fixture
def one_thread():
    """torch on one thread: the 2 cores are shared with Ray and other tests; OpenMP spinning on both costs 50x."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
