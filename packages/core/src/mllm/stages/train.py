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
(extra ``transformers.TrainerCallback`` objects for its training run). ``prepare(context)``
gets a :class:`mllm.pipeline.runner.TrainContext`: the stage context plus the training
``records`` (which it may replace) and the ``adapter``.

``data:`` may also read the records an earlier stage wrote (a ``generate`` or
``transform`` stage), with ``from:`` instead of ``name:``:

```yaml
data: {from: mistakes, pairs: wrong-vs-gold}   # generated answers -> Preference pairs
data: {from: samples}                          # the generated Conversations as they are
```

``pairs:`` names a pairing (kind ``pairing``, resolved like every name; ``pairs: {name:
<pairing>, <its keys>}`` sets its keys). The core's ``wrong-vs-gold``: for each question
the model answered wrong (its record's ``metadata.correct`` is false), chosen = the gold
answer, rejected = the model's answer (:mod:`mllm.data.pairings`); plugins add more
(mllm-align: ``best-vs-worse``, the best scored candidate vs a much lower one).
The stage named by ``from`` is an input of this stage (it must come earlier; its
fingerprint chains into this one's). It is the dataset ``stage-output``
(:mod:`mllm.data.stage_output`): ``{name: stage-output, stage: mistakes, pairs: wrong-vs-gold}``
is the same.
"""

from __future__ import annotations

from typing import Any, ClassVar, Union

from pydantic import ConfigDict, Field, field_validator

from mllm.data.badrows import DataReport, ImageReadError, LateBadRows, OnBadRow
from mllm.data.stage_output import PairsRef
from mllm.interfaces import ChecksRows, HasProjectorLr, HasTrainCallbacks, capability
from mllm.pipeline.config import ComponentRef, ConfigError, ResolvedComponent, StageConfig
from mllm.pipeline.runner import MODEL_SUBDIR, StageContext, TrainContext
from mllm.plugins.specs import ComponentKind
from mllm.training.settings import TrainSettings

DATA_REPORT = "data_report.json"


STAGE_OUTPUT_DATASET = "stage-output"


class StageDataRef(ComponentRef):
    """``data: {from: <stage id>, pairs: wrong-vs-gold}``: the records an earlier stage wrote."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    name: str = Field(STAGE_OUTPUT_DATASET, exclude=True, description="the dataset that reads a stage's records")
    from_: str = Field(alias="from", description="id of an earlier generate or transform stage")
    pairs: PairsRef | None = Field(
        None, description="a pairing that makes Preference pairs: wrong-vs-gold (chosen = gold, rejected = the "
                          "model's wrong answer) or a plugin's (e.g. best-vs-worse); {name: <pairing>, <its keys>} "
                          "sets its keys; none: the records as written")
    on_bad_row: OnBadRow = Field("error", description="error: stop at the first bad row; skip: list it")
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0, description="with skip, the largest tolerated share")

    def options(self) -> dict[str, Any]:
        return {"stage": self.from_, "pairs": self.pairs, "on_bad_row": self.on_bad_row,
                "max_bad_fraction": self.max_bad_fraction}


class TrainStageConfig(StageConfig):
    """A ``train`` stage: ``method``, ``data`` and the ``train`` settings."""

    component_fields: ClassVar[dict[str, ComponentKind]] = {"method": "method", "data": "dataset"}
    produces_model: ClassVar[bool] = True

    method: ComponentRef = Field(description="the alignment method: {name: sft, <its keys>...}")
    data: Union[StageDataRef, ComponentRef] = Field(
        description="the training dataset: {name: easyvqa, <its keys>...}, or an earlier stage's records: "
                    "{from: <stage id>, pairs: wrong-vs-gold}")
    train: TrainSettings = Field(default_factory=TrainSettings, description="Trainer settings (lr, epochs, batch_size, ...)")

    @field_validator("data", mode="before")
    @classmethod
    def _data_form(cls, value: Any) -> Any:
        """``{from: ...}`` reads a stage's records, ``{name: ...}`` names a dataset."""
        if isinstance(value, dict):
            return StageDataRef.model_validate(value) if "from" in value else ComponentRef.model_validate(value)
        return value

    def inputs(self) -> list[str]:
        """Stages read besides ``from``: the stage whose records ``data: {from: ...}`` reads."""
        return [self.data.from_] if isinstance(self.data, StageDataRef) else []


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

    # under `mllm run --nproc-per-node N` every torchrun process runs it (DDP or DeepSpeed ZeRO)
    distributed: ClassVar[bool] = True

    def __init__(self, config: TrainStageConfig, components: dict[str, Any]) -> None:
        self.config = config
        self.components = components

    def run(self, context: StageContext) -> None:
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
        from mllm.distributed import is_main

        previous_report = _read_json(context.stage_dir / DATA_REPORT) if context.resume else None
        if is_main():
            report.write(context.stage_dir / DATA_REPORT)
        # images that fail to decode only now (training, prepare) follow the same policy
        late = LateBadRows(report, context.stage_dir / DATA_REPORT if is_main() else None)
        late.restore(previous_report, {str(r.id) for r in records})
        if not records:
            raise ConfigError(f"{where}: dataset {data_ref.spec.name!r} gave no records to train on")
        context.logger.info("%s: %d records (%d skipped)", where, len(records), len(report.skipped))

        adapter = context.load_model(config.from_)
        import torch

        # new weights made by setup (LoRA's A matrices) depend only on the seed, never on what
        # the process did before: one process and every torchrun process start alike
        torch.manual_seed(config.train.seed if config.train.seed is not None else context.seed)
        model = method.setup(adapter)
        if isinstance(method, ChecksRows):  # e.g. rows longer than the model's max_length
            records = _drop_rows_that_cannot_train(method, records, late, context.logger, where)
        # what prepare() may precompute over (e.g. DPO's reference log-probs)
        train_context = TrainContext.of(context, records, adapter)
        _prepare_skipping_bad_images(method, train_context, late)
        records = train_context.records  # prepare() may replace them (rejection sampling keeps the best candidates)

        projector_lr = capability(method, HasProjectorLr, "projector_lr")
        projector_module = adapter.module_names().get("projector") if projector_lr is not None else None
        from mllm.training.trainer import train_method

        trainer, metrics = train_method(
            method, model, records, config.train, context.stage_dir,
            seed=context.seed, resume=context.resume,
            projector_lr=projector_lr, projector_module=projector_module,
            callbacks=list(method.callbacks()) if isinstance(method, HasTrainCallbacks) else [],
            logger=context.logger, bad_rows=late,
        )
        from mllm.training.trainer import save_trained

        save_trained(trainer, adapter, context.stage_dir / MODEL_SUBDIR)  # one ordinary folder (ZeRO-3 gathered)
        context.metrics = metrics


def _read_json(path: Any) -> Any:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _drop_rows_that_cannot_train(method: Any, records: list[Any], late: LateBadRows, logger: Any,
                                 where: str) -> list[Any]:
    """The records ``method.row_problem`` finds nothing wrong with; each other one follows the
    dataset's ``on_bad_row`` policy (``error`` stops here, before any step; ``skip`` lists it
    in ``data_report.json``)."""
    kept = []
    for record in records:
        problem = method.row_problem(record)
        if problem is None:
            kept.append(record)
        else:
            late.reject(record, problem, when="before training")
    if len(kept) < len(records):
        logger.info("%s: %d records left out before training (see data_report.json)", where, len(records) - len(kept))
    if not kept:
        raise ConfigError(f"{where}: no record can be trained on (see data_report.json)")
    return kept


def _prepare_skipping_bad_images(method: Any, context: TrainContext, late: LateBadRows) -> None:
    """``method.prepare(context)``; a record whose image fails to decode there (e.g. while
    DPO computes reference log-probs) follows the bad-row policy, then prepare runs again."""
    while True:
        try:
            method.prepare(context)
            return
        except ImageReadError as error:
            bad = [r for r in context.records if error.path in {str(p) for p in getattr(r, "images", ())}]
            if not bad:
                raise
            for record in bad:
                late.reject(record, error)
            context.records = [r for r in context.records if not late.is_bad(r)]
