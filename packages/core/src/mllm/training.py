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
- length-grouped batches: ``LengthGroupedSampler`` over ``method.lengths(records)``;
- a separate learning rate for the projector (LLaVA's ``mm_projector_lr``): its
  parameters get their own optimizer param groups;
- callbacks: :class:`JsonlLogCallback` writes every log entry as a line of
  ``train_log.jsonl``; :class:`StageLoggerCallback` mirrors them to the stage's log.

:class:`TrainSettings` is the ``train:`` block of a train stage; it maps onto
``TrainingArguments`` with ``output_dir = <stage_dir>/checkpoints``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from mllm.trainsettings import CHECKPOINTS_SUBDIR, TrainSettings

TRAIN_LOG = "train_log.jsonl"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")




class MethodCollator:
    """The Trainer's ``data_collator``: a list of records -> ``method.collate(records)``."""

    def __init__(self, method: Any) -> None:
        self.method = method

    def __call__(self, records: Sequence[Any]) -> dict[str, Any]:
        return self.method.collate(list(records))


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
                 projector_module: str | None = None, **kwargs: Any) -> None:
        self.method = method
        self.group_by_length = group_by_length
        self.projector_lr = projector_lr
        self.projector_module = projector_module
        self._metric_sums: dict[str, float] = defaultdict(float)
        self._metric_counts: dict[str, int] = defaultdict(int)
        kwargs.setdefault("data_collator", MethodCollator(method))
        super().__init__(model=model, args=args, train_dataset=list(train_dataset), **kwargs)
        # the method computes its own loss from its own batch keys
        self.model_accepts_loss_kwargs = False
        if projector_lr is not None and projector_module is None:
            raise ValueError("projector_lr needs projector_module (the adapter's module_names()['projector'])")

    # -- batches ------------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths_fn: Callable | None = getattr(self.method, "lengths", None)
        if self.group_by_length and lengths_fn is not None and dataset is not None and len(dataset) > 0:
            lengths = [int(n) for n in lengths_fn(dataset)]
            if len(lengths) != len(dataset):
                raise ValueError(f"{type(self.method).__name__}.lengths() gave {len(lengths)} lengths "
                                 f"for {len(dataset)} records")
            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        lengths=lengths)
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
            self.logger.info("step %d/%d: %s", state.global_step, state.max_steps, values)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.logger.info("step %d: checkpoint saved", state.global_step)


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
    """The newest complete checkpoint folder (one holding ``trainer_state.json``), if any."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return None
    found = []
    for child in checkpoints_dir.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir() and (child / "trainer_state.json").is_file():
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None


def truncate_log(path: Path, up_to_step: int) -> None:
    """Drop log lines after ``up_to_step`` (entries a resumed run will log again)."""
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= up_to_step:
                kept.append(line)
        except ValueError:
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
                 args_overrides: dict[str, Any] | None = None) -> tuple[MethodTrainer, dict[str, float]]:
    """Train ``model`` with ``method`` on ``records``; logs go to ``<stage_dir>/train_log.jsonl``.

    With ``resume`` and a complete checkpoint in ``<stage_dir>/checkpoints``, training
    continues from it (optimizer, scheduler, RNG and data position included).
    ``args_overrides`` are extra ``TrainingArguments`` (e.g. ``train_sampling_strategy``).
    Returns the trainer and the last logged value of every training metric.
    """
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    overrides = dict(args_overrides or {})
    # plain log lines (our StageLoggerCallback) instead of a progress bar when not on a terminal
    overrides.setdefault("disable_tqdm", not sys.stderr.isatty())
    args = settings.to_training_arguments(stage_dir, seed=seed, **overrides)
    log_path = stage_dir / TRAIN_LOG
    checkpoint = last_checkpoint(stage_dir / CHECKPOINTS_SUBDIR) if resume else None
    if checkpoint is not None:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        truncate_log(log_path, int(state.get("global_step", 0)))
        if logger:
            logger.info("resuming from %s", checkpoint)
    elif log_path.exists():
        log_path.unlink()  # a fresh start logs from step 0 again
    all_callbacks: list[TrainerCallback] = [JsonlLogCallback(log_path)]
    if logger is not None:
        all_callbacks.append(StageLoggerCallback(logger))
    all_callbacks.extend(callbacks)
    trainer = MethodTrainer(method, model=model, args=args, train_dataset=records,
                            group_by_length=settings.group_by_length, projector_lr=projector_lr,
                            projector_module=projector_module, callbacks=all_callbacks)
    if logger is not None:
        trainer.remove_callback(PrinterCallback)  # it would print every log entry a second time
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    return trainer, last_logged_values(trainer.state.log_history)
