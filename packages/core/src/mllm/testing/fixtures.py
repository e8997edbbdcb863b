"""Helpers behind the kit's fixtures: an isolated registry, a pipeline runner, a scripted judge."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

from mllm.plugins.registry import Registry, get_registry, set_registry


class IsolatedRegistry(Registry):
    """A :class:`mllm.plugins.registry.Registry` without entry points, for tests.

    ``register(plugin, distribution=...)`` registers a plugin module (or any object with
    hook implementations) and raises with the cause when it fails; :meth:`close`
    unregisters every distribution registered through it.
    """

    def __init__(self, *, builtins: bool = True) -> None:
        super().__init__(autoload=False, builtins=builtins)
        self.registered: list[str] = []

    def register(self, plugin: ModuleType | Any, *, distribution: str = "plugin-under-test",
                 version: str = "0") -> "IsolatedRegistry":
        if not self.register_plugin(plugin, distribution=distribution, version=version):
            failure = self.failures[-1]
            raise RuntimeError(f"registering {getattr(plugin, '__name__', plugin)!r} as {distribution} failed: "
                               f"{failure.cause}\n{failure.detail}")
        self.registered.append(distribution)
        return self

    def close(self) -> None:
        for distribution in self.registered:
            self.unregister_distribution(distribution)
        self.registered.clear()


def current_registry() -> Registry | None:
    """The process-wide registry if one was created, without creating it."""
    from mllm.plugins import registry as plugins

    return plugins._default


def run_pipeline_in(runs_dir: Path, pipeline: str | Path, overrides: Iterable[str] = (),
                    registry: Registry | None = None, force: Iterable[str] = ()) -> Path:
    """Validate and run a pipeline (a YAML file or YAML text) under ``runs_dir``; return its run folder.

    ``registry`` defaults to the process-wide one (which the ``plugin_registry`` fixture
    replaces while it is active).
    """
    from mllm.pipeline.config import load_pipeline
    from mllm.pipeline.runner import PipelineRunner

    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    text = str(pipeline)
    if isinstance(pipeline, Path) or ("\n" not in text and Path(text).is_file()):
        path = Path(pipeline)
    else:
        path = runs_dir / "pipeline.yaml"
        path.write_text(text)
    registry = registry or get_registry()
    loaded = load_pipeline(path, registry, list(overrides))
    runner = PipelineRunner(loaded, registry, runs_dir, force=tuple(force))
    runner.run()
    return runner.run_dir


class ScriptedJudge:
    """A judge that replies from a script (satisfies :class:`mllm.interfaces.Judge`).

    ``ScriptedJudge("8 7")`` always replies ``"8 7"``; ``ScriptedJudge(["0.5", "1.0"])``
    cycles through the list. Every prompt is kept in :attr:`prompts`.
    """

    def __init__(self, replies: str | list[str] = "yes") -> None:
        self._replies = itertools.cycle([replies] if isinstance(replies, str) else list(replies))
        self.prompts: list[tuple[str, str | None]] = []

    def complete(self, prompt: str, *, system: str | None = None) -> str:
        self.prompts.append((prompt, system))
        return next(self._replies)


__all__ = ["IsolatedRegistry", "ScriptedJudge", "current_registry", "run_pipeline_in", "set_registry"]
