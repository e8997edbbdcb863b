"""Checkpoint safety for the core trainer: completion markers, rotation, safe loading, SIGTERM.

All of it extends ``transformers.Trainer`` through callbacks (and one small override in
:class:`mllm.training.trainer.MethodTrainer`); the Trainer still writes, rotates and resumes
checkpoints.

* **Complete or ignored.** A ``checkpoint-<step>/`` folder counts only once
  :class:`CheckpointMarkerCallback` (``on_save``, after the Trainer wrote every file of
  it) has fsynced its files and written ``mllm_checkpoint.json`` atomically (a
  temporary file, then ``os.replace``), listing each file and its size. A folder
  without the marker, or whose files no longer match it, is a partial save (a crash
  or kill in the middle of it) and is never resumed from (:func:`last_checkpoint`).
* **Rotation** (``save_total_limit``) runs after the marker is written, not inside the
  Trainer's save: checkpoints are sorted by step number (never by name or mtime), the
  newest complete one is never deleted, partial folders older than it are removed.
* **Safe resume.** Before a checkpoint is handed to the Trainer, every pickle-based
  file in it (``optimizer.pt``, ``scheduler.pt``, ``rng_state*.pth``, ``scaler.pt``,
  ``*.bin``, DeepSpeed's ``global_step*/*.pt``) is opened with
  ``torch.load(weights_only=True)`` (numpy arrays allowed, as the Trainer allows them
  for RNG state): a file that needs anything else (a planted code-running pickle) is
  refused with :class:`UnsafeCheckpointError` naming it, and its payload never runs.
  ``training_args.bin`` is skipped: nothing loads it on resume.
* **Whole-run figures.** Each checkpoint also holds ``mllm_run_totals.json`` (the loss
  sums, the last logged step and the runtime so far): a resumed run starts its loss
  accounting from them, so its log lines, ``train_loss`` and ``train_runtime`` are the
  whole run's, and a resume from the final checkpoint trains nothing (see
  :func:`mllm.training.trainer.train_method`).
* **SIGTERM** (preemption): :class:`StopOnSignal` installs a handler while training
  runs; the handler only sets a flag. At the next step boundary the callback asks the
  Trainer to save (``control.should_save``) and stop (``control.should_training_stop``),
  so the checkpoint is a normal, complete one; a second SIGTERM while it is being
  written is only logged. :func:`mllm.training.trainer.train_method` then raises
  :class:`TrainingStopped`, the stage is not marked complete, and ``mllm run`` exits
  with status 143 and a message saying to run the same command again to resume.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from mllm.pipeline.runfolder import UnsafeCheckpointError, atomic_write_text

CHECKPOINT_MARKER = "mllm_checkpoint.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle")
NEVER_LOADED = {"training_args.bin"}  # written by the Trainer for reference, never read back

logger = logging.getLogger("mllm.training.checkpoints")




# -- completion markers ---------------------------------------------------------------


def checkpoint_step(path: Path) -> int | None:
    match = CHECKPOINT_PATTERN.match(Path(path).name)
    return int(match.group(1)) if match else None


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKPOINT_MARKER
                  and not p.name.startswith(f".{CHECKPOINT_MARKER}"))


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def mark_complete(folder: Path, step: int) -> None:
    """Flush every file of ``folder`` to disk, then write its marker atomically."""
    folder = Path(folder)
    files = _files(folder)
    for file in files:
        _fsync(file)
    listing = {os.fspath(f.relative_to(folder)): f.stat().st_size for f in files}
    atomic_write_text(folder / CHECKPOINT_MARKER,
                      json.dumps({"step": step, "files": listing, "written": time.time()}, indent=1))
    _fsync(folder)


def is_complete(folder: Path) -> bool:
    """The marker is there, names this step, and every file it lists has its recorded size."""
    folder = Path(folder)
    try:
        marker = json.loads((folder / CHECKPOINT_MARKER).read_text())
        if marker["step"] != checkpoint_step(folder):
            return False
        for name, size in marker["files"].items():
            if (folder / name).stat().st_size != size:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def checkpoints(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoint-<step>`` folder, by step number."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for child in checkpoints_dir.iterdir():
        step = checkpoint_step(child)
        if step is not None and child.is_dir() and not child.is_symlink():
            found.append((step, child))
    return sorted(found)


def last_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, if any (partial saves are ignored)."""
    complete = [folder for _, folder in checkpoints(checkpoints_dir) if is_complete(folder)]
    return complete[-1] if complete else None


