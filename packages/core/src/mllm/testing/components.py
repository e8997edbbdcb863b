"""The kit's own small components, written against :mod:`mllm`'s public API only.

The ``stages`` check of a model adapter runs them in a real pipeline, so an adapter is
exercised the way the alignment methods and benchmarks of the field use it:

- ``conformance-sft``: padded :meth:`~mllm.interfaces.PromptEncoder.encode_conversation`
  batches with ``pixel_values`` from :meth:`~mllm.interfaces.ImageEncoder.load_images`, the
  model's own LM loss (``model(**batch).loss``), as supervised fine-tuning does;
- ``conformance-dpo``: prompt + chosen / prompt + rejected rows, the prompt masked with
  :meth:`~mllm.interfaces.PromptEncoder.encode_prompt`; reference log-probs computed in
  ``prepare`` over ``context.records``; :func:`mllm.answer_logprobs` with each image
  encoded once (``encode_images`` + ``embed_inputs``), as DPO does;
- ``conformance-qa``: one-image colour questions with gold answers and choices, answered
  in ``generate`` or ``choice`` mode (``answer_mode``), scored by exact match.

:data:`plugin` registers them (distribution ``mllm-testing``); this module imports torch
only inside the methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from pydantic import Field

from mllm import ComponentConfig, ComponentSpec, EvalItem, Register, Turn, hookimpl

KIT_DISTRIBUTION = "mllm-testing"
IGNORE_INDEX = -100


def _pad(rows: Sequence[Sequence[int]], value: int) -> Any:
    import torch

    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for index, row in enumerate(rows):
        out[index, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
    return out


def _batch(encoded: Sequence[dict[str, Sequence[int]]], pad_token_id: int) -> dict[str, Any]:
    return {"input_ids": _pad([e["input_ids"] for e in encoded], pad_token_id),
            "labels": _pad([e["labels"] for e in encoded], IGNORE_INDEX),
            "attention_mask": _pad([[1] * len(e["input_ids"]) for e in encoded], 0)}


def _freeze_vision_tower(adapter: Any) -> Any:
    vision = adapter.module_names()["vision_tower"]
    for name, parameter in adapter.model.named_parameters():
        parameter.requires_grad_(not (name == vision or name.startswith(vision + ".")))
    return adapter.model


class KitSFT:
    """Supervised fine-tuning on conversations: the model's own LM loss with ``pixel_values``."""

    record_kind: ClassVar[str] = "conversation"

    def __init__(self, config: Any = None) -> None:
        self.adapter: Any = None

    def setup(self, adapter: Any) -> Any:
        self.adapter = adapter
        return _freeze_vision_tower(adapter)

    def prepare(self, context: Any) -> None:
        if context.adapter is not self.adapter or not context.records:
            raise AssertionError("prepare(context): context.adapter must be the adapter setup() got, "
                                 "context.records the training records")

    def collate(self, records: Sequence[Any]) -> dict[str, Any]:
        batch = _batch([self.adapter.encode_conversation(r.turns) for r in records], self.adapter.pad_token_id)
        images = [image for r in records for image in r.images]
        if images:
            batch["pixel_values"] = self.adapter.load_images(images)
        return batch

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        outputs = model(**batch)
        return outputs.loss, {"nll": float(outputs.loss.detach())}


class KitDPO:
    """Sigmoid DPO (beta 0.1) with precomputed reference log-probs and shared image features."""

    record_kind: ClassVar[str] = "preference"
    beta = 0.1

    def __init__(self, config: Any = None) -> None:
        self.adapter: Any = None
        self.reference: dict[str, tuple[float, float]] = {}

    def setup(self, adapter: Any) -> Any:
        self.adapter = adapter
        return _freeze_vision_tower(adapter)

    def _encode(self, record: Any) -> list[dict[str, list[int]]]:
        prompt_length = len(self.adapter.encode_prompt(record.prompt))
        rows = []
        for answer in (record.chosen, record.rejected):
            encoded = self.adapter.encode_conversation(tuple(record.prompt) + (Turn("assistant", answer),))
            labels = list(encoded["labels"])
            labels[:prompt_length] = [IGNORE_INDEX] * min(prompt_length, len(labels))
            rows.append({"input_ids": list(encoded["input_ids"]), "labels": labels})
        return rows

    def collate(self, records: Sequence[Any]) -> dict[str, Any]:
        import torch

        pairs = [self._encode(r) for r in records]
        batch = _batch([p[0] for p in pairs] + [p[1] for p in pairs], self.adapter.pad_token_id)
        images = [image for r in records for image in r.images]
        if images:
            batch["pixel_values"] = self.adapter.load_images(images)
        batch["reference"] = torch.tensor([self.reference.get(r.id, (0.0, 0.0)) for r in records])
        return batch

    def _logps(self, model: Any, batch: dict[str, Any]) -> Any:
        from mllm import answer_logprobs

        return answer_logprobs(model, batch, adapter=self.adapter, image_repeats=2).sums

    def prepare(self, context: Any) -> None:
        import torch

        model = self.adapter.model
        device = next(model.parameters()).device
        with torch.no_grad():
            for record in context.records:
                batch = {key: value.to(device) for key, value in self.collate([record]).items()}
                chosen, rejected = self._logps(model, batch).tolist()
                self.reference[record.id] = (chosen, rejected)

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        import torch.nn.functional as F

        logps = self._logps(model, batch)
        n = logps.shape[0] // 2
        reference = batch["reference"].to(logps.device, logps.dtype)
        margin = (logps[:n] - reference[:, 0]) - (logps[n:] - reference[:, 1])
        loss = -F.logsigmoid(self.beta * margin).mean()
        return loss, {"margin": float(margin.detach().mean())}


class KitQAConfig(ComponentConfig):
    """``conformance-qa``: where its images go and how it is answered."""

    folder: str = Field(description="a folder for the question images (written on first use)")
    answer_mode: Literal["generate", "choice"] = "generate"
    count: int = Field(2, ge=1)


class KitQA:
    """Colour questions on one image each; accuracy by exact match."""

    metric_keys: ClassVar[tuple[str, ...]] = ("accuracy",)

    def __init__(self, config: KitQAConfig) -> None:
        self.config = config
        self.answer_mode = config.answer_mode
        self.max_new_tokens = 4

    def items(self) -> list[EvalItem]:
        from mllm.testing.samples import example_records

        return example_records("eval_item", Path(self.config.folder), count=self.config.count)

    def score(self, items: Sequence[EvalItem], answers: dict[str, str]) -> dict[str, float]:
        right = sum(answers[item.id].strip().lower() == (item.answer or "").lower() for item in items)
        return {"accuracy": right / len(items)}


class _Plugin:
    """The hooks registering the kit's components."""

    @hookimpl
    def mllm_register_methods(self, register: Register) -> None:
        register(ComponentSpec(name="conformance-sft", impl="mllm.testing.components:KitSFT",
                               description="the kit's SFT (model loss with pixel_values)"))
        register(ComponentSpec(name="conformance-dpo", impl="mllm.testing.components:KitDPO",
                               description="the kit's DPO (answer_logprobs, shared image features)"))

    @hookimpl
    def mllm_register_benchmarks(self, register: Register) -> None:
        register(ComponentSpec(name="conformance-qa", impl="mllm.testing.components:KitQA",
                               config="mllm.testing.components:KitQAConfig",
                               description="the kit's colour questions (generate or choice)"))


plugin = _Plugin()
