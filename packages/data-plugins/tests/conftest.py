"""Shared fixtures of mllm-data's tests: small generated images, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_data() -> Path:
    """``$MLLM_SHARED_DATA``, default ``<repo>/../shared/data`` (read in place, never copied)."""
    default = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
    return Path(os.environ.get("MLLM_SHARED_DATA", default)).resolve()


@pytest.fixture
def cqm_a_file() -> Path:
    path = shared_data() / "reference" / "llava-v1.5-13b" / "scienceqa" / "llava_test_CQM-A.json"
    if not path.is_file():
        pytest.skip(f"LLaVA's ScienceQA question file is not at {path} (set MLLM_SHARED_DATA)")
    return path


@pytest.fixture
def make_image():
    """Write a small PNG (default 24x16, non-square) and return its path."""
    from PIL import Image

    def make(path: Path, size: tuple[int, int] = (24, 16), colour: str = "red") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, colour).save(path)
        return path

    return make


@pytest.fixture
def load():
    """All records of a dataset (with its config's bad-row policy) and the DataReport."""
    from mllm.data.badrows import DataReport

    def run(dataset) -> tuple[list, DataReport]:
        config = dataset.config
        report = DataReport(source="test", on_bad_row=config.on_bad_row, max_bad_fraction=config.max_bad_fraction)
        records = list(dataset.records(report))
        report.finish()
        return records, report

    return run
