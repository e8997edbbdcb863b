"""Progress: a bar with an ETA under a terminal, a line with elapsed time and ETA at least every
30 s otherwise, each log line once, the libraries' noise filtered (``--verbose`` keeps it), and
log.txt keeping every entry."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mllm.pipeline import progress

SCRIPT = Path(sys.prefix) / "bin" / "mllm"
NOISE = ("past_key_values", "cache_params", "Setting accelerator to CPU", "Loading weights", "Writing model shards")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def lines_mode():
    progress.configure("lines", heartbeat_s=0.2)
    yield
    progress.configure("off")


def test_a_line_says_where_the_loop_is_elapsed_eta_and_loss(lines_mode, caplog):
    caplog.set_level(logging.INFO, logger="mllm.progress")
    with progress.track("sft", 20) as tracker:
        for step in range(1, 21):
            tracker.update(step, loss=4.5 - step / 10)
    lines = [r.getMessage() for r in caplog.records if r.name == "mllm.progress"]
    assert len(lines) == 10  # a tenth of the loop each, the last at 20/20
    assert re.fullmatch(r"sft: step 2/20 \(10%\), elapsed \d+:\d\d, ETA \d+:\d\d, .+ step/s, loss 4\.3", lines[0])
    assert lines[-1].startswith("sft: step 20/20 (100%)") and "ETA 0:00" in lines[-1]


def test_a_slow_step_still_gets_a_line_every_heartbeat(lines_mode, caplog):
    caplog.set_level(logging.INFO, logger="mllm.progress")
    with progress.track("dpo", 100) as tracker:
        tracker.update(1)
        time.sleep(0.7)  # one long step: the timer says where it is
    beats = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dpo: step 1/100")]
    assert len(beats) >= 2, beats


def test_off_shows_nothing(caplog):
    caplog.set_level(logging.INFO, logger="mllm.progress")
    with progress.track("quiet", 3) as tracker:
        for step in (1, 2, 3):
            tracker.update(step)
    assert not [r for r in caplog.records if r.name == "mllm.progress"]


def test_file_only_records_stay_off_the_console():
    kept = logging.makeLogRecord({"msg": "shown"})
    dropped = logging.makeLogRecord({"msg": "step 2/6: loss=4.5", progress.FILE_ONLY: True})
    assert progress.HideFileOnly().filter(kept) and not progress.HideFileOnly().filter(dropped)


# -- `mllm run` on a small training pipeline ----------------------------------------------------------------


@pytest.fixture
def small_training(tmp_path):
    if importlib.util.find_spec("mllm_align") is None:
        pytest.skip("the sft method is mllm-align's")
    from mllm.data.recordio import write_records
    from mllm.testing import TINY_LLAVA
    from mllm.testing.samples import example_records

    write_records(tmp_path / "train.jsonl", example_records("conversation", tmp_path / "images", count=8))
    model = "{" + ", ".join(f"{k}: {v}" for k, v in {"name": "llava", **TINY_LLAVA}.items()) + "}"
    (tmp_path / "small.yaml").write_text(f"""
name: progress-demo
model: {model}
stages:
  - id: sft
    kind: train
    method: {{name: sft}}
    data: {{name: records-jsonl, path: {tmp_path / 'train.jsonl'}}}
    train: {{max_steps: 6, batch_size: 2, logging_steps: 2, save_steps: 100, warmup_ratio: 0.0}}
  - id: answers
    kind: generate
    from: sft
    data: {{name: records-jsonl, path: {tmp_path / 'train.jsonl'}}}
    max_new_tokens: 3
    batch_size: 2
""")
    return tmp_path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLLM_DEBUG", "MLLM_RUNS_DIR", "PYTHONWARNINGS",
                                                           "HF_HUB_DISABLE_PROGRESS_BARS")}
    return {**env, "COLUMNS": "160"}


def _screen_lines(raw: str) -> list[str]:
    """What stays on the screen: each carriage-return-redrawn line counts once, as last drawn."""
    text = ANSI.sub("", raw)
    return [line.split("\r")[-1].strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a pseudo-terminal")
def test_under_a_terminal_a_bar_with_eta_no_line_twice_no_noise(small_training):
    command = f"{SCRIPT} run small.yaml --runs-dir runs"
    result = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=small_training, env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    raw = result.stdout
    assert "ETA" in raw and re.search(r"6/6", raw) and "step/s" in raw and "loss" in raw
    lines = [line for line in _screen_lines(raw) if not re.match(r"^(sft|answers) ", line) or "):" in line]
    assert len(lines) == len(set(lines)), [line for line in lines if lines.count(line) > 1]
    assert "{'loss'" not in raw  # the Trainer's own printout of each log entry
    for noise in NOISE:
        assert noise not in raw, noise
    log = (small_training / "runs" / "progress-demo" / "sft" / "log.txt").read_text()
    assert "step 2/6: loss=" in log and "step 6/6: loss=" in log  # the full record stays in log.txt


@pytest.mark.slow
def test_piped_a_line_with_elapsed_and_eta(small_training):
    result = subprocess.run([str(SCRIPT), "run", "small.yaml", "--runs-dir", "runs"], cwd=small_training, env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert re.search(r"sft: step 6/6 \(100%\), elapsed \d+:\d\d, ETA 0:00", out), out
    assert re.search(r"answers: answer 8/8 \(100%\), elapsed \d+:\d\d, ETA 0:00", out), out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), [line for line in lines if lines.count(line) > 1]
    for noise in NOISE:
        assert noise not in out, noise
    second = subprocess.run([str(SCRIPT), "run", "small.yaml", "--runs-dir", "runs"], cwd=small_training,
                            env=_env(), capture_output=True, text=True, timeout=600)
    assert "sft (train): skipped" in second.stdout and "done:" in second.stdout
