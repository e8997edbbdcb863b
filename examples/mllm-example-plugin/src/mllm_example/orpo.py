"""``orpo``: Odds Ratio Preference Optimization (Hong et al., 2024), no reference model.

For a prompt x with chosen answer y_w and rejected answer y_l, with P(y|x) the
length-normalised likelihood exp(mean log p of the answer tokens) and
odds(y|x) = P / (1 - P)::

    L = NLL(y_w | x) + lambda * -log sigmoid(log odds(y_w|x) - log odds(y_l|x))

Chosen and rejected of a batch are one forward pass (2B rows), and each image goes
through the vision tower once: :func:`mllm.answer_logprobs` (``image_repeats=2``) runs
``adapter.encode_images`` once and ``adapter.embed_inputs`` reuses the features for both
answers. Everything here comes from ``mllm.__all__``, the plugin API.

    method: {name: orpo, lambda_: 0.1}
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

from mllm import ComponentConfig, ModelAdapter, Preference, TrainContext, Turn, answer_logprobs
from pydantic import Field

IGNORE_INDEX = -100  # labels of tokens that are not part of an answer


class ORPOConfig(ComponentConfig):
    """Options of ``orpo``."""

    lambda_: float = Field(0.1, ge=0.0, description="weight of the odds-ratio term (ORPO's lambda)")
    freeze_vision_tower: bool = Field(True, description="keep the vision tower's weights fixed")


class ORPO:
    """ORPO on Preference records (see the module docstring)."""

    record_kind: ClassVar[str] = "preference"

    def __init__(self, config: ORPOConfig | None = None) -> None:
        self.config = config or ORPOConfig()
        self.adapter: ModelAdapter | None = None

    def setup(self, adapter: ModelAdapter) -> Any:
        self.adapter = adapter
        vision = adapter.module_names()["vision_tower"]
        for name, parameter in adapter.model.named_parameters():
            frozen = self.config.freeze_vision_tower and (name == vision or name.startswith(vision + "."))
            parameter.requires_grad_(not frozen)
        return adapter.model

    def prepare(self, context: TrainContext) -> None:
        """ORPO needs no reference model: nothing to precompute."""

    def collate(self, records: Sequence[Preference]) -> dict[str, Any]:
        """Rows 0..B-1 hold prompt+chosen, rows B..2B-1 prompt+rejected (right-padded)."""
        import torch

        encoded = [self.adapter.encode_conversation(r.prompt + (Turn("assistant", answer),))
                   for answer_of in ("chosen", "rejected") for r in records
                   for answer in (getattr(r, answer_of),)]
        longest = max(len(e["input_ids"]) for e in encoded)
        input_ids = torch.full((len(encoded), longest), self.adapter.pad_token_id, dtype=torch.long)
        labels = torch.full((len(encoded), longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), longest), dtype=torch.long)
        for row, e in enumerate(encoded):
            n = len(e["input_ids"])
            input_ids[row, :n] = torch.tensor(e["input_ids"])
            labels[row, :n] = torch.tensor(e["labels"])
            attention_mask[row, :n] = 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        images = [image for r in records for image in r.images]
        if images:
            batch["pixel_values"] = self.adapter.load_images(images)  # once; shared by both answers
        return batch

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        import torch
        import torch.nn.functional as F

        # rows are chosen answers then rejected answers of the same records: each image serves two rows
        scored = answer_logprobs(model, batch, adapter=self.adapter, image_repeats=2)
        half = scored.sums.shape[0] // 2
        chosen, rejected = scored.means[:half], scored.means[half:]  # length-normalised log P(y|x)

        def log_odds(logp: torch.Tensor) -> torch.Tensor:
            return logp - torch.log1p(-torch.exp(logp).clamp(max=1 - 1e-6))

        ratio = log_odds(chosen) - log_odds(rejected)
        odds_ratio_loss = -F.logsigmoid(ratio).mean()
        nll = -scored.sums[:half].sum() / scored.counts[:half].sum().clamp(min=1)
        loss = nll + self.config.lambda_ * odds_ratio_loss
        return loss, {
            "nll": float(nll.detach()),
            "odds_ratio_loss": float(odds_ratio_loss.detach()),
            "log_odds_ratio": float(ratio.detach().mean()),
            "reward_accuracy": float((ratio.detach() > 0).float().mean()),
        }

    def lengths(self, records: Sequence[Preference]) -> list[int]:
        per_image = self.adapter.num_image_tokens if self.adapter is not None else 0
        return [sum(len(t.content) for t in r.prompt) + max(len(r.chosen), len(r.rejected)) + per_image * len(r.images)
                for r in records]
