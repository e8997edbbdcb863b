"""Checks ``mllm validate`` runs beyond the schema: data paths exist."""

from __future__ import annotations

from pathlib import Path

from mllm.pipeline.config import Pipeline, ResolvedComponent


def _paths_of(component: ResolvedComponent) -> list[Path]:
    data_files = getattr(component.spec.load(), "data_files", None)
    if data_files is None or component.config is None:
        return []
    return [Path(p) for p in data_files(component.config)]


def check_data_paths(pipeline: Pipeline) -> list[str]:
    """One message per data file or folder a stage names that does not exist."""
    problems = []
    for stage in pipeline.stages:
        for key, value in stage.components.items():
            for index, component in enumerate(value if isinstance(value, list) else [value]):
                for path in _paths_of(component):
                    if not path.exists():
                        where = f"stages.{stage.id}.{key}" + (f"[{index}]" if isinstance(value, list) else "")
                        problems.append(f"{where}: {component.spec.name} reads {path}, which does not exist")
    return problems
