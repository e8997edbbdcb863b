"""Shared fixtures of mllm-core's tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTPLUG_SRC = Path(__file__).parent / "testplug" / "src"


@pytest.fixture
def testplug_registry(monkeypatch):
    """A registry with the core built-ins plus the test plugin, registered in-process."""
    from mllm.plugins import registry as plugins

    monkeypatch.syspath_prepend(str(TESTPLUG_SRC))
    sys.modules.pop("mllm_testplug.plugin", None)
    import mllm_testplug.plugin

    registry = plugins.Registry(autoload=False)
    assert registry.register_plugin(mllm_testplug.plugin, distribution="mllm-testplug", version="1.2.3")
    plugins.set_registry(registry)
    yield registry
    plugins.set_registry(None)


@pytest.fixture
def write_pipeline(tmp_path):
    """Write a pipeline YAML (text) into tmp_path and return its path."""

    def write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
