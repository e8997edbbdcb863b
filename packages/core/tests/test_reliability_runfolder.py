"""Reliability of the run folder (docs/reliability.md, round two): one ``mllm run`` at a
time (the lock), what counts as a run folder, names that make folders.

The concurrency test runs ``mllm run`` for real in subprocesses, through
``reliability_inject.py``, holding the first run in the middle of its training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("mllm_align")

from mllm.pipeline.config import ConfigError, load_pipeline  # noqa: E402
from mllm.pipeline.runfolder import RUN_LOCK, RunFolderError, RunLock  # noqa: E402
from mllm.pipeline.runner import PipelineRunner  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: the shared helpers of test_reliability
from test_reliability import INJECT, TINY_MODEL, TOUCH_PIPELINE, TRAIN, read_jsonl, write_data_files  # noqa: E402


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    return write_data_files(tmp_path_factory.mktemp("data"))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLLM_TEST_")}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def _wait_for(condition, timeout: float = 240, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- 3. one mllm run at a time ---------------------------------------------------------------


@pytest.mark.slow
def test_two_concurrent_runs_in_one_folder_the_second_refuses_or_waits_and_the_first_is_intact(data_files, tmp_path):
    """The first ``mllm run`` is held after step 1 of 3; a second one in the same folder
    refuses at once naming the first's pid and touches nothing; a third with ``--wait``
    waits, then finds the first's stage finished and skips it. The first's results are
    complete and intact: one run's log lines, no history, the stage COMPLETE."""
    pipeline = tmp_path / "locked.yaml"
    pipeline.write_text(yaml.safe_dump({
        "name": "locked", "model": dict(TINY_MODEL),
        "stages": [{"id": "sft", "kind": "train", "method": {"name": "sft"},
                    "data": {"name": "records-jsonl", "path": str(data_files / "sft.jsonl")},
                    "train": {**TRAIN, "epochs": 1}}]}))
    runs, held = tmp_path / "runs", tmp_path / "held"
    command = [sys.executable, str(INJECT), "run", str(pipeline), "--runs-dir", str(runs)]
    first_err = open(tmp_path / "first.err", "w")
    first = subprocess.Popen(command, env=_env(MLLM_TEST_HOLD=f"sft:1:{held}"), stdout=subprocess.DEVNULL,
                             stderr=first_err, text=True)
    try:
        _wait_for(lambda: held.exists() or first.poll() is not None, what="the first run to reach step 1")
        assert first.poll() is None, (tmp_path / "first.err").read_text()[-3000:]
        stage = runs / "locked" / "sft"
        before = sorted(p.relative_to(stage) for p in stage.rglob("*"))

        second = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-3000:]
        (line,) = [ln for ln in second.stderr.splitlines() if ln.strip()]
        assert line.startswith("error: ") and f"in use by another mllm run (pid {first.pid}" in line
        assert "--wait" in line and "Traceback" not in second.stderr

        waiting_err = tmp_path / "waiting.err"
        waiting = subprocess.Popen([*command, "--wait"], env=_env(), stdout=subprocess.PIPE,
                                   stderr=open(waiting_err, "w"), text=True)
        _wait_for(lambda: "waiting for it to finish" in waiting_err.read_text() or waiting.poll() is not None,
                  what="the --wait run to wait")
        assert waiting.poll() is None, waiting_err.read_text()[-3000:]
        assert f"pid {first.pid}" in waiting_err.read_text()
        assert sorted(p.relative_to(stage) for p in stage.rglob("*")) == before  # nothing written meanwhile

        (held.parent / (held.name + ".go")).touch()  # let the first run finish
        assert first.wait(timeout=240) == 0, (tmp_path / "first.err").read_text()[-3000:]
        out, _ = waiting.communicate(timeout=240)
        assert waiting.returncode == 0, waiting_err.read_text()[-3000:]
    finally:
        for process in (first, locals().get("waiting")):
            if process is not None and process.poll() is None:
                process.kill()
        first_err.close()
    assert "sft (train): skipped" in out
    assert (stage / "COMPLETE").exists() and (stage / "model" / "model.safetensors").exists()
    assert not (runs / "locked" / ".history").exists()
    assert [e["step"] for e in read_jsonl(stage / "train_log.jsonl") if "loss" in e] == [1, 2, 3]
    log = (stage / "log.txt").read_text()
    assert [log.count(f"step {n}/3: loss=") for n in (1, 2, 3)] == [1, 1, 1]
    assert "resuming" not in log and "re-run" not in log
    assert (runs / "locked" / RUN_LOCK).read_text() == ""  # released


