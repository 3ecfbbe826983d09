import os

# OpenMP threads spin-wait by default: on a busy 2-core machine that slows torch by 10x or more.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def toy_sweep(tmp_path_factory):
    """The pinned toy sweep (tests/study/_golden.py), run once per session, uninterrupted, in this process: the
    reference the fault tests compare with byte for byte, and that test_golden compares with the pinned file."""
    from study._golden import run_toy_sweep

    return run_toy_sweep(tmp_path_factory.mktemp("toy_sweep"))


@pytest.fixture(scope="session")
def scorer_cache(tmp_path_factory):
    """One cache directory per session for the built-in gen-PPL scorer (probes/scorers.py), converted at most once:
    the one tests/test_docs.py gives the documents' commands as ``BASINLAB_CACHE``."""
    path = tmp_path_factory.getbasetemp() / "basinlab-cache"
    path.mkdir(exist_ok=True)
    return path
