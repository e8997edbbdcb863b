"""The ``train:`` block of a train stage (torch-free, so validating a pipeline stays fast).

It maps onto ``transformers.TrainingArguments`` with ``output_dir = <stage_dir>/checkpoints``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from mllm.interfaces import ComponentConfig

CHECKPOINTS_SUBDIR = "checkpoints"


class TrainSettings(ComponentConfig):
    """The ``train:`` block of a train stage (``transformers.TrainingArguments`` underneath).

    ``epochs`` is used unless ``max_steps`` is set (> 0). ``batch_size`` is per device;
    the effective batch is ``batch_size * grad_accum * processes``.
    """

    epochs: float = Field(1.0, gt=0, description="passes over the data (num_train_epochs)")
    max_steps: int = Field(-1, description="optimizer steps; > 0 overrides epochs")
    lr: float = Field(2e-5, gt=0, description="peak learning rate")
    batch_size: int = Field(8, ge=1, description="per-device batch size")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of steps with linear warm-up")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping; 0 turns it off")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name: cosine, linear, constant, ...")
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=1, description="checkpoint every this many steps (for resume)")
    save_total_limit: int | None = Field(2, ge=1, description="checkpoints kept (oldest deleted)")
    group_by_length: bool = Field(True, description="batches of similar length (transformers' LengthGroupedSampler)")
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    report_to: list[str] = Field(default_factory=lambda: ["none"],
                                 description="transformers integrations: none, tensorboard, wandb, ...")
    seed: int | None = Field(None, description="training seed; default: the pipeline's seed")
    deepspeed: str | None = Field(None, description="DeepSpeed config file, passed to TrainingArguments")
    dataloader_num_workers: int = Field(0, ge=0)

    def to_training_arguments(self, stage_dir: Path, *, seed: int = 0, **overrides: Any) -> Any:
        """``TrainingArguments`` writing checkpoints to ``<stage_dir>/checkpoints``."""
        import torch
        from transformers import TrainingArguments

        kwargs: dict[str, Any] = dict(
            output_dir=str(Path(stage_dir) / CHECKPOINTS_SUBDIR),
            num_train_epochs=self.epochs,
            max_steps=self.max_steps,
            learning_rate=self.lr,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.grad_accum,
            warmup_steps=self.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            lr_scheduler_type=self.lr_scheduler,
            logging_strategy="steps",
            logging_steps=self.logging_steps,
            save_strategy="steps",
            save_steps=self.save_steps,
            save_total_limit=self.save_total_limit,
            bf16=self.bf16,
            fp16=self.fp16,
            activation_checkpointing=self.gradient_checkpointing,
            report_to=list(self.report_to),
            seed=self.seed if self.seed is not None else seed,
            deepspeed=self.deepspeed,
            dataloader_num_workers=self.dataloader_num_workers,
            dataloader_pin_memory=torch.cuda.is_available(),
            remove_unused_columns=False,
            # the method's collate produces the batch; record lengths come from method.lengths()
            train_sampling_strategy="random",
        )
        kwargs.update(overrides)
        return TrainingArguments(**kwargs)
