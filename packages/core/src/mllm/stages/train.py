"""The ``train`` stage: an alignment method trained with the core trainer.

```yaml
- id: sft
  kind: train
  from: init                       # the model it starts from (default)
  method: {name: sft, lora: true}  # the method and its own keys
  data: {name: easyvqa, split: train}
  train: {epochs: 1, lr: 1.0e-3, batch_size: 32}
```

Outputs in the stage folder: ``model/`` (the adapter's ``save``: a full model, or a
LoRA adapter folder), ``train_log.jsonl`` (every Trainer log entry), ``data_report.json``
(rows read, kept and skipped), ``checkpoints/`` (for resume) and ``metrics.json`` (the
last logged value of each training metric).

A resumed stage (interrupted, same fingerprint) continues from its newest complete
checkpoint (one with ``trainer_state.json``). Besides the Method protocol, a method may
define ``projector_lr`` (a separate projector learning rate) and ``callbacks()``
(extra ``transformers.TrainerCallback`` objects for its training run).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from mllm.badrows import DataReport
from mllm.config import ComponentRef, ConfigError, ResolvedComponent, StageConfig
from mllm.pipeline import MODEL_SUBDIR
from mllm.specs import ComponentKind
from mllm.trainsettings import TrainSettings

DATA_REPORT = "data_report.json"


class TrainStageConfig(StageConfig):
    """A ``train`` stage: ``method``, ``data`` and the ``train`` settings."""

    component_fields: ClassVar[dict[str, ComponentKind]] = {"method": "method", "data": "dataset"}
    produces_model: ClassVar[bool] = True

    method: ComponentRef = Field(description="the alignment method: {name: sft, <its keys>...}")
    data: ComponentRef = Field(description="the training dataset: {name: easyvqa, <its keys>...}")
    train: TrainSettings = Field(default_factory=TrainSettings, description="Trainer settings (lr, epochs, batch_size, ...)")


def collect_records(dataset: Any, data: ResolvedComponent, where: str) -> tuple[list[Any], DataReport]:
    """Every record of ``dataset`` under the bad-row policy of its config."""
    config = data.config
    report = DataReport(
        source=f"{where}: dataset {data.spec.name!r}",
        on_bad_row=getattr(config, "on_bad_row", "error"),
        max_bad_fraction=getattr(config, "max_bad_fraction", 0.0),
    )
    records = list(dataset.records(report))
    report.finish()
    return records, report


class TrainStage:
    """Runs one train stage (see the module docstring)."""

    def __init__(self, config: TrainStageConfig, components: dict[str, Any]) -> None:
        self.config = config
        self.components = components

    def run(self, context: Any) -> None:
        config = self.config
        where = f"stage {config.id!r}"
        method_ref: ResolvedComponent = self.components["method"]
        data_ref: ResolvedComponent = self.components["data"]

        method = method_ref.build()
        dataset = data_ref.build()
        wanted = getattr(method, "record_kind", None)
        given = getattr(dataset, "record_kind", None)
        if wanted != given:
            raise ConfigError(
                f"{where}: method {method_ref.spec.name!r} trains on {wanted!r} records but dataset "
                f"{data_ref.spec.name!r} yields {given!r} records; pick a dataset that yields {wanted!r} records"
            )

        records, report = collect_records(dataset, data_ref, where)
        report.write(context.stage_dir / DATA_REPORT)
        if not records:
            raise ConfigError(f"{where}: dataset {data_ref.spec.name!r} gave no records to train on")
        context.logger.info("%s: %d records (%d skipped)", where, len(records), len(report.skipped))

        adapter = context.load_model(config.from_)
        model = method.setup(adapter)
        method.prepare(context)

        projector_lr = getattr(method, "projector_lr", None)
        projector_module = adapter.module_names().get("projector") if projector_lr is not None else None
        extra_callbacks = getattr(method, "callbacks", None)
        from mllm.training import train_method

        trainer, metrics = train_method(
            method, model, records, config.train, context.stage_dir,
            seed=context.seed, resume=context.resume,
            projector_lr=projector_lr, projector_module=projector_module,
            callbacks=list(extra_callbacks()) if callable(extra_callbacks) else [],
            logger=context.logger,
        )
        adapter.model = trainer.model
        adapter.save(context.stage_dir / MODEL_SUBDIR)
        context.metrics = metrics
