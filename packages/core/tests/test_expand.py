"""``seeds:`` and ``sweep:`` (mllm.pipeline.expand): copies per seed and variant, references
within a copy, overrides of one copy or of all, one-line errors, and what validate shows."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from mllm.cli.main import main
from mllm.errors import ConfigError
from mllm.pipeline.config import load_pipeline, stage_inputs
from mllm.pipeline.runner import PipelineRunner

PIPELINE = """
name: study
model: {name: llava, init: tiny}
SEEDS
SWEEP
stages:
  - id: base
    kind: touch
    message: base
  - id: arm
    kind: touch
    reads: [base]
    message: arm
  - id: other
    kind: touch
    reads: [base]
    message: other
  - id: check
    kind: touch
    reads: [arm, other]
  - id: report
    kind: report
"""
SWEEP = "sweep:\n  loud: {stages.arm.message: LOUD}\n  quiet: {stages.arm.message: quiet}"


def load(registry, write_pipeline, seeds="seeds: [0, 1, 2]", sweep="", overrides=()):
    path = write_pipeline(PIPELINE.replace("SEEDS", seeds).replace("SWEEP", sweep))
    return load_pipeline(path, registry, list(overrides))


def ids(pipeline):
    return [stage.id for stage in pipeline.stages]


def test_seeds_repeat_every_stage_but_the_report_and_resolve_within_the_seed(testplug_registry, write_pipeline):
    pipeline = load(testplug_registry, write_pipeline)
    assert ids(pipeline) == [f"{s}-s{n}" for s in ("base", "arm", "other", "check") for n in range(3)] + ["report"]
    assert pipeline.stage("arm-s1").config.reads == ["base-s1"]
    assert pipeline.stage("check-s2").config.reads == ["arm-s2", "other-s2"]
    assert [pipeline.stage(f"base-s{n}").config.seed for n in range(3)] == [0, 1, 2]
    assert set(stage_inputs(pipeline.stage("report"))) >= {f"check-s{n}" for n in range(3)}
    assert pipeline.arm_models(["init", "arm-s0", "arm-s1", "arm-s2"]) == {"init": ["init"],
                                                                         "arm": ["arm-s0", "arm-s1", "arm-s2"]}
    assert "seeds" not in pipeline.raw and [s["id"] for s in pipeline.raw["stages"]] == ids(pipeline)


def test_sweep_repeats_only_what_a_variant_changes(testplug_registry, write_pipeline):
    pipeline = load(testplug_registry, write_pipeline, seeds="seeds: [0, 1]", sweep=SWEEP)
    assert ids(pipeline) == ["base-s0", "base-s1", "arm-loud-s0", "arm-loud-s1", "arm-quiet-s0", "arm-quiet-s1",
                             "other-s0", "other-s1", "check-loud-s0", "check-loud-s1", "check-quiet-s0",
                             "check-quiet-s1", "report"]
    assert pipeline.stage("arm-loud-s1").config.message == "LOUD"
    assert pipeline.stage("arm-quiet-s0").config.message == "quiet"
    assert pipeline.stage("check-loud-s1").config.reads == ["arm-loud-s1", "other-s1"]  # other: shared by both
    no_seeds = load(testplug_registry, write_pipeline, seeds="", sweep=SWEEP)
    assert ids(no_seeds) == ["base", "arm-loud", "arm-quiet", "other", "check-loud", "check-quiet", "report"]
    assert no_seeds.stage("base").config.seed is None


def test_seed_copies_differ_in_fingerprint_and_keep_plain_fingerprints(testplug_registry, write_pipeline, tmp_path):
    pipeline = load(testplug_registry, write_pipeline, seeds="seeds: [0, 1]")
    runner = PipelineRunner(pipeline, testplug_registry, tmp_path / "runs")
    assert runner.fingerprint(pipeline.stage("base-s0")) != runner.fingerprint(pipeline.stage("base-s1"))
    # a stage without seed: hashes as before the key existed (no seed key in the hashed config)
    from mllm.pipeline.runner import fingerprint_config

    plain = load(testplug_registry, write_pipeline, seeds="")
    assert "seed" not in fingerprint_config(plain.stage("base").config)
    assert fingerprint_config(pipeline.stage("base-s1").config)["seed"] == 1


def test_overrides_address_all_copies_one_copy_or_one_arm(testplug_registry, write_pipeline):
    pipeline = load(testplug_registry, write_pipeline, seeds="seeds: [0, 1]", sweep=SWEEP, overrides=[
        "stages.base.message=all", "stages.other-s1.message=one", "stages.arm-quiet.message=arm",
        "seeds=[0, 1, 2]"])
    assert {pipeline.stage(f"base-s{n}").config.message for n in range(3)} == {"all"}
    assert [pipeline.stage(f"other-s{n}").config.message for n in range(3)] == ["other", "one", "other"]
    assert {pipeline.stage(f"arm-quiet-s{n}").config.message for n in range(3)} == {"arm"}
    assert pipeline.stage("arm-loud-s2").config.message == "LOUD"


@pytest.mark.parametrize("seeds, sweep, overrides, expected", [
    ("seeds: []", "", [], "yaml.seeds: Value error, list at least one seed"),
    ("seeds: [0, 0]", "", [], "seed 0 is listed twice"),
    ("seeds: [-1]", "", [], "seeds are whole numbers >= 0"),
    ("seeds: zero", "", [], "seeds: Input should be a valid list"),
    ("", "sweep: {}", [], "yaml.sweep: Value error, name at least one variant"),
    ("", "sweep: {bad-name: {stages.arm.message: x}}", [], "variant name 'bad-name'"),
    ("", "sweep: {v: [1]}", [], "sweep.v: Input should be a valid dictionary"),
    ("", "sweep: {v: {model.init: tiny}}", [], "sweep.v.model.init: a sweep key sets a stage key"),
    ("", "sweep: {v: {stages.amr.message: x}}", [], "no stage with id 'amr'; did you mean 'arm'?"),
    ("", "sweep: {v: {stages.report.plots: false}}", [], "stage 'report' is a report"),
    ("seeds: [0]", "", ["stages.arm-s7.message=x"], "no stage with id 'arm-s7'"),
])
def test_bad_seeds_and_sweeps_are_one_line_errors(testplug_registry, write_pipeline, seeds, sweep, overrides, expected):
    with pytest.raises(ConfigError) as caught:
        load(testplug_registry, write_pipeline, seeds=seeds, sweep=sweep, overrides=overrides)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert "pipeline.yaml" in lines[0] or "override" in lines[0]


def test_a_stage_with_its_own_seed_runs_once_for_all_seeds(testplug_registry, write_pipeline):
    pipeline = load(testplug_registry, write_pipeline, seeds="seeds: [0, 1]", overrides=["stages.base.seed=3"])
    assert ids(pipeline)[:3] == ["base", "arm-s0", "arm-s1"]
    assert pipeline.stage("base").config.seed == 3 and pipeline.stage("arm-s1").config.reads == ["base"]
    with pytest.raises(ConfigError, match=r"stages.arm.seed: a stage with its own seed runs once for all seeds, "
                                          r"but it reads 'base'"):
        load(testplug_registry, write_pipeline, overrides=["stages.arm.seed=3"])


def test_findings_arms_must_exist(testplug_registry, write_pipeline):
    text = PIPELINE.replace("SEEDS", "seeds: [0, 1]").replace("SWEEP", SWEEP) + (
        "findings:\n  - {claim: c, metric: touch.items, arms: [arm-loud, arm-quite], direction: higher}\n")
    with pytest.raises(ConfigError, match=r"findings\[0\].arms: no arm 'arm-quite'; did you mean 'arm-quiet'"):
        load_pipeline(write_pipeline(text), testplug_registry)


def test_validate_and_dry_run_show_the_expansion(testplug_registry, write_pipeline, tmp_path):
    path = write_pipeline(PIPELINE.replace("SEEDS", "seeds: [0, 1]").replace("SWEEP", SWEEP))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "expanded: seeds [0, 1] sweep loud, quiet" in result.output
    assert "arm -> arm-loud-s0, arm-loud-s1, arm-quiet-s0, arm-quiet-s1" in result.output
    result = CliRunner().invoke(main, ["run", "--dry-run", "--runs-dir", str(tmp_path / "runs"), str(path), "seeds=[4]"])
    assert result.exit_code == 0, result.output
    assert "base -> base-s4" in result.output and "check-quiet-s4" in result.output


def test_a_problem_of_every_copy_is_said_once(testplug_registry, write_pipeline, tmp_path):
    from mllm.pipeline.validation import validate_file

    with pytest.raises(ConfigError) as caught:  # the stage as written is checked first: once
        load(testplug_registry, write_pipeline, overrides=["stages.arm.mesage=x"])
    (line,) = str(caught.value).splitlines()
    assert "stages.arm.mesage: unknown key 'mesage'; did you mean 'message'?" in line
    path = write_pipeline(PIPELINE.replace("SEEDS", "seeds: [0, 1, 2]").replace("SWEEP", ""))
    with pytest.raises(ConfigError) as caught:  # the pre-flight finds it in each copy: said once
        validate_file(path, testplug_registry, [f"stages.base.data={{name: lines, path: {tmp_path / 'absent.txt'}}}"])
    (line,) = str(caught.value).splitlines()
    assert "stages.base-s0" in line and "absent.txt" in line and line.endswith("(also base-s1, base-s2)")
