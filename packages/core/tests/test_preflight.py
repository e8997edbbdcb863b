"""Pre-flight: `mllm run` stops before its first stage, and `mllm validate` reports every problem
at once, a line each (stage, key, path), exit status 2, for what would fail later: missing data,
benchmark and model files, a `from:` naming no stage, a pairing fed by a stage that does not
score, a method fed the wrong record kind, a judge that is not set up; `--dry-run` marks those
stages. Nothing here builds a model."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner
from mllm.cli.main import main
from mllm.pipeline.config import ConfigError, load_pipeline
from mllm.pipeline.runner import PipelineRunner
from mllm.pipeline.validation import PreflightError, preflight
from mllm.plugins import registry as plugins

PLUGIN = '''
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from mllm import hookimpl
from mllm.interfaces import ComponentConfig
from mllm.plugins.specs import ComponentSpec
from mllm.records import EvalItem


class FileQAConfig(ComponentConfig):
    questions: str = Field(description="a JSON list of [question, answer]")
    judge: dict[str, Any] | None = Field(None, description="the judge that grades the answers")


class FileQA:
    metric_keys: ClassVar[tuple[str, ...]] = ("score",)

    def __init__(self, config):
        self.config = config

    @classmethod
    def data_files(cls, config):
        return [Path(config.questions)]

    def items(self):
        import json

        rows = json.loads(Path(self.config.questions).read_text())
        return [EvalItem(id=str(i), prompt=q, answer=a, images=tuple(imgs), check_files=False)
                for i, (q, a, imgs) in enumerate(rows)]

    def score(self, items, answers):
        return {"score": 0.0}


class KeyJudgeConfig(ComponentConfig):
    model: str = "grader"
    api_key_env: str = "PREFLIGHT_TEST_KEY"


class KeyJudge:
    def __init__(self, config):
        self.config = config

    def complete(self, prompt, *, system=None):
        return "1"


class PairsMethod:
    record_kind: ClassVar[str] = "preference"


@hookimpl
def mllm_register_benchmarks(register):
    register(ComponentSpec(name="file-qa", impl=f"{__name__}:FileQA", config=f"{__name__}:FileQAConfig"))


@hookimpl
def mllm_register_judges(register):
    register(ComponentSpec(name="key-judge", impl=f"{__name__}:KeyJudge", config=f"{__name__}:KeyJudgeConfig"))


@hookimpl
def mllm_register_methods(register):
    register(ComponentSpec(name="pairs-method", impl=f"{__name__}:PairsMethod"))
'''


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """The core's components plus a benchmark with a file and a judge, a judge reading an API
    key, and a method that trains on Preference pairs."""
    (tmp_path / "preflight_plug.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("PREFLIGHT_TEST_KEY", raising=False)
    import importlib

    module = importlib.import_module("preflight_plug")
    registry = plugins.Registry(autoload=False)
    assert registry.register_plugin(module, distribution="preflight-plug")
    plugins.set_registry(registry)
    yield registry
    plugins.set_registry(None)


@pytest.fixture
def files(tmp_path):
    """A conversation file, a question file (with one real image), and an image."""
    image = tmp_path / "red.png"
    image.write_bytes(b"not decoded by the pre-flight")
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"kind": "conversation", "id": "r1", "images": [],
                                   "turns": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a"}]}) + "\n")
    questions = tmp_path / "questions.json"
    questions.write_text(json.dumps([["<image>colour?", "red", [str(image)]]]))
    return {"records": records, "questions": questions, "image": image}


def pipeline_text(*, data, questions, model="{name: llava, init: tiny}", judge="{name: key-judge}"):
    """A train stage (its method and dataset agree: Preference pairs) and an eval stage."""
    return textwrap.dedent(f"""\
        name: preflight-demo
        description: a pipeline the pre-flight checks
        model: {model}
        stages:
          - id: sft
            kind: train
            method: {{name: pairs-method}}
            data: {{name: records-jsonl, path: {data}, kind: preference}}
          - id: eval
            kind: eval
            benchmarks: [{{name: file-qa, questions: {questions}, judge: {judge}}}]
        """)


def write(tmp_path, text, name="pipeline.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.strip()]


# -- missing files: each stops `mllm run` before the first stage -----------------------------------------


@pytest.mark.parametrize("broken", ["data", "benchmark", "model"])
def test_a_missing_file_stops_run_before_the_first_stage(broken, registry, files, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFLIGHT_TEST_KEY", "set")
    gone = tmp_path / "gone"
    text = pipeline_text(data=gone / "records.jsonl" if broken == "data" else files["records"],
                         questions=gone / "questions.json" if broken == "benchmark" else files["questions"],
                         model=f"{{name: llava, path: {gone / 'model'}}}" if broken == "model"
                         else "{name: llava, init: tiny}")
    path = write(tmp_path, text)
    result = invoke("run", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    expected = {"data": ("stages.sft.data", str(gone / "records.jsonl")),
                "benchmark": ("stages.eval.benchmarks[0]", str(gone / "questions.json")),
                "model": ("model.path", str(gone / "model"))}[broken]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(text in lines[0] for text in expected) and "does not exist" in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()  # nothing was started, not even the run folder


def test_validate_reports_every_problem_at_once(registry, files, tmp_path):
    gone = tmp_path / "gone"
    path = write(tmp_path, pipeline_text(data=gone / "records.jsonl", questions=gone / "questions.json",
                                         model=f"{{name: llava, path: {gone / 'model'}}}"))
    result = invoke("validate", path)
    assert result.exit_code == 2
    lines = error_lines(result)
    assert all(line.startswith(f"error: {path}: ") for line in lines), lines
    text = "\n".join(lines)
    for where, what in (("model.path", gone / "model"), ("stages.sft.data", gone / "records.jsonl"),
                        ("stages.eval.benchmarks[0]", gone / "questions.json")):
        assert any(where in line and str(what) in line for line in lines), text
    # the judge's key is not set either: reported with the rest
    assert any("stages.eval.benchmarks[0].judge" in line and "$PREFLIGHT_TEST_KEY" in line for line in lines), text


def test_relative_paths_are_printed_absolute(registry, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, pipeline_text(data="data/records.jsonl", questions=files["questions"]))
    lines = error_lines(invoke("validate", path))
    assert any(str(tmp_path / "data" / "records.jsonl") in line for line in lines), lines


# -- what stages read from each other, record kinds, judges -------------------------------------------------


SOURCES = """\
name: sources
model: {{name: llava, init: tiny}}
stages:
  - id: answers
    kind: generate
    data: {{name: records-jsonl, path: {records}}}
  - id: pairs
    kind: train
    method: {{name: pairs-method}}
    data: {{from: answers, pairs: wrong-vs-gold}}
  - id: plain
    kind: train
    method: {{name: pairs-method}}
    data: {{name: records-jsonl, path: {records}}}
  - id: judged
    kind: eval
    models: [pairs]
    benchmarks: [{{name: file-qa, questions: {questions}}}]
  - id: nowhere
    kind: train
    method: {{name: pairs-method}}
    data: {{from: nope, pairs: wrong-vs-gold}}
