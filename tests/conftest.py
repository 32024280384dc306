import os

import pytest
import torch

# Under pytest-xdist (`make test` runs TEST_WORKERS processes) each process gets its share of the cores, for its own
# PyTorch and, through OMP_NUM_THREADS, for the commands it starts (torchrun, the benchmarks): several processes of
# every core each would run 2-3x slower than their share.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    CORES_PER_WORKER = max(1, (os.cpu_count() or 1) // WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(CORES_PER_WORKER)
    torch.set_num_threads(CORES_PER_WORKER)


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory):
    """mocokit's cache (zoo downloads, the compile ledger, Inductor's kernels) in a folder of the test session, for
    this process and the commands it starts: the suite neither reads nor fills the user's ~/.cache/mocokit."""
    saved = {name: os.environ.get(name) for name in ("MOCOKIT_CACHE", "TORCHINDUCTOR_CACHE_DIR")}
    os.environ["MOCOKIT_CACHE"] = str(tmp_path_factory.mktemp("mocokit-cache"))
    os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state, so random inputs are reproducible."""
    torch.manual_seed(0)


def pytest_collection_modifyitems(items):
    """Files with end-to-end tests on real data (marked slow) run first. `make test` hands whole files to its
    processes in collection order (`--dist loadfile`), so a long file collected last ran alone at the end of the
    suite (the CIFAR-10 quality test: its last ~7 minutes); started first, it overlaps the fast files instead."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # a stable sort: the order within each group is kept
