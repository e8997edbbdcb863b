"""Helpers shared by the alignment methods (SFT, DPO, ...): which parameters train
(freezing, LoRA, QLoRA), padding token sequences into batches, loading a batch's images.

Parameter selection follows LLaVA's training script:

- full fine-tuning trains the projector and the language model, the vision tower stays
  frozen (``freeze_vision_tower: true``), each part switchable;
- LoRA (peft) wraps only the language model's linear projections (attention and MLP;
  the target regex is anchored at the adapter's ``language_model`` module path so the
  vision tower's ``q_proj``/``fc1`` are never wrapped); the projector, unless frozen,
  trains fully beside the adapters (peft ``modules_to_save``, so it is saved in the
  adapter folder, like LLaVA's ``non_lora_trainables``);
- QLoRA additionally loads the language model in 4-bit NF4 through bitsandbytes, which
  needs a CUDA GPU.
"""

from __future__ import annotations

import importlib.util
import re
import tempfile
from collections.abc import Sequence
from typing import Any

from mllm import ComponentConfig, TemplateName, get_template
from pydantic import Field, model_validator

IGNORE_INDEX = -100
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainableConfig(ComponentConfig):
    """Which parameters a method trains: freeze switches, LoRA / QLoRA, projector lr."""

    lora: bool = Field(False, description="train LoRA adapters on the language model instead of all its weights")
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    lora_target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
        description="names of the language model's linear layers to wrap (attention and MLP projections)")
    qlora: bool = Field(False, description="LoRA on a 4-bit (NF4) language model; needs bitsandbytes and a CUDA GPU")
    freeze_vision_tower: bool = Field(True, description="keep the vision tower's weights fixed")
    freeze_projector: bool = Field(False, description="keep the projector's weights fixed")
    freeze_language_model: bool = Field(False, description="keep the language model's weights fixed (full fine-tuning only)")
    projector_lr: float | None = Field(None, gt=0, description="learning rate of the projector (LLaVA's mm_projector_lr); default: train.lr")
    template: TemplateName | None = Field(
        None, description="chat template to train (and save) the model with: plain (LLaVA stage-1 projector "
                          "pre-training) or llava-1.5; default: the template of the model the stage starts from")

    @model_validator(mode="after")
    def _check(self) -> TrainableConfig:
        if self.qlora and not self.lora:
            self.lora = True  # QLoRA is LoRA on a quantized base
        if self.lora and self.freeze_language_model:
            raise ValueError("lora: true trains adapters on the language model; it cannot be combined with "
                             "freeze_language_model: true")
        if self.lora and not self.lora_target_modules:
            raise ValueError("lora_target_modules is empty; name the language model's linear layers to wrap")
        if self.freeze_vision_tower and self.freeze_projector and self.freeze_language_model:
            raise ValueError("every part is frozen (vision tower, projector, language model): nothing would train")
        return self


# -- parameter selection --------------------------------------------------------------


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def part_of(name: str, names: dict[str, str]) -> str:
    """``vision_tower``, ``projector`` or ``language_model`` for a parameter name of the
    unwrapped model; everything outside the first two (``lm_head`` included) is the
    language model. The projector is checked first: it may sit inside the vision tower
    (Qwen2-VL's ``model.visual.merger``)."""
    if _under(name, names["projector"]):
        return "projector"
    if _under(name, names["vision_tower"]):
        return "vision_tower"
    return "language_model"


def lora_target_regex(language_model: str, modules: Sequence[str]) -> str:
    """A peft ``target_modules`` regex matching only ``modules`` below ``language_model``."""
    alternatives = "|".join(re.escape(m) for m in modules)
    return rf"^{re.escape(language_model)}\..*\.({alternatives})$"


def check_qlora_available() -> None:
    """QLoRA needs bitsandbytes and a CUDA GPU; say so clearly when either is missing."""
    import torch

    missing = []
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package is not installed (pip install bitsandbytes)")
    if not torch.cuda.is_available():
        missing.append("no CUDA GPU is available (4-bit NF4 weights need one)")
    if missing:
        raise RuntimeError("qlora: true needs bitsandbytes and a CUDA GPU, but " + " and ".join(missing)
                           + "; use lora: true (LoRA on full-precision weights) instead")


