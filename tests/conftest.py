"""Shared test set-up: one thread (CI has 2 cores), no progress bars, a private cache."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("EDGEKD_NO_PROGRESS", "1")
os.environ.setdefault("EDGEKD_TRAIN_THREADS", "1")  # training too (edgekd.train.threads)


@pytest.fixture(autouse=True, scope="session")
def _quiet_torch():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Every test session gets its own teacher cache, so tests never depend on a warm machine."""
    if "EDGEKD_CACHE" not in os.environ or os.environ.get("CI"):
        os.environ["EDGEKD_CACHE"] = str(tmp_path_factory.mktemp("edgekd-cache"))
    yield


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip cleanly without a CUDA device."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none present")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
