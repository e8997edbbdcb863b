"""The runner: fingerprints, skip, resume, re-run with history, --force, marker, redaction."""

from __future__ import annotations

import json
import os
import time

import pytest
import yaml
from mllm.pipeline.config import load_pipeline
from mllm.pipeline.runfolder import COMPLETE, REDACTED, StageFolder, atomic_write_text, redact
from mllm.pipeline.runner import PipelineRunner

PIPELINE = """
name: demo
model: {name: llava, init: tiny}
stages:
  - id: count
    kind: touch
    data: {name: lines, path: DATA}
  - id: after
    kind: touch
    reads: [count]
    message: "key sk-very-secret-0123456789abcdef pasted by mistake"
  - id: alone
    kind: touch
    message: independent
"""


@pytest.fixture
def setup(tmp_path, testplug_registry, write_pipeline):
    data = tmp_path / "data.txt"
    data.write_text("q1|a1\nq2|a2\nq3|a3\n")
    path = write_pipeline(PIPELINE.replace("DATA", str(data)))
    runs = tmp_path / "runs"

    def runner(overrides=(), force=()):
        pipeline = load_pipeline(path, testplug_registry, list(overrides))
        return PipelineRunner(pipeline, testplug_registry, runs, force=tuple(force))

    return runner, data, runs / "demo"


def actions(plans):
    return {p.stage_id: p.action for p in plans if p.stage_id != "init"}


def test_first_run_runs_everything_and_writes_the_run_folder(setup):
    runner, data, run_dir = setup
    assert actions(runner().run()) == {"count": "run", "after": "run", "alone": "run"}
    stage = run_dir / "count"
    assert (stage / "items.txt").read_text().splitlines() == ["line-1", "line-2", "line-3"]
    assert json.loads((stage / "metrics.json").read_text()) == {"items": 3}
    assert json.loads((stage / COMPLETE).read_text())["fingerprint"]
    assert yaml.safe_load((stage / "resolved_config.yaml").read_text())["data"]["name"] == "lines"
    assert (stage / "log.txt").exists()
    assert json.loads((stage / "data_report.json").read_text())["kept"] == 3
    # stages that never load a model never build the init model
    assert not (run_dir / "init").exists()


def test_second_run_skips_finished_stages(setup):
    runner, _, run_dir = setup
    runner().run()
    assert set(actions(runner().run()).values()) == {"skip"}
    attempts = json.loads((run_dir / "count" / "attempts.json").read_text())
    assert len(attempts) == 1


def test_changed_data_file_reruns_its_stage_and_downstream_and_keeps_history(setup):
    runner, data, run_dir = setup
    runner().run()
    old_fingerprint = json.loads((run_dir / "count" / COMPLETE).read_text())["fingerprint"]
    time.sleep(0.01)
    data.write_text("q1|a1\nq2|a2\nq3|a3\nq4|a4\n")
    plans = runner().run()
    assert actions(plans) == {"count": "rerun", "after": "rerun", "alone": "skip"}
    assert (run_dir / "count" / "items.txt").read_text().splitlines()[-1] == "line-4"
    kept = run_dir / ".history" / f"count-{old_fingerprint[:16]}"
    assert (kept / "items.txt").read_text().splitlines() == ["line-1", "line-2", "line-3"]
    assert (run_dir / ".history").glob("after-*")


def test_changed_config_via_override_reruns(setup):
    runner, _, _ = setup
    runner().run()
    assert actions(runner(["stages.alone.message=changed"]).run())["alone"] == "rerun"


def test_interrupted_stage_resumes_and_is_not_marked_complete(setup, monkeypatch):
    runner, _, run_dir = setup
    monkeypatch.setenv("MLLM_TESTPLUG_FAIL_AT", "2")
    with pytest.raises(RuntimeError, match="interrupted on purpose"):
        runner().run()
    monkeypatch.delenv("MLLM_TESTPLUG_FAIL_AT")
    folder = StageFolder(run_dir, "count")
    assert folder.completed_fingerprint() is None
    assert (run_dir / "count" / "items.txt").read_text().splitlines() == ["line-1", "line-2"]
    plans = runner().run()
    assert actions(plans)["count"] == "resume"
    assert (run_dir / "count" / "items.txt").read_text().splitlines() == ["line-1", "line-2", "line-3"]
    assert json.loads((run_dir / "count" / "attempts.json").read_text()) == [{"resume": True, "skipped_done": 2}]


def test_force_reruns_stage_and_downstream(setup):
    runner, _, run_dir = setup
    runner().run()
    assert actions(runner(force=["count"]).run()) == {"count": "force", "after": "force", "alone": "skip"}
    assert len(list((run_dir / ".history").iterdir())) == 2


def test_dry_run_plan_runs_nothing(setup):
    runner, _, run_dir = setup
    plans = runner().plan()
    assert actions(plans) == {"count": "run", "after": "run", "alone": "run"}
    assert not run_dir.exists()


def test_secrets_are_redacted_in_resolved_config(setup):
    runner, _, run_dir = setup
    runner().run()
    text = (run_dir / "after" / "resolved_config.yaml").read_text()
    assert "sk-very-secret" not in text  # a secret key is refused at load; a key-shaped value is redacted
    assert yaml.safe_load(text)["message"] == f"key {REDACTED} pasted by mistake"


def test_redact_keeps_env_var_names():
    assert redact({"api_key_env": "OPENAI_API_KEY", "token": "t", "nested": [{"password": "p"}]}) == {
        "api_key_env": "OPENAI_API_KEY", "token": REDACTED, "nested": [{"password": REDACTED}]}


def test_completion_marker_is_written_atomically(tmp_path, monkeypatch):
    target = tmp_path / COMPLETE
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((str(src), str(dst)))
        assert json.loads(open(src).read()) == {"fingerprint": "abc"}  # complete before it appears
        assert not os.path.exists(dst)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write_text(target, json.dumps({"fingerprint": "abc"}))
    assert calls and calls[0][1] == str(target)
    assert [p.name for p in tmp_path.iterdir()] == [COMPLETE]


def test_bad_rows_skip_policy_is_reported(setup, tmp_path):
    runner, data, run_dir = setup
    data.write_text("q1|a1\nno separator here\nq3|a3\n")
    with pytest.raises(Exception, match=r"data.txt, row 2: ValueError: expected 'question\|answer'"):
        runner().run()
    runner(["stages.count.data.on_bad_row=skip", "stages.count.data.max_bad_fraction=0.5"]).run()
    report = json.loads((run_dir / "count" / "data_report.json").read_text())
    assert report["kept"] == 2 and report["skipped"][0]["row"] == "2"
    with pytest.raises(Exception, match="more than max_bad_fraction=0.1"):
        runner(["stages.count.data.on_bad_row=skip", "stages.count.data.max_bad_fraction=0.1"]).run()