def _quantize_language_model(adapter: Any) -> Any:
    """Reload the adapter's model with its language model in 4-bit NF4 (bitsandbytes)."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    names = adapter.module_names()
    model = adapter.model
    compute_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=[names["vision_tower"], names["projector"], "lm_head"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        quantized = type(model).from_pretrained(tmp, quantization_config=quantization, device_map={"": 0},
                                                dtype=compute_dtype)
    return prepare_model_for_kbit_training(quantized, use_gradient_checkpointing=False)


def prepare_trainable(adapter: Any, config: TrainableConfig) -> Any:
    """Freeze or LoRA-wrap ``adapter.model`` as ``config`` says; returns the model to train.

    With LoRA, ``adapter.model`` becomes the peft model, so ``adapter.save`` writes an
    adapter folder.
    """
    if config.template is not None:  # e.g. stage 1 `plain`, stage 2 `llava-1.5`; saved with the model
        adapter.template = get_template(config.template)
    names = adapter.module_names()
    if config.lora:
        from peft import LoraConfig, get_peft_model

        if config.qlora:
            check_qlora_available()
            adapter.model = _quantize_language_model(adapter)
        modules_to_save = []
        if not config.freeze_projector:
            modules_to_save.append(names["projector"])
        if not config.freeze_vision_tower:
            modules_to_save.append(names["vision_tower"])
        lora_config = LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=lora_target_regex(names["language_model"], config.lora_target_modules),
            modules_to_save=modules_to_save or None, bias="none", task_type="CAUSAL_LM",
        )
        try:
            model = get_peft_model(adapter.model, lora_config)
        except ValueError as error:
            raise ValueError(f"LoRA: none of lora_target_modules {config.lora_target_modules} was found in the "
                             f"language model ({names['language_model']}): {error}") from error
        adapter.model = model
        return model

    frozen = {
        "vision_tower": config.freeze_vision_tower,
        "projector": config.freeze_projector,
        "language_model": config.freeze_language_model,
    }
    model = adapter.model
    for name, param in model.named_parameters():
        param.requires_grad_(not frozen[part_of(name, names)])
    return model


# -- batches --------------------------------------------------------------------------


def pad_sequences(sequences: Sequence[Sequence[int]], value: int, *, side: str = "right") -> Any:
    """A ``[batch, longest]`` LongTensor of ``sequences`` padded with ``value``."""
    import torch

    longest = max(len(s) for s in sequences)
    out = torch.full((len(sequences), longest), value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if not len(seq):
            continue
        if side == "right":
            out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        else:
            out[row, longest - len(seq):] = torch.as_tensor(seq, dtype=torch.long)
    return out


def pad_encoded(encoded: Sequence[dict[str, Sequence[int]]], pad_token_id: int, *, side: str = "right") -> dict[str, Any]:
    """``input_ids`` / ``labels`` lists -> padded ``input_ids``, ``labels`` (-100 on padding), ``attention_mask``."""
    import torch

    input_ids = pad_sequences([e["input_ids"] for e in encoded], pad_token_id, side=side)
    mask = pad_sequences([[1] * len(e["input_ids"]) for e in encoded], 0, side=side)
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if all("labels" in e for e in encoded):
        batch["labels"] = pad_sequences([e["labels"] for e in encoded], IGNORE_INDEX, side=side)
    return {k: v if isinstance(v, torch.Tensor) else torch.as_tensor(v) for k, v in batch.items()}


def record_image_paths(records: Sequence[Any]) -> list[Any]:
    """Every image of ``records``, in order (the order of their ``<image>`` tokens)."""
    return [image for record in records for image in record.images]


def load_batch_images(adapter: Any, records: Sequence[Any]) -> Any | None:
    """``pixel_values`` of every image of ``records`` (``None`` when there are none)."""
    paths = record_image_paths(records)
    if not paths:
        return None
    return adapter.load_images(paths)


def token_accuracy(logits: Any, labels: Any) -> tuple[float, int]:
    """Share of learned tokens (labels != -100) predicted by the argmax, and their count."""
    import torch

    with torch.no_grad():
        shifted_labels = labels[:, 1:]
        mask = shifted_labels != IGNORE_INDEX
        count = int(mask.sum())
        if count == 0:
            return 0.0, 0
        predicted = logits[:, :-1].argmax(dim=-1)
        correct = (predicted[mask] == shifted_labels[mask]).sum()
        return float(correct) / count, count


def cut_problem(adapter: Any, encoded: dict[str, Any]) -> str | None:
    """Why an encoded conversation cannot be trained on as it is: the adapter cut it to its
    ``max_length`` (``cut_from`` set), which drops the end of its answer, or ``None``."""
    full = encoded.get("cut_from")
    if full is None:
        return None
    return (f"the row is {full} tokens, longer than the model's max_length={adapter.max_length}; "
            "a cut would drop its answer: raise the model's max_length or shorten the row")
