"""The `mllm` command: run, --dry-run, validate, plugins, env, completion."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from mllm.cli.main import main

PIPELINE = """
name: cli-demo
model: {name: llava, init: tiny}
stages:
  - id: count
    kind: touch
    data: {name: lines, path: DATA}
  - id: hello
    kind: touch
    message: hi
"""


@pytest.fixture
def pipeline_file(tmp_path, write_pipeline):
    data = tmp_path / "data.txt"
    data.write_text("q|a\n")
    return write_pipeline(PIPELINE.replace("DATA", str(data)))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_run_then_rerun_skips(testplug_registry, pipeline_file, tmp_path):
    runs = tmp_path / "runs"
    first = invoke("run", pipeline_file, "--runs-dir", runs)
    assert first.exit_code == 0, first.output
    assert "count (touch): started" in first.output
    second = invoke("run", pipeline_file, "--runs-dir", runs)
    assert "count (touch): skipped" in second.output and "hello (touch): skipped" in second.output
    third = invoke("run", pipeline_file, "stages.hello.message=bye", "--runs-dir", runs)
    assert "count (touch): skipped" in third.output and "hello (touch): started" in third.output
    assert (runs / "cli-demo" / ".history").is_dir()


def test_a_fully_skipped_rerun_prints_the_last_results(testplug_registry, pipeline_file, tmp_path):
    runs = tmp_path / "runs"
    assert invoke("run", pipeline_file, "--runs-dir", runs).exit_code == 0
    report = {"models": {"sft": {"easyqa": {"accuracy": 0.8045}}}, "training": {}}
    (runs / "cli-demo" / "hello" / "report.json").write_text(json.dumps(report))  # as a report stage leaves it
    again = invoke("run", pipeline_file, "--runs-dir", runs)
    assert "hello (touch): skipped" in again.output and "0.8045" in again.output and "easyqa" in again.output


def test_dry_run_shows_plan_and_runs_nothing(testplug_registry, pipeline_file, tmp_path):
    result = invoke("run", pipeline_file, "--runs-dir", tmp_path / "runs", "--dry-run")
    assert result.exit_code == 0
    assert "count" in result.output and "not run before" in result.output
    assert not (tmp_path / "runs").exists()


def test_force_unknown_stage_is_an_error(testplug_registry, pipeline_file, tmp_path):
    result = invoke("run", pipeline_file, "--runs-dir", tmp_path / "runs", "--force", "nope")
    assert result.exit_code == 2 and "--force names unknown stage(s) ['nope']" in result.output


def test_validate_reports_missing_data_file(testplug_registry, tmp_path, write_pipeline):
    path = write_pipeline(PIPELINE.replace("DATA", str(tmp_path / "missing.txt")))
    result = invoke("validate", path)
    assert result.exit_code == 2
    assert "stages.count.data: lines reads" in result.output and "missing.txt, which does not exist" in result.output


def test_validate_bad_key_exit_code_and_message(testplug_registry, pipeline_file):
    result = invoke("validate", pipeline_file, "stages.hello.mesage=x")
    assert result.exit_code == 2
    assert "stages.hello.mesage: unknown key 'mesage'; did you mean 'message'?" in result.output


def test_validate_ok(testplug_registry, pipeline_file):
    result = invoke("validate", pipeline_file)
    assert result.exit_code == 0 and "OK (2 stages: count, hello)" in result.output


def test_plugins_json_includes_core_and_test_plugin(testplug_registry):
    listing = json.loads(invoke("plugins", "--json").output)
    names = {(c["kind"], c["name"], c["distribution"]) for c in listing["components"]}
    assert ("model", "llava", "mllm-core") in names and ("stage_kind", "touch", "mllm-testplug") in names


def test_completion_scripts():
    for shell, marker in (("bash", "complete"), ("zsh", "compdef"), ("fish", "complete")):
        result = invoke("completion", shell)
        assert result.exit_code == 0 and marker in result.output and "_MLLM_COMPLETE" in result.output


def test_python_dash_m_and_env():
    result = subprocess.run([sys.executable, "-m", "mllm", "env", "--json"], capture_output=True, text=True, check=True)
    info = json.loads(result.stdout)
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["torch"].startswith("2.") and "mllm-core" in info["plugins"]
    assert info["attention"] in ("sdpa", "flash_attention_2")
