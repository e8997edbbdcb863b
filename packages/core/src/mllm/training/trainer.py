"""The core trainer: a ``transformers.Trainer`` subclass that hosts an alignment method.

A method (:class:`mllm.interfaces.Method`) supplies ``collate(records)`` and
``loss(model, batch) -> (loss, metrics)``; everything else (gradient accumulation,
mixed precision, DeepSpeed, checkpoint rotation, resume, SIGTERM checkpoints,
``report_to`` integrations) is the library's. We extend it only through overrides that
the Trainer documents for subclassing and through callbacks, never a loop of our own:

- :meth:`MethodTrainer.compute_loss` calls the method and accumulates its metrics;
  :meth:`MethodTrainer.log` adds their averages over the logging window to the
  Trainer's own log entries (the pattern TRL's trainers use);
- the train dataset is a plain list of records; the data collator is the method's
  ``collate`` (so ``remove_unused_columns`` is off);
- length-grouped batches: ``LengthGroupedSampler`` over ``method.lengths(records)``,
  shuffled from the seed and the epoch only (exact example order after a resume);
- a separate learning rate for the projector (LLaVA's ``mm_projector_lr``): its
  parameters get their own optimizer param groups;
- callbacks: :class:`JsonlLogCallback` writes every log entry as a line of
  ``train_log.jsonl``; :class:`StageLoggerCallback` mirrors them to the stage's log;
  :class:`mllm.training.checkpoints.CheckpointMarkerCallback` marks each checkpoint complete
  (then rotates); :class:`mllm.training.checkpoints.StopOnSignal` turns SIGTERM into a checkpoint
  and a clean stop (see :mod:`mllm.training.checkpoints`);
- an image that fails to decode while a batch is collated follows the dataset's
  ``on_bad_row`` policy (:class:`MethodCollator`, :class:`mllm.data.badrows.LateBadRows`);
- the whole run's figures across a resume: each checkpoint carries the loss sums and the
  runtime so far (:data:`mllm.training.checkpoints.RUN_TOTALS`), a resumed run continues
  from them, and a resume from the final checkpoint only loads its weights.

:class:`TrainSettings` is the ``train:`` block of a train stage; it maps onto
``TrainingArguments`` with ``output_dir = <stage_dir>/checkpoints``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from mllm.data.badrows import ImageReadError
from mllm.interfaces import GroupsByLength
from mllm.pipeline.progress import FILE_ONLY, track
from mllm.pipeline.runfolder import TrainingStopped
from mllm.training import checkpoints as _checkpoints
from mllm.training.settings import CHECKPOINTS_SUBDIR, TrainSettings

TRAIN_LOG = "train_log.jsonl"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")




class MethodCollator:
    """The Trainer's ``data_collator``: a list of records -> ``method.collate(records)``.

    With ``bad_rows`` (a :class:`mllm.data.badrows.LateBadRows`), a record whose image fails
    to decode (:class:`mllm.data.badrows.ImageReadError` from the adapter) follows the
    dataset's policy: ``error`` stops with the image and record named, ``skip`` drops the
    record from the batch and lists it in ``data_report.json``. A batch left with no
    record takes the first record of the dataset not known to be bad. The normal path
    costs nothing: records are checked only after a collate failed.
    """

    def __init__(self, method: Any, bad_rows: Any = None, dataset: Sequence[Any] = ()) -> None:
        self.method = method
        self.bad_rows = bad_rows
        self.dataset = dataset

    def __call__(self, records: Sequence[Any]) -> dict[str, Any]:
        records = list(records)
        if self.bad_rows is None:
            return self.method.collate(records)
        records = [r for r in records if not self.bad_rows.is_bad(r)] or self._substitute()
        while True:
            try:
                return self.method.collate(records)
            except ImageReadError as error:
                bad = [r for r in records if error.path in {os.fspath(p) for p in getattr(r, "images", ())}]
                if not bad:
                    raise
                for record in bad:
                    self.bad_rows.reject(record, error)  # raises under on_bad_row: error
                records = [r for r in records if not self.bad_rows.is_bad(r)] or self._substitute()

    def _substitute(self) -> list[Any]:
        for record in self.dataset:
            if not self.bad_rows.is_bad(record):
                return [record]
        from mllm.data.badrows import BadRowError

        raise BadRowError("every training record has an image that cannot be decoded")


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """``LengthGroupedSampler`` whose shuffle depends only on ``seed`` and the epoch (the
    Trainer calls ``set_epoch``), never on the global RNG: a run resumed in a later epoch
    sees the same example order as an uninterrupted one (the base class draws from the
    global RNG, whose state at an epoch start depends on everything run before it)."""

    def __init__(self, batch_size: int, *, lengths: list[int], seed: int = 0) -> None:
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


class MethodTrainer(Trainer):
    """A ``Trainer`` whose loss and batches come from an alignment method.

    Args:
        method: the method (``collate``, ``loss``, optionally ``lengths``).
        model: the module to train (what ``method.setup(adapter)`` returned).
        args: ``TrainingArguments`` (see :meth:`TrainSettings.to_training_arguments`).
        train_dataset: a list of records.
        group_by_length: sample batches of similar ``method.lengths(records)``.
        projector_lr: learning rate of the projector's parameters (LLaVA's
            ``mm_projector_lr``); ``None`` uses ``args.learning_rate`` for everything.
        projector_module: dotted path of the projector in the (unwrapped) model, as the
            adapter's ``module_names()["projector"]`` gives it.
        **kwargs: passed to ``Trainer`` (``callbacks``, ``optimizers``, ...).
    """

    # method losses are per-batch means: the Trainer divides them by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, method: Any, *, model: Any, args: TrainingArguments, train_dataset: Sequence[Any],
                 group_by_length: bool = True, projector_lr: float | None = None,
                 projector_module: str | None = None, bad_rows: Any = None, **kwargs: Any) -> None:
        self.method = method
        self.group_by_length = group_by_length
        self.projector_lr = projector_lr
        self.projector_module = projector_module
        self._metric_sums: dict[str, float] = defaultdict(float)
        self._metric_counts: dict[str, int] = defaultdict(int)
        #: the :data:`~mllm.training.checkpoints.RUN_TOTALS` of the checkpoint this run resumes from
        self.resumed_totals: dict[str, Any] | None = None
        self._unlogged_loss: Any = None
        self._attempt_started = time.time()
        train_dataset = list(train_dataset)
        kwargs.setdefault("data_collator", MethodCollator(method, bad_rows, train_dataset))
        # checkpoints are marked complete after the Trainer wrote them; rotation follows the marker
        kwargs["callbacks"] = [_checkpoints.CheckpointMarkerCallback(), _CarryRunTotals(self),
                               *(kwargs.get("callbacks") or [])]
        super().__init__(model=model, args=args, train_dataset=train_dataset, **kwargs)
        # the method computes its own loss from its own batch keys
        self.model_accepts_loss_kwargs = False
        if projector_lr is not None and projector_module is None:
            raise ValueError("projector_lr needs projector_module (the adapter's module_names()['projector'])")

    # -- checkpoints --------------------------------------------------------------------

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """The Trainer's save, without its rotation: :class:`mllm.training.checkpoints.CheckpointMarkerCallback`
        rotates (by step number, complete checkpoints only) once this one is marked complete."""
        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        totals = self.run_totals()  # every process takes part (the unlogged loss is averaged over them)
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        if self.args.should_save and folder.is_dir():
            _checkpoints.write_run_totals(folder, totals)  # before the marker, which then lists it

    # -- the whole run's figures across a resume -----------------------------------------

    def _maybe_log_save_evaluate(self, tr_loss: Any, *args: Any, **kwargs: Any) -> None:
        self._unlogged_loss = tr_loss  # the loss summed since the last log line, for a checkpoint saved here
        return super()._maybe_log_save_evaluate(tr_loss, *args, **kwargs)

    def run_totals(self) -> dict[str, Any]:
        """What a checkpoint written now carries for the run that resumes from it."""
        unlogged = self._unlogged_loss
        if isinstance(unlogged, torch.Tensor):
            unlogged = unlogged.detach().clone().float()
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(unlogged)
                unlogged /= dist.get_world_size()
            unlogged = unlogged.item()
        before = self.resumed_totals["runtime"] if self.resumed_totals else 0.0
        return {"step": self.state.global_step, "logged_loss_sum": float(getattr(self, "_total_loss_scalar", 0.0)),
                "unlogged_loss": float(unlogged or 0.0),
                "last_logged_step": int(getattr(self, "_globalstep_last_logged", self.state.global_step)),
                "runtime": before + time.time() - self._attempt_started}

    def continue_run_totals(self) -> None:
        """At the start of a resumed ``train()``: continue the loss sums and the logging
        window of the checkpoint, as if the run had never stopped (the Trainer resets them)."""
        self._attempt_started = time.time()
        totals = self.resumed_totals
        if not totals or totals["step"] != self.state.global_step:
            return
        self._total_loss_scalar = float(totals["logged_loss_sum"])
        self._globalstep_last_logged = int(totals["last_logged_step"])
        if isinstance(getattr(self, "_tr_loss", None), torch.Tensor):
            self._tr_loss += float(totals["unlogged_loss"])
        else:  # an older Trainer keeps the running loss in a local variable
            self._total_loss_scalar += float(totals["unlogged_loss"])

    def _whole_run_summary(self, logs: dict[str, float]) -> None:
        """The Trainer's end-of-training entry covers this attempt's steps; make it the whole run's."""
        totals = self.resumed_totals
        runtime_now = float(logs.get("train_runtime", 0.0))
        samples_per_step = (float(logs["train_samples_per_second"]) / float(logs["train_steps_per_second"])
                            if logs.get("train_steps_per_second") else None)
        logs["train_loss"] = getattr(self, "_total_loss_scalar", 0.0) / max(self.state.global_step, 0.001)
        self._speed(logs, float(totals["runtime"]) + runtime_now, samples_per_step)

    def _speed(self, logs: dict[str, float], runtime: float, samples_per_step: float | None) -> None:
        logs["train_runtime"] = round(runtime, 4)
        steps = self.state.global_step
        if samples_per_step is None:
            samples_per_step = (self.args.train_batch_size * self.args.gradient_accumulation_steps
                                * max(self.args.world_size, 1))
        logs["train_samples_per_second"] = round(samples_per_step * steps / max(runtime, 1e-9), 3)
        logs["train_steps_per_second"] = round(steps / max(runtime, 1e-9), 3)

    def finish_from_checkpoint(self, checkpoint: Path) -> None:
        """A resume from the final checkpoint: load its weights and state, log the whole
        run's summary, train nothing (the Trainer would start a step past ``max_steps``)."""
        from transformers.trainer_callback import TrainerState

        self.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
        self._load_from_checkpoint(str(checkpoint))
        totals = self.resumed_totals
        logs: dict[str, float] = {}
        if totals is not None:
            logs["train_loss"] = (float(totals["logged_loss_sum"]) + float(totals["unlogged_loss"])) \
                / max(self.state.global_step, 0.001)
        else:  # a checkpoint without totals: the mean of the logged losses, weighted by their windows
            logs["train_loss"] = _mean_logged_loss(self.state.log_history)
        self._speed(logs, float(totals["runtime"]) if totals else 0.0, None)
        logs["total_flos"] = self.state.total_flos
        super().log({k: logs[k] for k in ("train_runtime", "train_samples_per_second", "train_steps_per_second",
                                          "total_flos", "train_loss")})

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The Trainer's save, with the weights under the model's own parameter names.

        ``save_pretrained`` writes LLaVA weights under the legacy names (transformers'
        conversion mapping) while the Trainer's resume loads them with a plain
        ``load_state_dict``, which would silently load nothing. Checkpoints exist for
        resume, so they keep the names the model has; the stage's final model is saved
        by the adapter as usual."""
        from transformers import PreTrainedModel

        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if not isinstance(model, PreTrainedModel) or "save_pretrained" in vars(model):
            return super()._save(output_dir, state_dict)
        original = model.save_pretrained
        model.save_pretrained = functools.partial(original, save_original_format=False)
        try:
            super()._save(output_dir, state_dict)
        finally:
            del model.save_pretrained

    # -- batches ------------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.group_by_length and isinstance(self.method, GroupsByLength) and dataset is not None \
                and len(dataset) > 0:
            lengths = [int(n) for n in self.method.lengths(dataset)]
            if len(lengths) != len(dataset):
                raise ValueError(f"{type(self.method).__name__}.lengths() gave {len(lengths)} lengths "
                                 f"for {len(dataset)} records")
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                                   lengths=lengths, seed=seed)
        return super()._get_train_sampler(train_dataset)

    # -- loss and metrics ---------------------------------------------------------------

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        loss, metrics = self.method.loss(model, inputs)
        if model.training:
            for key, value in metrics.items():
                self._metric_sums[key] += float(value)
                self._metric_counts[key] += 1
        return (loss, metrics) if return_outputs else loss

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        # The base class walks every parameter on every step to count them; count once.
        if not hasattr(self, "_n_params_no_embed"):
            counter = getattr(self.model, "num_parameters", None)
            self._n_params_no_embed = counter(exclude_embeddings=True) if counter else 0
        ids = inputs.get("input_ids") if isinstance(inputs, dict) else None
        return 6 * ids.numel() * self._n_params_no_embed if ids is not None else 0

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the method's metrics, averaged since the last log, to training log entries."""
        if "loss" in logs and self._metric_counts:
            for key, total in self._metric_sums.items():
                logs.setdefault(key, total / max(self._metric_counts[key], 1))
            self._metric_sums.clear()
            self._metric_counts.clear()
        if "train_loss" in logs and self.resumed_totals is not None:
            self._whole_run_summary(logs)
        super().log(logs, start_time)

    # -- optimizer ----------------------------------------------------------------------

    def _projector_parameter_ids(self, model: Any) -> set[int]:
        """Parameters under ``projector_module``: a path in ``model`` itself or, for a peft
        model, in the model it wraps."""
        candidates = [model]
        get_base = getattr(model, "get_base_model", None)
        if callable(get_base):
            candidates.append(get_base())
        for candidate in candidates:
            try:
                module = candidate.get_submodule(self.projector_module)
            except AttributeError:
                continue
            return {id(p) for p in module.parameters()}
        raise ValueError(f"projector module {self.projector_module!r} not found in {type(model).__name__}")

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, with the projector in param groups of its own lr."""
        if self.projector_lr is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        projector_ids = self._projector_parameter_ids(opt_model)
        groups: dict[tuple[bool, bool], list] = {(d, p): [] for d in (True, False) for p in (False, True)}
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                groups[(name in decay, id(param) in projector_ids)].append(param)
        param_groups = []
        for (has_decay, is_projector), params in groups.items():
            if not params:
                continue
            group: dict[str, Any] = {"params": params, "weight_decay": self.args.weight_decay if has_decay else 0.0}
            if is_projector:
                group["lr"] = self.projector_lr
            param_groups.append(group)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer


# -- callbacks ------------------------------------------------------------------------


class _CarryRunTotals(TrainerCallback):
    """Calls :meth:`MethodTrainer.continue_run_totals` once the Trainer has reset its loss
    sums at the start of ``train()``."""

    def __init__(self, trainer: MethodTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.continue_run_totals()


def _mean_logged_loss(log_history: Sequence[dict[str, Any]]) -> float:
    total, steps, previous = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            window = int(entry["step"]) - previous
            total += float(entry["loss"]) * window
            steps += window
            previous = int(entry["step"])
    return total / max(steps, 1)


class JsonlLogCallback(TrainerCallback):
    """Appends every log entry (``{"step": ..., "epoch": ..., <values>}``) to a JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or not state.is_world_process_zero:
            return
        entry = {"step": state.global_step, **{k: _plain(v) for k, v in logs.items()}}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")


