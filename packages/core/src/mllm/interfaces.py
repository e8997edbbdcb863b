"""Protocols each component kind satisfies (no base classes to inherit).

A component is constructed as ``Impl(config)`` where ``config`` is an instance of the
pydantic model its spec names (or ``None``). Configs subclass :class:`ComponentConfig`
(unknown keys rejected); dataset configs subclass :class:`DatasetConfig` for the
bad-row policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Literal, Protocol, Sequence, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from mllm.data.badrows import DataReport, OnBadRow
from mllm.records import EvalItem, Record, RecordKind

if TYPE_CHECKING:  # torch stays out of import time
    import torch


class ComponentConfig(BaseModel):
    """Base of every component config: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatasetConfig(ComponentConfig):
    """Base of dataset configs: the bad-row policy of ARCHITECTURE.md."""

    on_bad_row: OnBadRow = Field("error", description="error: stop at the first bad row; skip: list it in data_report.json")
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0, description="with skip, the largest tolerated share of bad rows")


@runtime_checkable
class ModelAdapter(Protocol):
    """Loads or builds a model and gives what methods and the engine need.

    Class methods ``from_config(config)`` (build or load what the pipeline's ``model:``
    says) and ``load(path)`` (a folder written by :meth:`save`) construct it.
    """

    model: Any  # a transformers PreTrainedModel (possibly peft-wrapped)
    processor: Any
    tokenizer: Any

    def module_names(self) -> dict[str, str]:
        """Dotted module paths of ``vision_tower``, ``projector`` and ``language_model``."""

    def encode_images(self, pixel_values: "torch.Tensor") -> "torch.Tensor":
        """Image features as the language model consumes them (after the projector)."""

    def save(self, path: Path) -> None:
        """Write a ``save_pretrained`` folder (safetensors) that :meth:`load` reads."""


@runtime_checkable
class Dataset(Protocol):
    """Turns a source into records, following the bad-row policy through ``report``."""

    record_kind: ClassVar[RecordKind]

    def records(self, report: DataReport) -> Iterable[Record]:
        """Yield records; build each inside ``report.row(file=..., row=...)``."""

    @classmethod
    def data_files(cls, config: Any) -> Sequence[Path]:
        """Data files (or folders) read, for the stage fingerprint (size and mtime are hashed).

        Benchmarks may define it too."""


@runtime_checkable
class Method(Protocol):
    """An alignment method hosted by the core trainer."""

    record_kind: ClassVar[RecordKind]

    def setup(self, adapter: ModelAdapter) -> Any:
        """Freeze modules or wrap with LoRA; return the module to train."""

    def prepare(self, context: Any) -> None:
        """One-off work before training (e.g. reference log-probs), cached in the stage folder."""

    def collate(self, records: Sequence[Record]) -> dict[str, Any]:
        """Turn records into a batch of tensors."""

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple["torch.Tensor", dict[str, float]]:
        """The training loss of a batch and metrics to log."""


AnswerMode = Literal["generate", "choice"]


@runtime_checkable
class Benchmark(Protocol):
    """Builds eval items and turns answers into metrics; ``score`` needs no model."""

    metric_keys: ClassVar[tuple[str, ...]]

    def items(self) -> Sequence[EvalItem]:
        """The questions to answer."""

    def score(self, items: Sequence[EvalItem], answers: dict[str, str]) -> dict[str, float]:
        """Metrics from the answers (keyed by item id)."""


@runtime_checkable
class Judge(Protocol):
    """Text in, text out; implementations cache per request."""

    def complete(self, prompt: str, *, system: str | None = None) -> str:
        """The judge's reply to one prompt."""


@runtime_checkable
class StageKind(Protocol):
    """A kind of pipeline stage, constructed as ``Kind(stage_config, components)``.

    ``stage_config`` is the validated :class:`mllm.pipeline.config.StageConfig` subclass the
    spec's ``config`` names; ``components`` maps its component fields to
    :class:`mllm.pipeline.config.ResolvedComponent` (or lists of them). Stage ids the stage reads
    besides ``from`` come from the config's ``inputs()`` method.
    """

    def run(self, context: Any) -> None:
        """Do the work, writing outputs into ``context.stage_dir`` (a
        :class:`mllm.pipeline.runner.StageContext`); set ``context.metrics`` to write metrics.json."""