def test_a_locked_run_folder_refuses_another_runner_and_a_stale_lock_is_taken_over(
        tmp_path, testplug_registry, write_pipeline, caplog):
    path = write_pipeline(TOUCH_PIPELINE)
    runs = tmp_path / "runs"
    PipelineRunner(load_pipeline(path, testplug_registry), testplug_registry, runs).run()
    run_dir = runs / "demo"
    runner = PipelineRunner(load_pipeline(path, testplug_registry, ["stages.alone.message=changed"]),
                            testplug_registry, runs)
    with RunLock(run_dir):  # another run holds the folder
        with pytest.raises(RunFolderError, match=rf"{run_dir} is in use by another mllm run \(pid {os.getpid()} "):
            runner.run()
    assert not (run_dir / ".history").exists()  # refused before planning: nothing moved

    # a lock file left by a process that died (SIGKILL, power loss) is stale: taken over
    dead = _dead_pid()
    (run_dir / RUN_LOCK).write_text(json.dumps({"pid": dead, "host": os.uname().nodename, "started": 0}))
    caplog.set_level("WARNING", logger="mllm")
    plans = runner.run()
    assert [p.action for p in plans if p.stage_id == "alone"] == ["rerun"]
    assert f"taking over a stale lock of pid {dead}" in caplog.text
    assert (run_dir / RUN_LOCK).read_text() == ""


def test_without_flock_a_live_pid_holds_the_lock_and_a_dead_one_does_not(tmp_path, monkeypatch):
    """On a file system without flock (some network mounts) the pid in the file decides."""
    import fcntl

    def no_flock(fd, op):
        raise OSError(38, "Function not implemented")  # ENOSYS-like: not EWOULDBLOCK

    monkeypatch.setattr(fcntl, "flock", no_flock)
    (tmp_path / RUN_LOCK).write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename}))
    with pytest.raises(RunFolderError, match=rf"pid {os.getppid()}"):
        RunLock(tmp_path).acquire()
    (tmp_path / RUN_LOCK).write_text(json.dumps({"pid": _dead_pid(), "host": os.uname().nodename}))
    with RunLock(tmp_path) as lock:
        assert lock.held and json.loads((tmp_path / RUN_LOCK).read_text())["pid"] == os.getpid()


def test_wait_waits_for_the_holder(tmp_path, testplug_registry, write_pipeline):
    import threading

    path = write_pipeline(TOUCH_PIPELINE)
    runs = tmp_path / "runs"
    PipelineRunner(load_pipeline(path, testplug_registry), testplug_registry, runs).run()
    holder = RunLock(runs / "demo")
    holder.acquire()
    threading.Timer(0.3, holder.release).start()
    started = time.monotonic()
    plans = PipelineRunner(load_pipeline(path, testplug_registry), testplug_registry, runs).run(wait=True)
    assert time.monotonic() - started >= 0.3 and [p.action for p in plans if p.stage_id == "alone"] == ["skip"]


# -- 4. what is a run folder; names that make folders ------------------------------------------


def test_a_stray_stage_json_does_not_make_a_run_folder(tmp_path, testplug_registry, write_pipeline):
    path = write_pipeline(TOUCH_PIPELINE)
    runs = tmp_path / "runs"
    folder = runs / "demo"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "stage.json").write_text('{"stage": "draft 2"}')  # the user's own file
    (folder / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="is not an mllm run folder"):
        PipelineRunner(load_pipeline(path, testplug_registry), testplug_registry, runs)
    # even an mllm-shaped stage.json beside the user's files does not make the folder mllm's
    (folder / "notes" / "stage.json").write_text(json.dumps({"fingerprint": "a" * 64, "started": 1.0}))
    with pytest.raises(ConfigError, match="is not an mllm run folder"):
        PipelineRunner(load_pipeline(path, testplug_registry), testplug_registry, runs)
    assert sorted(p.name for p in folder.iterdir()) == ["notes", "thesis.tex"]

    # a run folder written before the .mllm-run marker existed: stage folders only
    PipelineRunner(load_pipeline(path, testplug_registry), testplug_registry, tmp_path / "old").run()
    old = tmp_path / "old" / "demo"
    (old / ".mllm-run").unlink()
    plans = PipelineRunner(load_pipeline(path, testplug_registry), testplug_registry, tmp_path / "old").run()
    assert [p.action for p in plans if p.stage_id == "alone"] == ["skip"]


@pytest.mark.parametrize("override", ["name=demo\n", "stages.alone.id=rep\n"])
def test_ids_and_names_with_a_trailing_newline_are_refused(tmp_path, testplug_registry, write_pipeline, override):
    data = yaml.safe_load(TOUCH_PIPELINE)
    key, _, value = override.partition("=")
    if key == "name":
        data["name"] = value
    else:
        data["stages"][0]["id"] = value
    with pytest.raises(ConfigError, match="must start with a letter"):
        load_pipeline(None, testplug_registry, data=data)
