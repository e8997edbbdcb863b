"""``mllm.testing``: the test kit for plugin authors (an opt-in pytest plugin).

Turn it on in a ``conftest.py`` (it is never autoloaded)::

    pytest_plugins = ["mllm.testing"]

Fixtures:

``tiny_llava`` (session)
    a tiny :class:`mllm.models.llava.adapter.LlavaAdapter` (model + processor + chat template),
    built once per session. Shared: use :func:`load_tiny_llava` for a private copy to train.
``plugin_registry``
    an :class:`IsolatedRegistry` (core built-ins, no entry points) that is also the
    process-wide registry while the test runs; ``plugin_registry.register(module,
    distribution="mllm-mine")`` registers a plugin in-process; everything registered is
    unregistered and the previous registry restored afterwards.
``run_pipeline``
    ``run_pipeline(yaml_text_or_path, *overrides) -> Path``: runs a pipeline in a
    temporary runs folder (with the current registry) and returns its run folder
    (``<runs>/<name>/``).

Inputs: :func:`example_records` (valid records of each kind, with images),
:func:`write_image`, :func:`write_records` (a ``records.jsonl`` the ``records-jsonl``
dataset reads).

Conformance kit: :func:`check_plugin`, :func:`parametrize_with_checks` and
:func:`plugin_checks` (see :mod:`mllm.testing.checks` for every check and how a
component declares example config values with ``example_config``).

Importing this module does not import torch; the fixtures and checks import it when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from mllm.data.recordio import write_records
from mllm.testing.chat_server import ChatCompletionsServer
from mllm.testing.checks import (
    Check,
    ConformanceError,
    ExampleStageContext,
    check_plugin,
    parametrize_with_checks,
    plugin_checks,
)
from mllm.testing.fixtures import IsolatedRegistry, ScriptedJudge, current_registry, run_pipeline_in
from mllm.testing.samples import example_records, write_image
from mllm.testing.tiny import TINY_LLAVA, build_tiny_llava, load_tiny_llava, tiny_llava_folder

__all__ = [
    "TINY_LLAVA",
    "ChatCompletionsServer",
    "Check",
    "ConformanceError",
    "ExampleStageContext",
    "IsolatedRegistry",
    "ScriptedJudge",
    "build_tiny_llava",
    "check_plugin",
    "example_records",
    "load_tiny_llava",
    "parametrize_with_checks",
    "plugin_checks",
    "plugin_registry",
    "run_pipeline",
    "run_pipeline_in",
    "tiny_llava",
    "tiny_llava_folder",
    "write_image",
    "write_records",
]


@pytest.fixture(scope="session")
def tiny_llava() -> Any:
    """A tiny LLaVA adapter shared by the session (do not train it; see load_tiny_llava)."""
    return load_tiny_llava()


@pytest.fixture
def plugin_registry() -> Iterator[IsolatedRegistry]:
    """An isolated registry, process-wide while the test runs; see the module docstring."""
    from mllm.plugins import registry as plugins

    previous = current_registry()
    registry = IsolatedRegistry()
    plugins.set_registry(registry)
    try:
        yield registry
    finally:
        registry.close()
        plugins.set_registry(previous)


@pytest.fixture
def run_pipeline(tmp_path: Path) -> Callable[..., Path]:
    """``run_pipeline(yaml_text_or_path, *overrides, registry=None) -> run folder`` in ``tmp_path/runs``."""

    def run(pipeline: str | Path, *overrides: str, registry: Any = None, force: tuple[str, ...] = ()) -> Path:
        return run_pipeline_in(tmp_path / "runs", pipeline, overrides, registry=registry, force=force)

    return run
