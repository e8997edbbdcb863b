"""Fault injection for the reliability tests: runs the ``mllm`` command line unchanged,
with one of these armed by environment variables (test code only, never shipped):

- ``MLLM_TEST_KILL=<stage>:<step>``: SIGKILL this process at the end of that optimizer
  step of that train stage (after the step, before its log line and checkpoint);
- ``MLLM_TEST_TERM=<stage>:<step>``: SIGTERM this process when that step begins, and
  again while the checkpoint it causes is being written;
- ``MLLM_TEST_HOLD=<stage>:<step>:<file>``: at the end of that step write ``<file>`` (this
  process's pid) and wait until ``<file>.go`` exists (a run held in the middle, for the
  lock tests);
- ``MLLM_TEST_ORDER=<folder>``: append the record ids of every training batch to
  ``<folder>/<stage>.jsonl`` (the example order).

Usage: ``python reliability_inject.py run pipeline.yaml --runs-dir ...`` (the ``mllm`` arguments).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

import mllm.training.trainer as training  # noqa: E402
from transformers import TrainerCallback  # noqa: E402


def _armed(name: str) -> tuple[str, int] | None:
    value = os.environ.get(name)
    if not value:
        return None
    stage, step = value.split(":")
    return stage, int(step)


def _stage_of(args) -> str:
    return Path(args.output_dir).parent.name


class Inject(TrainerCallback):
    def __init__(self) -> None:
        self.kill = _armed("MLLM_TEST_KILL")
        self.term = _armed("MLLM_TEST_TERM")
        hold = os.environ.get("MLLM_TEST_HOLD")
        self.hold = (hold.split(":", 1)[0], int(hold.split(":")[1]), Path(hold.split(":", 2)[2])) if hold else None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.term and (_stage_of(args), state.global_step + 1) == self.term:
            os.environ["MLLM_TEST_TERM_AGAIN"] = "1"
            os.kill(os.getpid(), signal.SIGTERM)

    def on_step_end(self, args, state, control, **kwargs):
        if self.kill and (_stage_of(args), state.global_step) == self.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.hold and (_stage_of(args), state.global_step) == self.hold[:2]:
            flag = self.hold[2]
            flag.write_text(str(os.getpid()))
            deadline = time.monotonic() + 300
            while not flag.with_name(flag.name + ".go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)


_train_method = training.train_method


def train_method(*args, callbacks=(), **kwargs):
    return _train_method(*args, callbacks=[*callbacks, Inject()], **kwargs)


training.train_method = train_method

_save_optimizer = training.MethodTrainer._save_optimizer_and_scheduler


def _save_optimizer_and_scheduler(self, output_dir):
    if os.environ.pop("MLLM_TEST_TERM_AGAIN", None):  # a second SIGTERM in the middle of the save
        os.kill(os.getpid(), signal.SIGTERM)
    return _save_optimizer(self, output_dir)


training.MethodTrainer._save_optimizer_and_scheduler = _save_optimizer_and_scheduler

_collate = training.MethodCollator.__call__


def _recording_collate(self, records):
    folder = os.environ.get("MLLM_TEST_ORDER")
    if folder:
        with open(Path(folder) / f"{type(self.method).__name__}.jsonl", "a") as handle:
            handle.write(json.dumps([str(r.id) for r in records]) + "\n")
    return _collate(self, records)


training.MethodCollator.__call__ = _recording_collate

if __name__ == "__main__":
    from mllm.cli.main import main

    sys.exit(main(prog_name="mllm"))
