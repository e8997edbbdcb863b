"""mllm-core's own components, registered through the same hooks as any plugin."""

from __future__ import annotations

from mllm.plugins.hookspecs import Register, hookimpl
from mllm.plugins.specs import ComponentSpec

# Stage kinds that ship with the core, as strings: this module never imports torch.
STAGE_KINDS = {
    "train": ("mllm.stages.train:TrainStage", "mllm.stages.train:TrainStageConfig", "train a model with an alignment method"),
    "eval": ("mllm.stages.evaluate:EvalStage", "mllm.stages.evaluate:EvalStageConfig", "evaluate models on benchmarks"),
    "generate": ("mllm.stages.generate:GenerateStage", "mllm.stages.generate:GenerateStageConfig",
                 "answer a dataset's prompts with a model, optionally scored"),
    "transform": ("mllm.stages.transform:TransformStage", "mllm.stages.transform:TransformStageConfig",
                  "subsample, shorten or rewrite data"),
    "report": ("mllm.stages.report:ReportStage", "mllm.stages.report:ReportStageConfig",
               "compare models side by side: report.json, report.md, plots"),
}


@hookimpl
def mllm_register_models(register: Register) -> None:
    register(ComponentSpec(name="llava", impl="mllm.models.llava.adapter:LlavaAdapter",
                           config="mllm.models.llava.config:LlavaModelConfig",
                           description="LLaVA (transformers LlavaForConditionalGeneration): a local folder or a tiny model built from a config"))


@hookimpl
def mllm_register_stage_kinds(register: Register) -> None:
    for name, (impl, config, description) in STAGE_KINDS.items():
        register(ComponentSpec(name=name, impl=impl, config=config, description=description))


@hookimpl
def mllm_register_datasets(register: Register) -> None:
    register(ComponentSpec(name="stage-records", impl="mllm.data.recordio:StageRecords",
                           config="mllm.data.recordio:StageRecordsConfig",
                           description="the records.jsonl an earlier transform or generate stage of this pipeline wrote"))
    register(ComponentSpec(name="stage-output", impl="mllm.stages.generate:StageOutput",
                           config="mllm.stages.generate:StageOutputConfig",
                           description="records of an earlier generate stage, as written or as wrong-vs-gold "
                                       "preference pairs (a train stage's data: {from: <stage>, pairs: ...})"))
    register(ComponentSpec(name="records-jsonl", impl="mllm.data.recordio:RecordsJsonl",
                           config="mllm.data.recordio:RecordsJsonlConfig",
                           description="a records.jsonl file (mllm.data.recordio format) anywhere"))
