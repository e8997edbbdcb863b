"""Stages reused across runs: a finished stage with the same fingerprint anywhere under the runs
folder is copied (hard links), never from .history, a locked run or an unfinished stage; a re-run
with one more seed runs only that seed's stages."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from mllm.pipeline.config import load_pipeline
from mllm.pipeline.runfolder import COMPLETE, RunLock, StageFolder
from mllm.pipeline.runner import PipelineRunner

PIPELINE = """
name: a
model: {name: llava, init: tiny}
seeds: [0]
stages:
  - id: first
    kind: touch
    data: {name: lines, path: DATA}
  - id: second
    kind: touch
    reads: [first]
  - id: report
    kind: report
"""


@pytest.fixture
def setup(tmp_path, testplug_registry, write_pipeline):
    data = tmp_path / "data.txt"
    data.write_text("q1|a1\nq2|a2\n")
    path = write_pipeline(PIPELINE.replace("DATA", str(data)))
    runs = tmp_path / "runs"

    def runner(*overrides, events=None):
        pipeline = load_pipeline(path, testplug_registry, list(overrides))
        return PipelineRunner(pipeline, testplug_registry, runs,
                              on_event=(lambda plan, event: events.append((plan.stage_id, event))) if events is not None
                              else None)

    return runner, runs


def actions(runner):
    return {plan.stage_id: plan.action for plan in runner.plan() if plan.stage_id != "init"}


def test_another_run_reuses_finished_stages_as_hard_links(setup):
    runner, runs = setup
    runner().run()
    events: list = []
    other = runner("name=b", events=events)
    assert actions(other) == {"first-s0": "reuse", "second-s0": "reuse", "report": "run"}
    other.run()
    assert ("first-s0", f"reused from {runs / 'a' / 'first-s0'}") in events
    assert not any(stage == "first-s0" and event == "started" for stage, event in events)
    for name in ("items.txt", "metrics.json", COMPLETE):
        a, b = runs / "a" / "first-s0" / name, runs / "b" / "first-s0" / name
        assert a.read_bytes() == b.read_bytes() and os.stat(a).st_ino == os.stat(b).st_ino
    log_a, log_b = runs / "a" / "first-s0" / "log.txt", runs / "b" / "first-s0" / "log.txt"
    assert os.stat(log_a).st_ino != os.stat(log_b).st_ino  # appended to: a copy, the source's log is untouched
    assert "reused from" in log_b.read_text() and "reused from" not in log_a.read_text()
    assert actions(runner("name=b")) == {"first-s0": "skip", "second-s0": "skip", "report": "skip"}


def test_never_from_a_locked_run_history_or_an_unfinished_stage(setup):
    runner, runs = setup
    runner().run()
    with RunLock(runs / "a"):  # another mllm run works in runs/a
        assert set(actions(runner("name=b")).values()) == {"run"}
    assert actions(runner("name=b"))["first-s0"] == "reuse"
    (runs / "a" / "second-s0" / COMPLETE).unlink()  # unfinished
    assert actions(runner("name=b"))["second-s0"] == "run"
    StageFolder(runs / "a", "first-s0").archive()  # now only in runs/a/.history
    assert (runs / "a" / ".history").is_dir()
    assert actions(runner("name=b"))["first-s0"] == "run"


def test_a_forced_stage_and_what_follows_it_are_recomputed(setup, testplug_registry):
    runner, runs = setup
    runner().run()
    pipeline = load_pipeline(runner().pipeline.path, testplug_registry, ["name=b"])
    forced = PipelineRunner(pipeline, testplug_registry, runs, force=("first-s0",))
    assert actions(forced) == {"first-s0": "run", "second-s0": "run", "report": "run"}
    # --force with the stage as written forces every copy of it
    pipeline = load_pipeline(runner().pipeline.path, testplug_registry, ["seeds=[0, 1]"])
    runner("seeds=[0, 1]").run()
    forced = PipelineRunner(pipeline, testplug_registry, runs, force=("second",))
    assert actions(forced) == {"first-s0": "skip", "first-s1": "skip", "second-s0": "force", "second-s1": "force",
                               "report": "force"}


def test_a_changed_stage_is_not_reused(setup):
    runner, runs = setup
    runner().run()
    planned = actions(runner("name=b", "stages.second.message=changed"))
    assert planned == {"first-s0": "reuse", "second-s0": "run", "report": "run"}


def test_one_more_seed_runs_only_that_seeds_stages(setup):
    runner, runs = setup
    runner().run()
    events: list = []
    runner("seeds=[0, 1]", events=events).run()
    started = {stage for stage, event in events if event == "started"}
    assert started == {"first-s1", "second-s1", "report"}
    assert json.loads((runs / "a" / "first-s1" / "metrics.json").read_text()) == {"items": 2}


def test_reuse_falls_back_to_running_when_the_source_went_away(setup):
    runner, runs = setup
    runner().run()
    other = runner("name=b")
    plans = other.plan()
    assert {p.stage_id: p.action for p in plans}["first-s0"] == "reuse"
    shutil.rmtree(runs / "a")
    events: list = []
    runner("name=b", events=events).run()
    assert ("first-s0", "started") in [(s, e.split()[0]) for s, e in events]
    assert (runs / "b" / "first-s0" / "items.txt").read_text().splitlines() == ["line-1", "line-2"]
