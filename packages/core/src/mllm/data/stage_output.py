"""The ``stage-output`` dataset: the records an earlier generate (or transform) stage wrote,
as they are or as Preference pairs made by a registered pairing.

A train stage's ``data: {from: <stage>, pairs: <pairing>}`` is this dataset:
``{name: stage-output, stage: <stage>, pairs: <pairing>}`` is the same. ``pairs`` names a
pairing (kind ``pairing``: ``wrong-vs-gold`` in the core, plugins add more), optionally
with its keys: ``pairs: {name: <pairing>, <its keys>}``. Without ``pairs`` the records
are read as written (Conversations).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterator, Union

from pydantic import Field

from mllm.data.badrows import DataReport
from mllm.data.recordio import read_records, stage_records_path
from mllm.interfaces import DatasetConfig
from mllm.plugins.kinds import ComponentKind

#: ``pairs:``: a pairing's name, or ``{name: <pairing>, <its keys>}``
PairsRef = Union[str, dict[str, Any]]


class StageOutputConfig(DatasetConfig):
    """``stage-output``: the records an earlier generate (or transform) stage wrote."""

    # pairs names a component: the pipeline loader resolves it (did you mean, its keys)
    component_fields: ClassVar[dict[str, ComponentKind]] = {"pairs": "pairing"}

    stage: str = Field(description="id of an earlier stage that wrote records.jsonl")
    pairs: PairsRef | None = Field(None, description="a pairing (wrong-vs-gold, or a plugin's, e.g. best-vs-worse) "
                                                     "that makes Preference pairs; none: the records as written")

    def stage_inputs(self) -> list[str]:
        """The stage read is an input: it must come earlier, and its fingerprint chains into the reader's."""
        return [self.stage]


def pairing_ref(pairs: PairsRef) -> dict[str, Any]:
    """``{name: ..., <keys>}`` of a ``pairs:`` value."""
    return {"name": pairs} if isinstance(pairs, str) else dict(pairs)


class StageOutput:
    """The ``stage-output`` dataset (``data: {from: <stage>, pairs: ...}`` of a train stage)."""

    record_kind: ClassVar[str] = "conversation"

    def __init__(self, config: StageOutputConfig, registry: Any = None) -> None:
        self.config = config
        self.registry = registry
        self.record_kind = "preference" if config.pairs else "conversation"  # type: ignore[misc]

    def path(self) -> Path:
        return stage_records_path(self.config.stage)

    def pairing(self) -> Any:
        """The pairing ``pairs`` names, built with its keys."""
        from mllm.pipeline.config import resolve_component
        from mllm.plugins.registry import get_registry

        registry = self.registry if self.registry is not None else get_registry()
        return resolve_component(registry, "pairing", pairing_ref(self.config.pairs), "pairs").build()

    def records(self, report: DataReport) -> Iterator[Any]:
        path = self.path()
        records = read_records(path, report)
        if self.config.pairs:
            yield from self.pairing().pairs(records, report, path)
        else:
            yield from records
