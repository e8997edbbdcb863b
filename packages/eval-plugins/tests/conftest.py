"""Shared fixtures of mllm-eval's tests: the shared real-data folder (read in place, never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_data_dir() -> Path:
    """``$MLLM_SHARED_DATA``, default ``<repo>/../shared/data``."""
    default = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
    return Path(os.environ.get("MLLM_SHARED_DATA", default)).resolve()


@pytest.fixture
def llava15_reference() -> Path:
    """LLaVA-1.5-13B's released outputs (``reference/llava-v1.5-13b``); skips when absent."""
    path = shared_data_dir() / "reference" / "llava-v1.5-13b"
    if not path.is_dir():
        pytest.skip(f"shared real data not found at {path} (set MLLM_SHARED_DATA to the shared/data folder)")
    return path
