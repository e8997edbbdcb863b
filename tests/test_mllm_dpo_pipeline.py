"""pipelines/studies/mllm_dpo.yaml: candidates generated once and shared; changing one method's
config re-runs only that method and what follows it; a small end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mllm.pipeline.config import INIT, load_pipeline, stage_inputs
from mllm.pipeline.runfolder import StageFolder
from mllm.pipeline.runner import PipelineRunner
from mllm.plugins.registry import Registry

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "studies" / "mllm_dpo.yaml"
NO_SEEDS = ["seeds=null"]  # the stages as written, once (the study's seeds: are checked in test_study_smoke)
METHODS = ["sft-standard", "rejection-sampling", "steerlm", "dpo"]


@pytest.fixture(scope="module")
def registry():
    return Registry(autoload=True)


def mark_all_finished(runner: PipelineRunner) -> None:
    """Pretend every stage finished with its current fingerprint (what a completed run leaves)."""
    runner.run_dir.mkdir(parents=True, exist_ok=True)
    for plan in runner.plan():
        folder = StageFolder(runner.run_dir, plan.stage_id)
        folder.start(plan.fingerprint, {})
        folder.finish(plan.fingerprint)


def actions(registry, tmp_path, overrides=()) -> dict[str, str]:
    pipeline = load_pipeline(PIPELINE, registry, NO_SEEDS + list(overrides))
    return {plan.stage_id: plan.action for plan in PipelineRunner(pipeline, registry, runs_dir=tmp_path).plan()}


def test_pipeline_shape(registry):
    pipeline = load_pipeline(PIPELINE, registry, NO_SEEDS)
    assert PIPELINE.read_text().startswith("# mllm run pipelines/studies/mllm_dpo.yaml")
    ids = [stage.id for stage in pipeline.stages]
    for method in METHODS:
        assert method in ids
    generate = [s.id for s in pipeline.stages if s.kind_spec.name == "generate"]
    assert generate == ["candidates"]  # sampled once
    for method in ["rejection-sampling", "steerlm", "dpo"]:
        assert set(stage_inputs(pipeline.stage(method))) == {"sft", "candidates"}
    assert pipeline.stage("dpo").config.data.pairs == "best-vs-worse"
    evaluated = [m for s in pipeline.stages if s.kind_spec.name == "eval" for m in s.config.model_ids()]
    assert set(METHODS) <= set(evaluated)
    steered = pipeline.stage("eval-steerlm").components["prompt_style"]  # steer: {} is the steerlm prompt style
    assert (steered.spec.name, steered.spec.distribution) == ("steerlm", "mllm-align")
    assert steered.config.attributes() == {
        "helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 4, "verbosity": 4}
    scoring = pipeline.stage("candidates").components["score"]
    assert (scoring.spec.name, scoring.spec.distribution, scoring.config.rules) == ("attributes", "mllm-align",
                                                                                  "description")


@pytest.mark.parametrize("override, rerun", [
    ("stages.steerlm.method.min_aggregate=6", {"steerlm", "eval-steerlm", "report"}),
    ("stages.rejection-sampling.method.ties=shortest", {"rejection-sampling", "eval", "report"}),
    ("stages.dpo.method.beta=0.5", {"dpo", "eval", "report"}),
    ("stages.candidates.temperature=0.7", set(METHODS[1:]) | {"eval", "eval-steerlm", "report"} | {"candidates"}),
])
def test_changing_one_method_reruns_only_it_and_what_follows(registry, tmp_path, override, rerun):
    pipeline = load_pipeline(PIPELINE, registry, NO_SEEDS)
    mark_all_finished(PipelineRunner(pipeline, registry, runs_dir=tmp_path))
    assert set(actions(registry, tmp_path).values()) == {"skip"}
    changed = actions(registry, tmp_path, [override])
    assert {stage for stage, action in changed.items() if action == "rerun"} == rerun
    assert {stage for stage, action in changed.items() if action == "skip"} == set(changed) - rerun
    assert changed[INIT] == changed["sft"] == "skip"


SMALL = [
    # a smaller tiny model and a handful of rows: the same stages, in seconds
    "model.image_size=16", "model.patch_size=8", "model.vision_hidden_size=16", "model.vision_layers=1",
    "model.vision_intermediate_size=32", "model.text_hidden_size=32", "model.text_layers=1",
    "model.text_intermediate_size=64", "model.heads=2", "model.vocab_size=300",
    "stages.sft.data.limit=8", "stages.sft.data.questions_per_image=1", "stages.sft.train.epochs=1",
    "stages.sft.train.batch_size=8",
    "stages.candidates.data.limit=12", "stages.candidates.num_samples=4", "stages.candidates.max_new_tokens=12",
    "stages.sft-standard.data.limit=6",
    "stages.rejection-sampling.method.min_score=null", "stages.rejection-sampling.method.rounds=2",
    "stages.eval.benchmarks=[{name: easyvqa, split: test, limit: 8, answer_mode: choice}, "
    "{name: easyvqa-describe, split: test, limit: 4, max_new_tokens: 12}]",
    "stages.eval-steerlm.benchmarks=[{name: easyvqa, split: test, limit: 8, answer_mode: choice}, "
    "{name: easyvqa-describe, split: test, limit: 4, max_new_tokens: 12}]",
]


@pytest.mark.slow
def test_small_end_to_end(registry, tmp_path):
    pipeline = load_pipeline(PIPELINE, registry, NO_SEEDS + SMALL)
    PipelineRunner(pipeline, registry, runs_dir=tmp_path).run()
    run_dir = tmp_path / "mllm_dpo"
    report = json.loads((run_dir / "report" / "report.json").read_text())
    for model in ["sft", *METHODS]:
        assert set(report["models"][model]) == {"easyvqa", "easyvqa-describe"}
    candidates = json.loads((run_dir / "candidates" / "metrics.json").read_text())
    assert candidates["answers"] == 48 and candidates["scored"] == 48
    rounds = json.loads((run_dir / "rejection-sampling" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [1, 2] and rounds[0]["resampled"]["scored"] == 48
    steered = [json.loads(line) for line in
               (run_dir / "eval-steerlm" / "steerlm" / "easyvqa-describe" / "answers.jsonl").read_text().splitlines()]
    assert all("5-point Likert scale" in row["prompt"] for row in steered)
    assert all("Verbosity:" not in row["answer"] for row in steered)
    # a re-run with one method's config changed re-runs only that method and what follows it
    events = []
    changed = load_pipeline(PIPELINE, registry, NO_SEEDS + SMALL + ["stages.steerlm.method.min_aggregate=0"])
    PipelineRunner(changed, registry, runs_dir=tmp_path, on_event=lambda plan, event: events.append(
        (plan.stage_id, event.split()[0]))).run()
    ran = {stage for stage, event in events if event == "started"}
    assert ran == {"steerlm", "eval-steerlm", "report"}
