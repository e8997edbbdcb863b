"""Supervised fine-tuning (method ``sft``): the LLaVA visual instruction-tuning loss.

Each :class:`~mllm.records.Conversation` is rendered with the model's chat template
(``adapter.encode_conversation``): only the assistant answers (and the end-of-turn token
after each) carry labels, so the loss is the language model's cross-entropy over answer
tokens. Full fine-tuning by default (vision tower frozen, as LLaVA-1.5 does); LoRA and
QLoRA through peft; freeze switches per part; a projector learning rate of its own.

```yaml
method: {name: sft}                                   # full fine-tuning
method: {name: sft, lora: true, lora_r: 64, lora_alpha: 16, projector_lr: 2.0e-5}
method: {name: sft, template: plain, freeze_language_model: true}   # LLaVA stage 1: projector only
```

``template:`` (every method with the freeze / LoRA keys) switches the chat template the stage trains
with; the saved model records it, so later stages and evaluation use it too (LLaVA's two stages:
``plain`` for projector pre-training, then ``llava-1.5``; see ``pipelines/llava_two_stage.yaml``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from mllm import Conversation, ImageTokenCounts

from mllm_align.common import (
    TrainableConfig,
    cut_problem,
    load_batch_images,
    pad_encoded,
    prepare_trainable,
    token_accuracy,
)
from mllm_align.layout import Layout, layout_from_context

# Length grouping weighs an image like this many text characters when there is no adapter
# to say how many tokens an image becomes.
_DEFAULT_IMAGE_WEIGHT = 576


class SFTConfig(TrainableConfig):
    """Options of the ``sft`` method (see :class:`mllm_align.common.TrainableConfig`).

    A conversation longer than the model's ``max_length`` is a bad row (``on_bad_row``)."""


class SFT:
    """Supervised fine-tuning on conversations (labels only on assistant tokens)."""

    record_kind: ClassVar[str] = "conversation"

    def __init__(self, config: SFTConfig | None = None) -> None:
        self.config = config or SFTConfig()
        self.adapter: Any = None
        #: rows as train.packing asks (set by prepare; plain rows until then)
        self.layout = Layout()

    @property
    def projector_lr(self) -> float | None:
        return self.config.projector_lr

    # -- Method protocol ----------------------------------------------------------------

    def setup(self, adapter: Any) -> Any:
        """Freeze parts or wrap the language model with LoRA; returns the model to train."""
        self.adapter = adapter
        return prepare_trainable(adapter, self.config)

    def prepare(self, context: Any) -> None:
        """Nothing to precompute for SFT; the batch layout ``context.train`` asks for
        (``packing``: several conversations per row, see :mod:`mllm.training.packing`)."""
        self.layout = layout_from_context(self._require_adapter(), context, preference=False)
        if self.layout.packing and _dynamic(self.adapter):
            from mllm import ConfigError

            raise ConfigError("train.packing: the model's dynamic_resolution gives each image its own token count "
                              "and grid, which packed rows do not carry; set train.packing off or dynamic_resolution off")

    def _require_adapter(self) -> Any:
        if self.adapter is None:
            raise RuntimeError("SFT.setup(adapter) must be called before collate()")
        return self.adapter

    def encode(self, record: Conversation) -> dict[str, list[int]]:
        adapter = self._require_adapter()
        if isinstance(adapter, ImageTokenCounts):  # per-image token counts: the encoder needs the images
            return adapter.encode_conversation(record.turns, images=record.images)
        return adapter.encode_conversation(record.turns)

    def row_problem(self, record: Conversation) -> str | None:
        """A record longer than the model's ``max_length`` (or whose cut would split an
        image) is a bad row, not silently cut (the train stage applies ``on_bad_row``)."""
        try:
            encoded = self.encode(record)
        except ValueError as error:
            return str(error)
        return cut_problem(self._require_adapter(), encoded)

    def collate(self, records: Sequence[Conversation]) -> dict[str, Any]:
        """Right-padded ``input_ids``, ``labels`` (-100 except answers), ``attention_mask``
        and the images' ``pixel_values``."""
        adapter = self._require_adapter()
        encoded = [self.encode(r) for r in records]
        if self.layout.packing:
            from mllm import pack_sequences

            batch = pack_sequences(encoded, [len(r.images) for r in records], adapter.pad_token_id,
                                   one_row=self.layout.one_row)
        else:
            batch = pad_encoded(encoded, adapter.pad_token_id)
        if isinstance(adapter, ImageTokenCounts):
            from mllm_align.common import record_image_paths

            paths = record_image_paths(records)
            if paths:
                batch.update(adapter.image_inputs(paths))  # pixel_values and e.g. image_grid_thw
            return batch
        pixel_values = load_batch_images(adapter, records)
        if pixel_values is not None:
            batch["pixel_values"] = pixel_values
        return batch

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        """The model's LM loss over answer tokens, and token accuracy on them."""
        if "sequence_index" in batch:  # packed rows: per-sequence positions, block attention
            from mllm import packed_model_inputs

            outputs = model(input_ids=batch["input_ids"], labels=batch["labels"], **packed_model_inputs(model, batch))
        else:
            outputs = model(**batch)
        accuracy, count = token_accuracy(outputs.logits, batch["labels"])
        return outputs.loss, {"token_accuracy": accuracy, "answer_tokens": float(count)}

    def lengths(self, records: Sequence[Conversation]) -> list[int]:
        """Approximate sequence lengths for length grouping (no tokenization needed):
        characters of the text plus a fixed weight per image."""
        weight = getattr(self.adapter, "num_image_tokens", None) or _DEFAULT_IMAGE_WEIGHT
        return [sum(len(t.content) for t in r.turns) + weight * len(r.images) for r in records]


def _dynamic(adapter: Any) -> bool:
    """The adapter gives images different token counts (e.g. Qwen2-VL's dynamic_resolution)."""
    return isinstance(adapter, ImageTokenCounts) and bool(getattr(adapter, "dynamic_resolution", False))
