"""Every user error of ``mllm run``, ``validate``, ``eval score``, ``export`` and ``convert``
is one line on stderr (``error: ...`` naming the file, key or option), exit status 2, and
no traceback; ``--debug`` (or ``MLLM_DEBUG=1``) shows the traceback; a real bug keeps it.

Each case runs the installed ``mllm`` console script as a subprocess, on tiny files in
``tmp_path``; nothing here builds or loads a model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

SCRIPT = Path(sys.prefix) / "bin" / "mllm"
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "mllm"]
HAS_EVAL = importlib.util.find_spec("mllm_eval") is not None

PIPELINE = """\
name: demo
model: {name: llava, init: tiny}
stages:
  - id: sub
    kind: transform
    data: {name: records-jsonl, path: DATA}
    ops: [{op: subsample, n: 1}]
"""


def mllm(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("MLLM_DEBUG", "MLLM_RUNS_DIR")}
    # library deprecation warnings are not mllm's output; they would break the one-line check
    base["PYTHONWARNINGS"] = "ignore"
    return subprocess.run([*COMMAND, *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str, status: int = 2) -> str:
    lines = result.stderr.splitlines()
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """Tiny inputs: a valid pipeline over one record, and the broken variants the cases use."""
    data = tmp_path / "records.jsonl"
    data.write_text(json.dumps({"kind": "conversation", "id": "r1", "images": [],
                                "turns": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
                    + "\n")
    good = PIPELINE.replace("DATA", str(data))
    (tmp_path / "good.yaml").write_text(good)
    (tmp_path / "bad_yaml.yaml").write_text("name: [demo\n")
    (tmp_path / "top_key.yaml").write_text(good.replace("stages:", "stagez:"))
    (tmp_path / "stage_key.yaml").write_text(good.replace("    ops:", "    opz:"))
    (tmp_path / "component.yaml").write_text(good.replace("records-jsonl", "records-jsnl"))
    (tmp_path / "kind.yaml").write_text(good.replace("kind: transform", "kind: transfrom"))
    (tmp_path / "no_data.yaml").write_text(PIPELINE.replace("DATA", str(tmp_path / "missing.jsonl")))
    (tmp_path / "a_file").write_text("not a folder")
    foreign = tmp_path / "foreign" / "demo"
    foreign.mkdir(parents=True)
    (foreign / "thesis.tex").write_text("years of work")
    full = tmp_path / "full_model"  # a model folder, but not a LoRA adapter
    full.mkdir()
    (full / "config.json").write_text("{}")
    lora = tmp_path / "lora" / "model"
    lora.mkdir(parents=True)
    (lora / "adapter_config.json").write_text("{}")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "weights.bin").write_text("x")
    for name, config in (("no_config", None), ("not_json", "{"), ("not_llava", json.dumps({"architectures": ["Bert"]})),
                         ("resampler", json.dumps({"mm_vision_tower": "clip", "mm_projector_type": "resampler"}))):
        folder = tmp_path / "ckpt" / name
        folder.mkdir(parents=True)
        if config is not None:
            (folder / "config.json").write_text(config)
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": "1", "text": "yes"}) + "\n")
    (tmp_path / "no_gold.jsonl").write_text(json.dumps({"question_id": "1", "image": "1.png", "text": "q"}) + "\n")
    (tmp_path / "shr.jsonl").write_text(json.dumps({
        "image_id": 1, "image": "1.jpg", "regions": [{"x": 0, "y": 0, "w": 1, "h": 1, "phrase": "a cat"}],
        "factual": ["a cat"]}) + "\n")
    return tmp_path


@dataclass(frozen=True)
class Case:
    args: Callable[[Path], list[str]]
    expected: tuple[str, ...]  # what the one line must name
    needs_eval: bool = False
    writes: bool = False  # the command got as far as creating its run folder


CASES: dict[str, Case] = {
    # mllm run / validate: the pipeline file and its keys
    "missing pipeline file": Case(lambda w: ["run", "nope.yaml"], ("nope.yaml", "No such file")),
    "pipeline file is a folder": Case(lambda w: ["validate", str(w / "ckpt")], ("ckpt", "Is a directory")),
    "YAML syntax error": Case(lambda w: ["validate", "bad_yaml.yaml"], ("bad_yaml.yaml", "not valid YAML (line 2")),
    "unknown top-level key": Case(lambda w: ["validate", "top_key.yaml"], ("top_key.yaml", "'stagez'", "'stages'")),
    "unknown stage key": Case(lambda w: ["run", "stage_key.yaml"], ("stage_key.yaml", "stages.sub", "'opz'")),
    "unknown component name": Case(lambda w: ["validate", "component.yaml"],
                                   ("stages.sub.data.name", "'records-jsnl'", "did you mean 'records-jsonl'")),
    "unknown stage kind": Case(lambda w: ["validate", "kind.yaml"], ("stages.sub.kind", "'transfrom'")),
    "override without =": Case(lambda w: ["validate", "good.yaml", "stages.sub.ops"],
                               ("override 'stages.sub.ops'", "key=value")),
    "override of an unknown stage": Case(lambda w: ["run", "good.yaml", "stages.nope.x=1", "--dry-run"],
                                         ("override", "no stage with id 'nope'")),
    "validate: missing data file": Case(lambda w: ["validate", "no_data.yaml"],
                                        ("no_data.yaml", "stages.sub.data", "missing.jsonl", "does not exist")),
    "run: missing data file": Case(lambda w: ["run", "no_data.yaml", "--runs-dir", "runs"],
                                   ("missing.jsonl", "does not exist")),  # the pre-flight: before the run folder
    "unknown stage in --force": Case(lambda w: ["run", "good.yaml", "--force", "nope", "--dry-run"],
                                     ("--force", "'nope'")),
    "runs-dir is a file": Case(lambda w: ["run", "good.yaml", "--runs-dir", "a_file", "--dry-run"],
                               ("a_file", "--runs-dir")),
    "runs-dir holds a foreign folder": Case(lambda w: ["run", "good.yaml", "--runs-dir", "foreign", "--dry-run"],
                                            ("demo", "not an mllm run folder")),
    "several nodes without an address": Case(lambda w: ["run", "good.yaml", "--nnodes", "2", "--dry-run"],
                                             ("--master-addr",)),
    # mllm export
    "export without --merge": Case(lambda w: ["export", "lora", "out"], ("--merge",)),
    "export of a missing folder": Case(lambda w: ["export", "--merge", "nope", "out"], ("nope", "no such folder")),
    "export of a folder that is not LoRA": Case(lambda w: ["export", "--merge", "full_model", "out"],
                                                ("full_model", "not a LoRA")),
    "export to an existing destination": Case(lambda w: ["export", "--merge", "lora", "taken"],
                                              ("taken", "not empty")),
    # mllm convert
    "convert of a missing folder": Case(lambda w: ["convert", "llava-original", "nope", "out"], ("nope", "no such folder")),
    "convert without config.json": Case(lambda w: ["convert", "llava-original", "ckpt/no_config", "out"],
                                        ("no_config", "no config.json")),
    "convert of bad JSON": Case(lambda w: ["convert", "llava-original", "ckpt/not_json", "out"],
                                ("not_json/config.json", "JSON")),
    "convert of a non-LLaVA checkpoint": Case(lambda w: ["convert", "llava-original", "ckpt/not_llava", "out"],
                                              ("not_llava", "not an original LLaVA checkpoint")),
    "convert of an unsupported projector": Case(lambda w: ["convert", "llava-original", "ckpt/resampler", "out"],
                                                ("'resampler'", "not supported")),
    # mllm eval score
    "eval: missing answers file": Case(
        lambda w: ["eval", "score", "pope", "--answers", "gone.jsonl", "--questions", "q", "--labels", "l"],
        ("--answers", "gone.jsonl"), needs_eval=True),
    "eval: unknown benchmark": Case(lambda w: ["eval", "score", "popee"], ("'popee'", "did you mean 'pope'"),
                                    needs_eval=True),
    "eval: an option the benchmark does not take": Case(lambda w: ["eval", "score", "pope", "--reviews", "r"],
                                                        ("--reviews", "--answers"), needs_eval=True),
    "eval: missing required option": Case(lambda w: ["eval", "score", "llava-bench"], ("--reviews is required",),
                                          needs_eval=True),
    "eval: missing question file": Case(
        lambda w: ["eval", "score", "image-qa", "--answers", "answers.jsonl", "--questions", "gone.jsonl"],
        ("gone.jsonl", "does not exist"), needs_eval=True),
    "eval: question without gold answer": Case(
        lambda w: ["eval", "score", "image-qa", "--answers", "answers.jsonl", "--questions", "no_gold.jsonl"],
        ("'1'", "no gold answer"), needs_eval=True),
    "eval: judge option not KEY=VALUE": Case(
        lambda w: ["eval", "score", "shr", "--answers", "answers.jsonl", "--judge", "openai", "--judge-option", "model"],
        ("--judge-option 'model'", "KEY=VALUE"), needs_eval=True),
    "eval: unknown judge key": Case(
        lambda w: ["eval", "score", "shr", "--answers", "answers.jsonl", "--questions", "shr.jsonl",
                   "--judge", "openai", "--judge-option", "modle=x"],
        ("judge 'openai'", "modle", "its keys: model"), needs_eval=True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_user_error_is_one_line_with_status_2(name: str, work: Path):
    case = CASES[name]
    if case.needs_eval and not HAS_EVAL:
        pytest.skip("mllm-eval is not installed")
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    assert_one_line_error(mllm(*case.args(work), cwd=work), *case.expected)
    if not case.writes:  # refused before anything was created (no half-made DEST, run folder, ...)
        assert sorted(p.relative_to(work) for p in work.rglob("*")) == before


def test_debug_shows_the_traceback(work: Path):
    for result in (mllm("--debug", "validate", "nope.yaml", cwd=work),
                   mllm("validate", "nope.yaml", cwd=work, env={"MLLM_DEBUG": "1"})):
        assert result.returncode != 0
        assert "Traceback" in result.stderr and "mllm.errors.ConfigError: cannot read pipeline file nope.yaml" \
            in result.stderr


# -- a plugin's own errors: a third-party distribution on PYTHONPATH (entry point in its dist-info) -----------

PLUGIN = '''
from mllm import hookimpl
from mllm.errors import MllmError
from mllm.plugins.specs import ComponentSpec


class VerdictError(MllmError):
    """This plugin's own user error, with its own exit status."""

    exit_code = 3


