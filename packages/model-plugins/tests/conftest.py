"""``families`` tests (each family's full matrix) run only with ``MLLM_FAMILIES=1`` or ``-m families``:
the README's test command runs one family's matrix, the rest on request."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("MLLM_FAMILIES") == "1" or "families" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="a further family's matrix: run with MLLM_FAMILIES=1 or -m families")
    for item in items:
        if "families" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a
    small shared CPU, more threads spin against other processes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