def rotate_checkpoints(checkpoints_dir: Path, save_total_limit: int | None) -> list[Path]:
    """Keep the ``save_total_limit`` newest complete checkpoints (by step number) and
    remove partial ones older than the newest complete one; returns what was removed.

    The newest complete checkpoint is never removed; partial folders newer than it
    (left by an earlier, interrupted attempt) are left alone: the run overwrites them."""
    found = checkpoints(checkpoints_dir)
    complete = [folder for _, folder in found if is_complete(folder)]
    if not complete:
        return []
    newest = complete[-1]
    newest_step = checkpoint_step(newest)
    doomed = [folder for step, folder in found if folder not in complete and step < newest_step]
    if save_total_limit is not None and save_total_limit > 0:
        doomed += complete[:-max(save_total_limit, 1)]
    removed = []
    for folder in doomed:
        if folder == newest or folder.parent != Path(checkpoints_dir) or folder.is_symlink():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


class CheckpointMarkerCallback(TrainerCallback):
    """Marks each checkpoint complete once the Trainer has written it, then rotates."""

    def on_save(self, args, state, control, **kwargs):
        _barrier()  # every process has written its part of the checkpoint
        if state.is_world_process_zero and args.should_save:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                mark_complete(folder, state.global_step)
                rotate_checkpoints(Path(args.output_dir), args.save_total_limit)
        _barrier()
        return control


def _barrier() -> None:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# -- the whole run's figures across a resume ---------------------------------------------

RUN_TOTALS = "mllm_run_totals.json"


def write_run_totals(folder: Path, totals: dict[str, Any]) -> None:
    """``<checkpoint>/mllm_run_totals.json``: what a resumed run needs to report the whole run.

    Keys: ``step``, ``logged_loss_sum`` (the Trainer's sum of logged losses),
    ``unlogged_loss`` (the loss summed since the last log line), ``last_logged_step``
    and ``runtime`` (seconds trained so far, over every attempt). Written before the
    checkpoint's completion marker, so the marker lists it."""
    atomic_write_text(Path(folder) / RUN_TOTALS, json.dumps(totals, indent=1))


def read_run_totals(folder: Path) -> dict[str, Any] | None:
    """The totals of a checkpoint, or ``None`` (a checkpoint written before they existed)."""
    try:
        totals = json.loads((Path(folder) / RUN_TOTALS).read_text())
    except (OSError, ValueError):
        return None
    keys = ("step", "logged_loss_sum", "unlogged_loss", "last_logged_step", "runtime")
    if not isinstance(totals, dict) or any(not isinstance(totals.get(k), (int, float)) for k in keys):
        return None
    return totals


# -- safe loading ---------------------------------------------------------------------


def _safe_load(path: Path) -> None:
    from mllm.models.pickles import load_weights_only

    load_weights_only(path)


def verify_checkpoint(folder: Path) -> list[Path]:
    """Open every pickle-based file of a checkpoint with ``torch.load(weights_only=True)``.

    Raises :class:`UnsafeCheckpointError` naming the first file that needs more (a
    pickle that would import or call something) or cannot be read; nothing in it runs.
    Returns the files checked."""
    checked = []
    for file in _files(Path(folder)):
        if file.suffix not in PICKLE_SUFFIXES or file.name in NEVER_LOADED:
            continue
        try:
            _safe_load(file)
        except Exception as error:  # noqa: BLE001 - any failure means: do not hand it to the Trainer
            from mllm.models.pickles import refusal_reason

            # torch's own text is not echoed: it suggests weights_only=False, which runs the payload
            raise UnsafeCheckpointError(
                f"refusing to resume from {folder}: {file.name} does not load with torch.load(weights_only=True) "
                f"({refusal_reason(error)}). It may hold a planted pickle that runs code. Delete "
                f"{folder} to resume from an earlier checkpoint (or the start), if you trust no file in it."
            ) from None
        checked.append(file)
    return checked


# -- SIGTERM --------------------------------------------------------------------------


class StopOnSignal(TrainerCallback):
    """Turns SIGTERM into a checkpoint at the next step boundary and a clean stop.

    Use as a context manager around ``trainer.train()`` (the handler is installed only
    there, and only from the main thread); :attr:`stopped_at` is the step it stopped at.
    """

    def __init__(self, log: logging.Logger | None = None, signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
        self.log = log or logger
        self.signals = signals
        self.requested: int | None = None
        self.stopped_at: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            self.log.warning("%s again: already stopping; the checkpoint is being saved, not interrupted", name)
            return
        self.requested = signum
        self.log.warning("%s received: saving a checkpoint at the end of this step, then stopping", name)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _requested_anywhere(self) -> bool:
        flag = self.requested is not None
        try:
            import torch
            import torch.distributed as dist
        except ImportError:  # pragma: no cover
            return flag
        if dist.is_available() and dist.is_initialized():  # every process stops at the same step
            tensor = torch.tensor([1 if flag else 0])
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
            flag = bool(tensor.item())
            if flag and self.requested is None:
                self.requested = signal.SIGTERM
        return flag

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopped_at is None and self._requested_anywhere():
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control