"""


def test_validate_reports_sources_record_kinds_and_judges(registry, files, tmp_path):
    path = write(tmp_path, SOURCES.format(records=files["records"], questions=files["questions"]))
    result = invoke("validate", path)
    assert result.exit_code == 2
    lines = error_lines(result)
    text = "\n".join(lines)
    assert len(lines) == 4, text
    assert any("stages.nowhere" in line and "'nope'" in line and "not defined before it" in line
               for line in lines), text
    assert any("stages.pairs.data.pairs" in line and "'answers' does not score" in line and "score: {rule:" in line
               for line in lines), text
    assert any("stages.plain.data" in line and "'preference'" in line and "'conversation'" in line
               for line in lines), text
    assert any("stages.judged.benchmarks[0].judge" in line and "scored by a judge" in line for line in lines), text


def test_dry_run_marks_each_stage_that_would_fail(registry, files, tmp_path):
    text = SOURCES.format(records=files["records"], questions=files["questions"])
    path = write(tmp_path, text[:text.index("  - id: nowhere")])  # the loader's problems stop even a dry run
    result = invoke("run", path, "--runs-dir", tmp_path / "runs", "--dry-run")
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ ")
            and len(line.split()) > 2}
    for stage in ("pairs", "plain", "judged"):
        assert "would fail" in rows[stage], result.stdout
    assert "would fail" not in rows["answers"], result.stdout
    assert "would fail: stages.pairs.data.pairs:" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_the_runner_refuses_to_start_too(registry, files, tmp_path):
    """The check is the runner's: `run()` from Python stops before the first stage as well."""
    path = write(tmp_path, pipeline_text(data=tmp_path / "gone.jsonl", questions=files["questions"]))
    runner = PipelineRunner(load_pipeline(path, registry), registry, tmp_path / "runs")
    assert [p.stage for p in runner.preflight()] == ["sft", "eval"]  # the file; the judge's key
    with pytest.raises(PreflightError) as error:
        runner.run()
    assert len(error.value.lines()) == 2 and str(path) in error.value.lines()[0]
    assert not (tmp_path / "runs").exists()


def test_spot_checked_images_must_exist(registry, files, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFLIGHT_TEST_KEY", "set")
    questions = tmp_path / "no_image.json"
    questions.write_text(json.dumps([["<image>colour?", "red", [str(tmp_path / "lost.png")]]]))
    pipeline = load_pipeline(write(tmp_path, pipeline_text(data=files["records"], questions=questions)), registry)
    problems = [str(p) for p in preflight(pipeline, registry)]
    assert any("record '0' names the image" in p and str(tmp_path / "lost.png") in p for p in problems), problems


# -- the loader reports every problem of a file at once ---------------------------------------------------------


def test_unknown_keys_in_several_sections_are_reported_at_once(registry, files, tmp_path):
    text = pipeline_text(data=files["records"], questions=files["questions"])
    text = text.replace("    kind: train\n", "    kind: train\n    train: {learning_rate: 1.0e-4, num_train_epochs: 2}\n")
    text = text.replace("    kind: eval\n", "    kind: eval\n    batchsize: 4\n")
    with pytest.raises(ConfigError) as error:
        load_pipeline(write(tmp_path, text), registry)
    lines = error.value.lines()
    assert any("stages.sft.train.learning_rate: unknown key 'learning_rate'; did you mean 'lr' (the same setting)?"
               in line for line in lines), lines
    assert any("stages.sft.train.num_train_epochs" in line and "did you mean 'epochs'" in line for line in lines)
    assert any("stages.eval.batchsize" in line and "did you mean 'batch_size'" in line for line in lines), lines


def test_familiar_train_names_get_our_key_on_the_command_line(registry, files, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFLIGHT_TEST_KEY", "set")
    path = write(tmp_path, pipeline_text(data=files["records"], questions=files["questions"]))
    result = invoke("validate", path, "stages.sft.train.per_device_train_batch_size=4",
                    "stages.sft.train.gradient_accumulation_steps=2")
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 2, lines
    assert "did you mean 'batch_size' (the same setting)?" in lines[0]
    assert "did you mean 'grad_accum' (the same setting)?" in lines[1]