class StageLoggerCallback(TrainerCallback):
    """Mirrors log entries to a ``logging.Logger`` (the stage's ``log.txt``)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            values = " ".join(f"{k}={_short(v)}" for k, v in logs.items())
            # a step entry's loss is on the progress display: the console leaves it to log.txt
            shown = {FILE_ONLY: True} if "loss" in logs else {}
            self.logger.info("step %d/%d: %s", state.global_step, state.max_steps, values, extra=shown)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.logger.info("step %d: checkpoint saved", state.global_step)


class StepProgressCallback(TrainerCallback):
    """Shows training progress (:func:`mllm.pipeline.progress.track`): steps, elapsed, ETA,
    it/s and the latest loss, on the first process only."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tracker: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.tracker = track(self.label, state.max_steps)
            self.tracker.begin(state.global_step)  # a resumed run starts past 0

    def on_step_end(self, args, state, control, **kwargs):
        if self.tracker is not None:
            self.tracker.update(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.tracker is not None and logs and "loss" in logs:
            self.tracker.update(state.global_step, loss=_plain(logs["loss"]))

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# -- checkpoints and logs -------------------------------------------------------------


def last_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete checkpoint folder (marked by :mod:`mllm.training.checkpoints`), if any."""
    return _checkpoints.last_checkpoint(checkpoints_dir)


def truncate_log(path: Path, up_to_step: int) -> None:
    """Drop log lines after ``up_to_step`` (entries a resumed run will log again), and the
    end-of-training summary of an interrupted run."""
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            if entry.get("step", 0) <= up_to_step and "train_runtime" not in entry:
                kept.append(line)
        except (ValueError, AttributeError):
            continue
    path.write_text("".join(f"{line}\n" for line in kept))


def last_logged_values(log_history: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each key's last logged value (training entries and the final summary)."""
    values: dict[str, float] = {}
    for entry in log_history:
        for key, value in entry.items():
            value = _plain(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "total_flos":
                values[key] = value
    return values


def train_method(method: Any, model: Any, records: Sequence[Any], settings: TrainSettings, stage_dir: Path, *,
                 seed: int = 0, resume: bool = False, projector_lr: float | None = None,
                 projector_module: str | None = None, callbacks: Sequence[TrainerCallback] = (),
                 logger: logging.Logger | None = None,
                 args_overrides: dict[str, Any] | None = None,
                 bad_rows: Any = None) -> tuple[MethodTrainer, dict[str, float]]:
    """Train ``model`` with ``method`` on ``records``; logs go to ``<stage_dir>/train_log.jsonl``.

    With ``resume`` and a complete checkpoint in ``<stage_dir>/checkpoints``, training
    continues from it (optimizer, scheduler, RNG and data position included), after
    every pickle-based file in it passed :func:`mllm.training.checkpoints.verify_checkpoint`.
    ``args_overrides`` are extra ``TrainingArguments`` (e.g. ``train_sampling_strategy``).
    ``bad_rows``: a :class:`mllm.data.badrows.LateBadRows` for images that fail to decode.
    SIGTERM saves a checkpoint at the next step boundary, then raises
    :class:`mllm.pipeline.runfolder.TrainingStopped`.
    Returns the trainer and the last logged value of every training metric.
    """
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    overrides = dict(args_overrides or {})
    # our progress display (StepProgressCallback) replaces the Trainer's tqdm bar, which would
    # also print every log entry a second time
    overrides.setdefault("disable_tqdm", True)
    args = settings.to_training_arguments(stage_dir, seed=seed, **overrides)
    log_path = stage_dir / TRAIN_LOG
    checkpoint = last_checkpoint(stage_dir / CHECKPOINTS_SUBDIR) if resume else None
    first_process = args.process_index == 0  # several processes (torchrun): only the first writes the log
    if checkpoint is not None:
        _checkpoints.verify_checkpoint(checkpoint)  # before the Trainer unpickles anything in it
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        if first_process:
            truncate_log(log_path, int(state.get("global_step", 0)))
        if logger:
            logger.info("resuming from %s", checkpoint)
    elif log_path.exists() and first_process:
        log_path.unlink()  # a fresh start logs from step 0 again
    all_callbacks: list[TrainerCallback] = [JsonlLogCallback(log_path)]
    if logger is not None:
        all_callbacks.append(StageLoggerCallback(logger))
    all_callbacks.extend(callbacks)
    progress = StepProgressCallback(stage_dir.name)
    all_callbacks.append(progress)
    stop = _checkpoints.StopOnSignal(logger)
    all_callbacks.append(stop)
    trainer = MethodTrainer(method, model=model, args=args, train_dataset=records,
                            group_by_length=settings.group_by_length, projector_lr=projector_lr,
                            projector_module=projector_module, callbacks=all_callbacks, bad_rows=bad_rows)
    if logger is not None:
        trainer.remove_callback(PrinterCallback)  # it would print every log entry a second time
    if checkpoint is not None:
        trainer.resumed_totals = _checkpoints.read_run_totals(checkpoint)
    if checkpoint is not None and _is_final(state) and not (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled):
        if logger:
            logger.info("%s is the last step (%d of %d): writing the model, training no further",
                        checkpoint.name, state["global_step"], state["max_steps"])
        trainer.finish_from_checkpoint(checkpoint)
        return trainer, last_logged_values(trainer.state.log_history)
    with stop:
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
        finally:
            progress.close()  # a failed step must not leave a live bar behind
    if stop.stopped_at is not None:
        saved = last_checkpoint(stage_dir / CHECKPOINTS_SUBDIR)
        raise TrainingStopped(
            f"training stopped by {signal_name(stop.requested)} after step {stop.stopped_at}; complete checkpoint: "
            f"{saved}. Run the same command again to resume from it.")
    return trainer, last_logged_values(trainer.state.log_history)


def _is_final(state: dict[str, Any]) -> bool:
    """The checkpoint's ``trainer_state.json`` says training had reached ``max_steps``."""
    try:
        return int(state["max_steps"]) > 0 and int(state["global_step"]) >= int(state["max_steps"])
    except (KeyError, TypeError, ValueError):
        return False


def signal_name(signum: int | None) -> str:
    import signal

    try:
        return signal.Signals(signum).name if signum is not None else "a signal"
    except ValueError:
        return f"signal {signum}"


def save_trained(trainer: Trainer, adapter: Any, path: Path) -> None:
    """Save the trained model through ``adapter.save``: one ordinary ``save_pretrained`` folder.

    Every process calls it. Under DeepSpeed ZeRO-3 each process holds a shard of every
    parameter: they are gathered (all processes take part) and the first process writes
    the full weights, so a single-process stage loads the folder like any other; the
    presets also set ``stage3_gather_16bit_weights_on_model_save`` for the Trainer's own
    checkpoints. With DDP or ZeRO-2 every process holds the full weights and the first
    one writes them. The other processes wait until the folder is complete.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled

    adapter.model = trainer.model
    if is_deepspeed_zero3_enabled() and trainer.is_deepspeed_enabled:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(trainer.model.parameters()), modifier_rank=None):
            if trainer.is_world_process_zero():
                adapter.save(path)
    elif trainer.is_world_process_zero():
        adapter.save(path)
    if trainer.args.world_size > 1:
        trainer.accelerator.wait_for_everyone()
