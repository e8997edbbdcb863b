"""Resume at the very end, and the whole run's figures after a resume (docs/reliability.md,
round two, items 1 and 2), on the tiny LLaVA in-process.

A run that dies after its last checkpoint (a full disk while the final model is saved,
simulated by raising ``OSError(ENOSPC)`` at that write) and is re-run must only write
the model: no step past ``max_steps``, the uninterrupted weights. A run resumed from
any checkpoint reports the whole run's ``train_loss``, not the resumed steps' alone."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("mllm_align")

import mllm.training.trainer as training  # noqa: E402
from mllm.pipeline.config import load_pipeline  # noqa: E402
from mllm.pipeline.runfolder import RunFolderError  # noqa: E402
from mllm.pipeline.runner import PipelineRunner  # noqa: E402
from mllm.plugins.registry import Registry  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: the shared helpers of test_reliability
from test_reliability import TRAIN, assert_same_weights, losses, read_jsonl, two_stage_pipeline, write_data_files  # noqa: E402


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    return write_data_files(tmp_path_factory.mktemp("data"))


def sft_only(data: Path, name: str, **train) -> dict:
    pipeline = two_stage_pipeline(data, name)
    pipeline["stages"] = pipeline["stages"][:1]
    pipeline["stages"][0]["train"] = {**TRAIN, **train}
    return pipeline


def run(data: dict, runs: Path) -> list:
    registry = Registry()
    return PipelineRunner(load_pipeline(None, registry, data=data), registry, runs).run()


def metrics(stage: Path) -> dict:
    return json.loads((stage / "metrics.json").read_text())


def steps_logged(stage: Path) -> list[int]:
    return [e["step"] for e in read_jsonl(stage / "train_log.jsonl") if "loss" in e]


def disk_full_at_the_final_save(monkeypatch) -> None:
    """The final model save fails as on a full disk (after the last checkpoint was written)."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(training, "save_trained", full)


@pytest.mark.parametrize("train", [
    pytest.param({"epochs": 2}, id="epochs"),  # 6 steps, the last checkpoint: step 6
    pytest.param({"epochs": 2, "max_steps": 4}, id="max_steps-mid-epoch"),  # 3 steps an epoch: ends mid-epoch 2
])
def test_a_resume_from_the_final_checkpoint_only_writes_the_model(data_files, tmp_path, monkeypatch, train):
    data = sft_only(data_files, "final", **train)
    run(data, tmp_path / "straight")
    straight = tmp_path / "straight" / "final" / "sft"
    last = max(steps_logged(straight))

    with monkeypatch.context() as patch:
        disk_full_at_the_final_save(patch)
        with pytest.raises(RunFolderError, match=r"stage 'sft': cannot write .*No space left on device; free some space"):
            run(data, tmp_path / "cut")
    stage = tmp_path / "cut" / "final" / "sft"
    assert (stage / "checkpoints" / f"checkpoint-{last}").is_dir() and not (stage / "model").exists()

    plans = run(data, tmp_path / "cut")
    assert [p.action for p in plans if p.stage_id == "sft"] == ["resume"]
    log = (stage / "log.txt").read_text()
    assert f"step {last + 1}/" not in log and f"checkpoint-{last}" in log
    assert steps_logged(stage) == steps_logged(straight) and max(steps_logged(stage)) == last
    assert losses(stage) == losses(straight)
    assert_same_weights(stage, straight)
    assert metrics(stage)["train_loss"] == metrics(straight)["train_loss"]
    assert metrics(stage)["epoch"] == metrics(straight)["epoch"]


@pytest.mark.parametrize("logging_steps", [1, 3])  # 3: the checkpoint at step 2 falls inside a logging window
def test_metrics_after_a_resume_cover_the_whole_run(data_files, tmp_path, monkeypatch, logging_steps):
    """Training dies after step 3 (checkpoint at step 2); the resumed run's metrics.json
    and its train_log.jsonl are those of the uninterrupted run."""
    from transformers import TrainerCallback

    data = sft_only(data_files, "whole", epochs=2, logging_steps=logging_steps)
    run(data, tmp_path / "straight")
    straight = tmp_path / "straight" / "whole" / "sft"

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt("killed after step 3")

    real = training.train_method
    with monkeypatch.context() as patch:
        patch.setattr(training, "train_method",
                      lambda *a, callbacks=(), **k: real(*a, callbacks=[*callbacks, Crash()], **k))
        with pytest.raises(KeyboardInterrupt):
            run(data, tmp_path / "killed")
    run(data, tmp_path / "killed")
    stage = tmp_path / "killed" / "whole" / "sft"
    assert "resuming from" in (stage / "log.txt").read_text()
    assert losses(stage) == losses(straight)
    resumed, whole = metrics(stage), metrics(straight)
    assert resumed["train_loss"] == whole["train_loss"]
    assert resumed["train_runtime"] > 0
    summary = [e for e in read_jsonl(stage / "train_log.jsonl") if "train_loss" in e]
    assert len(summary) == 1 and summary[0]["train_loss"] == whole["train_loss"]
