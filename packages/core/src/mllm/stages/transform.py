"""The ``transform`` stage: subsample, shorten or rewrite a dataset's records with ops.

```yaml
- id: short
  kind: transform
  data: {name: scienceqa, root: /data/scienceqa, split: train}   # any dataset, or the records of an earlier
                                                                 # stage: {name: stage-records, stage: <id>}
  ops:                                                           # applied in order
    - {op: subsample, n: 1000, seed: 0}            # seeded; or fraction: 0.1 (seed defaults to the pipeline's)
    - {op: shorten}                                # keep only the final answer: "... The answer is B." -> "The answer is B."
    - op: realign                                  # rewrite each answer with a judge/generator model (ReAlign)
      judge: {name: openai, model: gpt-4-0613}
      instruction: "Rewrite the answer as a short explanation followed by the final answer."
    - op: llava-instruct                           # LLaVA's data generation from captions (and boxes)
      generator: {name: hf-local, path: /models/vicuna}
      types: [conversation, detail, complex]
  on_bad_row: skip                                 # rows an op cannot handle: error (default) | skip
  max_bad_fraction: 0.05
- id: sft_short
  kind: train
  method: {name: sft}
  data: {name: stage-records, stage: short}        # the transform's output
```

Ops are components (kind ``transform_op``, resolved like every name: "did you mean",
``dist:name``; the keys beside ``op:`` are the op's config): the core's ``subsample`` and
``shorten`` (:mod:`mllm.data.ops`), mllm-data's ``realign`` and ``llava-instruct``, and any
plugin's. Each op is built as ``Op(config)`` and its ``apply(records, context)`` gets a
:class:`mllm.data.context.ComponentContext` whose report holds the stage's bad-row policy.

Output in the stage folder: ``records.jsonl`` (the records, :mod:`mllm.data.recordio`
format), ``data_report.json`` (``{"data": <the dataset's report>, "ops": [<one report
per op>]}``: rows read, kept and skipped with file, row and reason), ``metrics.json``
(records in and out, per op), and what the ops write themselves (the model-calling ops'
caches: ``realign_cache.jsonl``, ``llava_instruct_cache.jsonl``), so an interrupted stage
resumes without asking the model again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, field_validator

from mllm.data.badrows import DataReport, OnBadRow
from mllm.data.context import ComponentContext
from mllm.data.recordio import RECORDS_FILE, write_records
from mllm.pipeline.config import ComponentRef, ConfigError, ResolvedComponent, StageConfig
from mllm.pipeline.runfolder import atomic_write_text
from mllm.plugins.specs import ComponentKind
from mllm.records import Record

DATA_REPORT = "data_report.json"


class OpRef(ComponentRef):
    """``{op: <transform op>, <its keys>...}``: one op of a transform stage."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name_key: ClassVar[str] = "op"
    name: str = Field(alias="op", description="registered name of the transform op, or 'distribution:name'")


class TransformStageConfig(StageConfig):
    """A ``transform`` stage: a dataset and the ops applied to its records, in order."""

    component_fields: ClassVar[dict[str, ComponentKind]] = {"data": "dataset", "ops": "transform_op"}

    data: ComponentRef = Field(description="the records to transform: any dataset, or "
                                           "{name: stage-records, stage: <earlier stage>}")
    ops: list[OpRef] = Field(description="ops applied in order: [{op: <name>, <its keys>}, ...]: subsample, shorten, "
                                         "realign, llava-instruct, or a plugin's")
    on_bad_row: OnBadRow = Field("error", description="a row an op cannot handle: error stops, skip drops it")
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0, description="with skip, the largest tolerated share of "
                                                                      "rows an op drops")

    @field_validator("ops")
    @classmethod
    def _some_ops(cls, value: list[OpRef]) -> list[OpRef]:
        if not value:
            raise ValueError("list at least one op, e.g. [{op: subsample, n: 100}]")
        return value


# -- the stage ----------------------------------------------------------------------------------------


class TransformStage:
    """Runs one transform stage (see the module docstring)."""

    def __init__(self, config: TransformStageConfig, components: dict[str, Any]) -> None:
        self.config = config
        self.components = components

    def run(self, context: Any) -> None:
        config = self.config
        where = f"stage {config.id!r}"
        data: ResolvedComponent = self.components["data"]
        dataset = data.build()
        data_report = DataReport(source=f"{where}: dataset {data.spec.name!r}",
                                 on_bad_row=getattr(data.config, "on_bad_row", "error"),
                                 max_bad_fraction=getattr(data.config, "max_bad_fraction", 0.0))
        records: list[Record] = list(dataset.records(data_report))
        data_report.finish()
        if not records:
            raise ConfigError(f"{where}: dataset {data.spec.name!r} gave no records to transform")
        metrics: dict[str, Any] = {"records_in": len(records)}
        op_reports = []
        registry = getattr(context, "registry", None)
        ops: list[ResolvedComponent] = self.components["ops"]
        for index, op in enumerate(ops):
            name = op.spec.name
            op_where = f"{where} op {index} ({name})"
            report = DataReport(source=op_where, on_bad_row=config.on_bad_row, max_bad_fraction=config.max_bad_fraction)
            ctx = ComponentContext(context.stage_dir, context.seed, registry, report, op_where, context.logger)
            before = len(records)
            records = op.build().apply(records, ctx)
            report.finish()
            op_reports.append(report.to_dict())
            metrics[f"op{index}_{name}"] = {"in": before, "out": len(records), "skipped": len(report.skipped)}
            context.logger.info("%s: %d -> %d records (%d skipped)", op_where, before, len(records), len(report.skipped))
        count = write_records(Path(context.stage_dir) / RECORDS_FILE, records)
        atomic_write_text(Path(context.stage_dir) / DATA_REPORT,
                          json.dumps({"data": data_report.to_dict(), "ops": op_reports}, indent=2))
        metrics["records_out"] = count
        context.metrics = metrics
