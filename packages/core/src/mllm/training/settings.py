"""The ``train:`` block of a train stage (torch-free, so validating a pipeline stays fast).

It maps onto ``transformers.TrainingArguments`` with ``output_dir = <stage_dir>/checkpoints``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from mllm.errors import MissingFileError
from mllm.interfaces import ComponentConfig

CHECKPOINTS_SUBDIR = "checkpoints"
#: ``deepspeed:`` names of the bundled configs (``mllm/deepspeed_presets/<name>.json``)
DEEPSPEED_PRESETS = ("zero2", "zero3", "zero3-offload")
Precision = Literal["fp32", "bf16", "fp16"]


def deepspeed_config_path(value: str) -> Path:
    """The JSON file a ``deepspeed:`` value names: a bundled preset or a path."""
    if value in DEEPSPEED_PRESETS:
        from importlib import resources

        return Path(str(resources.files("mllm") / "deepspeed_presets" / f"{value}.json"))
    path = Path(value).expanduser()
    if not path.is_file():
        raise MissingFileError(f"train.deepspeed: {value!r} is neither a preset ({', '.join(DEEPSPEED_PRESETS)}) "
                               f"nor an existing DeepSpeed JSON file")
    return path


#: ``lr_scheduler:`` names transformers' ``get_scheduler`` knows (its ``SchedulerType``; a
#: test keeps the two equal): listed here so validating a pipeline needs no torch
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay", "greedy")
#: ``report_to:`` integrations (transformers' ``INTEGRATION_TO_CALLBACK``; a test keeps them
#: equal) and the modules any one of which it needs; kubeflow is switched on by the environment
REPORT_TO_MODULES: dict[str, tuple[str, ...]] = {
    "azure_ml": ("azureml",), "clearml": ("clearml",), "codecarbon": ("codecarbon",), "comet_ml": ("comet_ml",),
    "dagshub": ("dagshub",), "dvclive": ("dvclive",), "flyte": ("flytekit",), "kubeflow": (),
    "mlflow": ("mlflow",), "neptune": ("neptune",), "swanlab": ("swanlab",),
    "tensorboard": ("tensorboard", "tensorboardX"), "trackio": ("trackio",), "wandb": ("wandb",),
}
#: ``report_to:`` values that name no integration
REPORT_TO_SPECIAL = ("none", "all")


def module_installed(name: str) -> bool:
    """Whether ``import name`` would find a module (without importing it)."""
    if name in sys.modules:
        return sys.modules[name] is not None  # None: imports of it are blocked
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _unknown_name(kind: str, value: str, known: tuple[str, ...]) -> ValueError:
    import difflib

    close = difflib.get_close_matches(value, known, n=1)
    hint = f"; did you mean {close[0]!r}" if close else ""
    return ValueError(f"unknown {kind} {value!r}{hint}; use one of {', '.join(known)}")


SAME = "the same setting"

#: The names transformers' ``TrainingArguments`` (so TRL and LLaMA-Factory too) and
#: accelerate give our ``train:`` keys: an unknown key found here gets "did you mean <our
#: key> (<note>)?" in its error. Only suggested, never accepted: one spelling per setting
#: keeps the fingerprints and the docs simple.
TRAIN_KEY_ALIASES: dict[str, tuple[str, str]] = {
    "learning_rate": ("lr", SAME),
    "num_train_epochs": ("epochs", SAME),
    "num_epochs": ("epochs", SAME),
    "per_device_train_batch_size": ("batch_size", SAME),
    "train_batch_size": ("batch_size", "per device, as in transformers' per_device_train_batch_size"),
    "micro_batch_size": ("batch_size", SAME),
    "gradient_accumulation_steps": ("grad_accum", SAME),
    "gradient_accumulation": ("grad_accum", SAME),
    "lr_scheduler_type": ("lr_scheduler", SAME),
    "warmup_steps": ("warmup_ratio", "a share of the steps, not a count: warmup_ratio: 0.03"),
    "gradient_clipping": ("max_grad_norm", SAME),
    "clip_grad_norm": ("max_grad_norm", SAME),
    "mixed_precision": ("precision", "fp32, bf16 or fp16"),
    "activation_checkpointing": ("gradient_checkpointing", SAME),
    "num_workers": ("dataloader_num_workers", SAME),
    "data_seed": ("seed", "one seed for data order and initialisation"),
}


class TrainSettings(ComponentConfig):
    """The ``train:`` block of a train stage (``transformers.TrainingArguments`` underneath).

    ``epochs`` is used unless ``max_steps`` is set (> 0). ``batch_size`` is per device;
    the effective batch is ``batch_size * grad_accum * processes``. The transformers
    names of these keys (``learning_rate``, ``num_train_epochs``, ...) are
    :data:`TRAIN_KEY_ALIASES`: errors suggest ours.
    """

    #: other tools' names of these keys, read by the pipeline loader's "did you mean"
    key_aliases: ClassVar[dict[str, tuple[str, str]]] = TRAIN_KEY_ALIASES

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
    packing: bool = Field(False, description="several sequences per batch row (SFT and preference methods): per-"
                                             "sequence position ids, attention that never crosses a sequence; the "
                                             "batch keeps its records, only its padding goes (docs/speed.md)")
    shared_prompt: bool = Field(True, description="preference methods: one sequence per pair (prompt once, then "
                                                  "chosen, then rejected, under a block mask) instead of two; off "
                                                  "with a logged reason where the attention cannot take the mask")
    bf16: bool = False
    fp16: bool = False
    precision: Precision | None = Field(None, description="fp32, bf16 or fp16 (mixed precision); the same as "
                                                          "bf16: true / fp16: true, which it replaces")
    gradient_checkpointing: bool = False
    report_to: list[str] = Field(default_factory=lambda: ["none"],
                                 description="transformers integrations: none, tensorboard, wandb, ...")
    seed: int | None = Field(None, description="training seed; default: the pipeline's seed")
    deepspeed: str | None = Field(None, description="DeepSpeed ZeRO: a preset (zero2, zero3, zero3-offload: "
                                                    "batch size, accumulation and precision are 'auto', filled "
                                                    "from these settings) or the path of a DeepSpeed JSON config")
    dataloader_num_workers: int = Field(0, ge=0)

    @field_validator("deepspeed")
    @classmethod
    def _deepspeed_value(cls, value: str | None) -> str | None:
        if value is None or value in DEEPSPEED_PRESETS:
            return value
        if value.endswith(".json") or "/" in value or "\\" in value:
            return value  # a path; its existence is checked when training starts
        import difflib

        close = difflib.get_close_matches(value, DEEPSPEED_PRESETS, n=1)
        hint = f"; did you mean {close[0]!r}" if close else ""
        raise ValueError(f"unknown DeepSpeed preset {value!r}{hint}; use one of {', '.join(DEEPSPEED_PRESETS)} "
                         "or the path of a .json config")

    @field_validator("lr_scheduler")
    @classmethod
    def _lr_scheduler_value(cls, value: str) -> str:
        if value not in LR_SCHEDULERS:
            raise _unknown_name("scheduler", value, LR_SCHEDULERS)
        return value

    @field_validator("report_to")
    @classmethod
    def _report_to_values(cls, value: list[str]) -> list[str]:
        known = REPORT_TO_SPECIAL + tuple(REPORT_TO_MODULES)
        for name in value:
            if name not in known:
                raise _unknown_name("report_to integration", name, known)
        return value

    def missing_packages(self) -> list[tuple[str, str]]:
        """``(key, message)`` for each integration (``report_to``) and for DeepSpeed
        (``deepspeed``) this block uses whose package is not installed: the pre-flight's,
        so ``validate`` says it rather than the Trainer after the model is built."""
        missing = []
        for name in self.report_to:
            modules = REPORT_TO_MODULES.get(name, ())
            if modules and not any(module_installed(module) for module in modules):
                missing.append(("report_to", f"{name!r} needs the {' or '.join(modules)} package, which is not "
                                             f"installed; pip install {modules[0]} (or drop {name!r} from report_to)"))
        if self.deepspeed is not None and not module_installed("deepspeed"):
            missing.append(("deepspeed", f"{self.deepspeed!r} needs DeepSpeed, which is not installed; pip install "
                                         "deepspeed (or remove deepspeed: to train without it)"))
        return missing

    @model_validator(mode="after")
    def _one_precision(self) -> "TrainSettings":
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 are both true; pick one (or precision: bf16 | fp16 | fp32)")
        if self.precision is not None:
            implied = "bf16" if self.bf16 else "fp16" if self.fp16 else None
            if implied is not None and implied != self.precision:
                raise ValueError(f"precision: {self.precision} contradicts {implied}: true; keep one of them")
        return self

    @property
    def effective_precision(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``: what the Trainer trains in."""
        if self.precision is not None:
            return self.precision
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"

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
            bf16=self.effective_precision == "bf16",
            fp16=self.effective_precision == "fp16",
            activation_checkpointing=self.gradient_checkpointing,
            report_to=list(self.report_to),
            seed=self.seed if self.seed is not None else seed,
            deepspeed=str(deepspeed_config_path(self.deepspeed)) if self.deepspeed else None,
            dataloader_num_workers=self.dataloader_num_workers,
            dataloader_pin_memory=torch.cuda.is_available(),
            remove_unused_columns=False,
            # the method's collate produces the batch; record lengths come from method.lengths()
            train_sampling_strategy="random",
        )
        if not torch.cuda.is_available() and (int(os.environ.get("WORLD_SIZE", "1")) > 1
                                              or self.effective_precision == "bf16"):
            # several CPU processes (torchrun, gloo) are counted, and bf16 (CPU autocast) is
            # allowed, only in accelerate's CPU mode
            kwargs["use_cpu"] = True
        kwargs.update(overrides)
        return TrainingArguments(**kwargs)
