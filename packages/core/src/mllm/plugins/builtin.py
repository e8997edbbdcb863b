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
    register(ComponentSpec(name="stage-output", impl="mllm.data.stage_output:StageOutput",
                           config="mllm.data.stage_output:StageOutputConfig",
                           description="records of an earlier generate stage, as written or as Preference pairs made "
                                       "by a pairing (a train stage's data: {from: <stage>, pairs: ...})"))
    register(ComponentSpec(name="records-jsonl", impl="mllm.data.recordio:RecordsJsonl",
                           config="mllm.data.recordio:RecordsJsonlConfig",
                           description="a records.jsonl file (mllm.data.recordio format) anywhere"))


@hookimpl
def mllm_register_score_rules(register: Register) -> None:
    for name, cls, description in (
        ("exact-match", "ExactMatch", "correct when the normalised answer equals the gold answer (score 1 or 0)"),
        ("regex", "Regex", "correct when pattern is found in the answer (full_match: all of it)"),
        ("length", "Length", "score = the answer's length in characters; correct between min_chars and max_chars"),
    ):
        register(ComponentSpec(name=name, impl=f"mllm.data.score_rules:{cls}",
                               config=f"mllm.data.score_rules:{cls}Config", description=description))


@hookimpl
def mllm_register_transform_ops(register: Register) -> None:
    register(ComponentSpec(name="subsample", impl="mllm.data.ops:Subsample", config="mllm.data.ops:SubsampleConfig",
                           description="keep n rows or a fraction of them, seeded, in file order"))
    register(ComponentSpec(name="shorten", impl="mllm.data.ops:Shorten", config="mllm.data.ops:ShortenConfig",
                           description="keep only the final answer of each assistant turn ('The answer is B.')"))
    register(ComponentSpec(name="downsample-answer", impl="mllm.data.ops:DownsampleAnswer",
                           config="mllm.data.ops:DownsampleAnswerConfig",
                           description="keep a share of the rows whose final answer is one answer (imbalanced data)"))


@hookimpl
def mllm_register_pairings(register: Register) -> None:
    register(ComponentSpec(name="wrong-vs-gold", impl="mllm.data.pairings:WrongVsGold",
                           config="mllm.data.pairings:WrongVsGoldConfig",
                           description="chosen = the gold answer, rejected = the model's wrong answer (scored answers)"))


@hookimpl
def mllm_register_prompt_styles(register: Register) -> None:
    register(ComponentSpec(name="plain", impl="mllm.data.prompt_styles:Plain",
                           config="mllm.data.prompt_styles:PlainConfig",
                           description="prompts and answers unchanged (an eval stage without prompt_style)"))
    register(ComponentSpec(name="instruction", impl="mllm.data.prompt_styles:Instruction",
                           config="mllm.data.prompt_styles:InstructionConfig",
                           description="a fixed instruction text added after (or before) every prompt"))
