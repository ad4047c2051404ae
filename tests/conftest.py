"""Shared test fixtures: repository paths, the real data folder, deterministic CPU torch."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# the caches (data listings, the compiled scan, downloads) of this test session, not the user's
os.environ["ROMA_CACHE"] = tempfile.mkdtemp(prefix="roma-test-cache-")


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine run far faster without OpenMP thread contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (AID, LEVIR-CD samples); tests needing it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it exists only on the project's machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def aid_root(shared_data: Path) -> Path:
    root = shared_data / "AID"
    if not root.is_dir():
        pytest.skip(f"AID is not at {root}")
    return root


# The real one-node SLURM cluster (slurm/local/start.sh): one session fixture for every test module.
from conftest_slurm import slurm_cluster, submitit_folder  # noqa: E402,F401