class Strict:
    """Scores only from --answers (required: no default), and checks the file."""

    @classmethod
    def score_files(cls, *, answers: str, config=None):
        text = open(answers).read()
        if text.strip() == "bad":
            raise VerdictError(f"--answers {answers!r} says bad", hint="write good into it")
        if text.strip() == "bug":
            return {}["no such metric"]  # a bug in the plugin: must keep its traceback
        return {"ok": 1.0}


@hookimpl
def mllm_register_benchmarks(register):
    register(ComponentSpec(name="strict", impl="mllm_errplug:Strict", description="score-only test benchmark"))
'''


@pytest.fixture
def errplug(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "mllm_errplug.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "mllm_errplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mllm-errplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mllm]\nerrplug = mllm_errplug\n")
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"PYTHONPATH": path}


def test_a_plugins_mllm_error_is_caught_the_same_way(tmp_path: Path, errplug: dict[str, str]):
    answers = tmp_path / "answers.txt"
    answers.write_text("good")
    ok = mllm("eval", "score", "strict", "--answers", str(answers), "--json", cwd=tmp_path, env=errplug)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["metrics"] == {"ok": 1.0}

    answers.write_text("bad")
    line = assert_one_line_error(mllm("eval", "score", "strict", "--answers", str(answers), cwd=tmp_path, env=errplug),
                                 "answers.txt", status=3)
    assert line.endswith("says bad; write good into it")

    # a required keyword of score_files that was not given is named, instead of a TypeError
    assert_one_line_error(mllm("eval", "score", "strict", cwd=tmp_path, env=errplug),
                          "benchmark 'strict' needs --answers")


def test_a_bug_keeps_its_traceback(tmp_path: Path, errplug: dict[str, str]):
    answers = tmp_path / "answers.txt"
    answers.write_text("bug")
    result = mllm("eval", "score", "strict", "--answers", str(answers), cwd=tmp_path, env=errplug)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KeyError: 'no such metric'" in result.stderr
    assert not result.stderr.startswith("error:")


def test_the_errors_share_one_base_and_keep_their_builtin_bases():
    import mllm.errors as errors

    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, type):
            assert issubclass(value, errors.MllmError), name
    assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.UnknownComponentError, LookupError)
    assert issubclass(errors.SpecImportError, ImportError) and issubclass(errors.MissingFileError, FileNotFoundError)
    assert errors.TrainingStopped.exit_code == 143 and errors.ConfigError.exit_code == 2
    error = errors.ConfigError("a.yaml: stages.x: first\na.yaml: stages.y: second", hint="fix both")
    assert str(error) == "a.yaml: stages.x: first; a.yaml: stages.y: second; fix both"

    from mllm.pipeline.config import ConfigError
    from mllm.plugins.registry import UnknownComponentError

    assert ConfigError is errors.ConfigError and UnknownComponentError is errors.UnknownComponentError


def test_mllm_errors_imports_nothing_heavy():
    import ast

    import mllm.errors

    tree = ast.parse(Path(mllm.errors.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
    code = "import sys, mllm.errors; print([m for m in ('torch', 'transformers') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_sigterm_stop_prints_stopped_and_exits_143(work: Path, monkeypatch):
    from click.testing import CliRunner
    from mllm.cli.main import main
    from mllm.errors import TrainingStopped
    from mllm.pipeline.runner import PipelineRunner

    def stopped(self, only=None, **options):
        raise TrainingStopped("training stopped by SIGTERM after step 5; run the same command again to resume")

    monkeypatch.setattr(PipelineRunner, "run", stopped)
    result = CliRunner().invoke(main, ["run", str(work / "good.yaml"), "--runs-dir", str(work / "runs")])
    assert result.exit_code == 143, result.output
    assert "stopped: training stopped by SIGTERM after step 5" in result.output and "Traceback" not in result.output


def test_a_stage_process_prints_its_user_error_on_one_line(tmp_path: Path, monkeypatch, capsys):
    """The torchrun worker: a user error is one line with the rank, exit status the error's."""
    pytest.importorskip("torch")
    from mllm.errors import ConfigError
    from mllm.pipeline import worker

    def fails(launch):
        raise ConfigError("stages.sft.train.lr: must be positive")

    monkeypatch.setattr(worker, "init_process_group", lambda: "gloo")
    monkeypatch.setattr(worker, "run_stage", fails)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MLLM_DEBUG", raising=False)
    launch = tmp_path / "launch.json"
    launch.write_text("{}")
    with pytest.raises(SystemExit) as exited:
        worker.main(["--launch-file", str(launch)])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["rank 1 error: stages.sft.train.lr: must be positive"]
