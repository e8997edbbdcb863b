"""What a score rule, transform op or pairing gets while a stage runs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mllm.data.badrows import DataReport


class ComponentContext:
    """The stage folder, seed, registry and logger of the running stage, the bad-row report
    of a transform op, and :meth:`build_judge` for components that call a model.

    Args:
        stage_dir: the stage's folder (caches of model calls go here).
        seed: the stage's seed.
        registry: the registry the pipeline was loaded with (``None``: the process-wide one).
        report: the bad-row report rows are checked against (ops); ``None`` for score rules.
        where: ``stage 'x' op 0 (name)``-style label for messages.
        logger: the stage's logger.
    """

    def __init__(self, stage_dir: Path, seed: int = 0, registry: Any = None, report: DataReport | None = None,
                 where: str = "", logger: Any = None) -> None:
        self.stage_dir = Path(stage_dir)
        self.seed = seed
        self.registry = registry
        self.report = report if report is not None else DataReport(source=where or "component")
        self.where = where
        self.logger = logger if logger is not None else logging.getLogger("mllm")

    def get_registry(self) -> Any:
        if self.registry is None:
            from mllm.plugins.registry import get_registry

            self.registry = get_registry()
        return self.registry

    def build_judge(self, ref: Any, key: str, cache: Path | None = None) -> Any:
        """A judge from ``{name: ..., <its keys>}``, validated against the judge's config.

        ``cache``: the file a judge with a ``cache`` key caches to when the reference sets none."""
        from mllm.pipeline.config import resolve_component

        if hasattr(ref, "model_dump"):
            ref = ref.model_dump()
        resolved = resolve_component(self.get_registry(), "judge", dict(ref), f"{self.where}.{key}")
        config = resolved.config
        if cache is not None and config is not None and "cache" in type(config).model_fields \
                and getattr(config, "cache", None) is None:
            config = config.model_copy(update={"cache": str(cache)})
        impl = resolved.spec.load()
        return impl(config) if config is not None else impl()
