"""Log-probabilities of answer tokens: what preference losses (DPO, IPO, SimPO, KTO, ORPO...) need.

A batch holds ``input_ids``, ``attention_mask`` and ``labels`` (``-100`` except on the
answer tokens, as :meth:`mllm.interfaces.PromptEncoder.encode_conversation` gives them
once the prompt part is masked), and optionally ``pixel_values``. The log-probability of
an answer is the **sum** of the log-probabilities of its tokens (``labels != -100``),
each predicted from the position before it; :attr:`AnswerLogprobs.means` is the
length-normalised variant (SimPO, ORPO, IPO).

Two ways in:

- ``answer_logprobs(model, batch, adapter=...)`` runs the forward pass: logits are kept
  only from the first answer token on (``logits_to_keep``), and with
  ``share_image_features`` each image goes through the vision tower once
  (``adapter.encode_images`` then ``adapter.embed_inputs``), however many rows reuse it
  (``image_repeats``: the batch's rows are ``image_repeats`` blocks of the same records,
  e.g. chosen rows then rejected rows);
- ``answer_logprobs(outputs_or_logits, labels)`` when you already have the logits
  (``[B, T, V]`` over the whole sequence, or the last ``K`` positions with
  ``logits_start = T - K``).

::

    from mllm import answer_logprobs

    scored = answer_logprobs(model, batch, adapter=self.adapter, image_repeats=2)
    n = scored.sums.shape[0] // 2
    chosen, rejected = scored.means[:n], scored.means[n:]     # SimPO's length-normalised rewards
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100


@dataclass
class AnswerLogprobs:
    """Answer-token log-probs of a batch of ``B`` sequences.

    ``sums`` ``[B]`` (float32 or wider): summed log-probs of each row's answer tokens;
    ``counts`` ``[B]``: how many answer tokens each row has; ``tokens`` ``[B, T-1]`` (only
    with ``per_token=True``): ``tokens[b, t]`` is the log-prob of ``labels[b, t+1]``, 0 off
    the answer; ``mask`` ``[B, T-1]`` marks the answer tokens (``labels[:, 1:] != -100``).
    """

    sums: torch.Tensor
    counts: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def means(self) -> torch.Tensor:
        """Mean log-prob per answer token ``[B]`` (rows without answer tokens give 0)."""
        return self.sums / self.counts.clamp(min=1).to(self.sums.dtype)


def first_answer_position(labels: torch.Tensor) -> int:
    """The earliest position (over the batch) whose logits predict an answer token."""
    learned = labels != IGNORE_INDEX
    first = int(learned.float().argmax(dim=1)[learned.any(dim=1)].min()) if learned.any() else 1
    return max(first - 1, 0)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, *, logits_start: int = 0,
                         per_token: bool = False) -> AnswerLogprobs:
    """Answer log-probs from logits whose position ``i`` is sequence position ``logits_start + i``.

    Only the answer positions go through ``log_softmax`` (in float32), so the memory is
    that of the answers, not of the whole ``[B, T, V]`` logits.
    """
    logits = logits[:, :-1]  # positions start .. T-2 predict tokens start+1 .. T-1
    targets = labels[:, logits_start + 1:].to(logits.device)
    if logits.shape[1] != targets.shape[1]:
        raise ValueError(f"logits cover {logits.shape[1] + 1} positions from {logits_start} on but labels have "
                         f"{labels.shape[1]}; pass logits_start = sequence length - kept positions")
    if logits_start and bool((labels[:, : logits_start + 1] != IGNORE_INDEX).any()):
        raise ValueError(f"labels hold answer tokens at positions <= logits_start={logits_start}, which these "
                         "logits cannot predict; keep the logits from the position before the first answer token")
    selected = targets != IGNORE_INDEX
    token_logps = torch.log_softmax(logits[selected].float(), dim=-1).gather(
        -1, targets[selected].unsqueeze(-1)).squeeze(-1)
    rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)[selected]
    sums = torch.zeros(targets.shape[0], dtype=token_logps.dtype, device=token_logps.device)
    sums = sums.index_add(0, rows, token_logps)
    result = AnswerLogprobs(sums, selected.sum(dim=1))
    if per_token:
        width = labels.shape[1] - 1
        tokens = torch.zeros(targets.shape[0], width, dtype=token_logps.dtype, device=token_logps.device)
        mask = torch.zeros(targets.shape[0], width, dtype=torch.bool, device=token_logps.device)
        tokens[:, logits_start:] = tokens[:, logits_start:].masked_scatter(selected, token_logps)
        mask[:, logits_start:] = selected
        result.tokens, result.mask = tokens, mask
    return result


def _forward(model: Any, batch: dict[str, Any], adapter: Any, image_repeats: int,
             share_image_features: bool) -> tuple[torch.Tensor, int]:
    input_ids, labels = batch["input_ids"], batch["labels"]
    start = first_answer_position(labels)
    kwargs: dict[str, Any] = {"attention_mask": batch["attention_mask"], "use_cache": False,
                              "logits_to_keep": input_ids.shape[1] - start}
    pixel_values = batch.get("pixel_values")
    if pixel_values is None:
        outputs = model(input_ids=input_ids, **kwargs)
    elif share_image_features:
        if adapter is None:
            raise ValueError("answer_logprobs: share_image_features needs adapter= (it encodes the images once)")
        features = adapter.encode_images(pixel_values)
        if image_repeats > 1:
            index = torch.arange(features.shape[0], device=features.device)
            features = features[torch.cat([index] * image_repeats)]
        outputs = model(inputs_embeds=adapter.embed_inputs(input_ids, features), **kwargs)
    else:
        # per-image forward inputs besides the pixels (an ImageTokenCounts adapter's image_inputs,
        # e.g. image_grid_thw), repeated with them
        extra = dict(batch.get("image_forward_inputs") or {})
        if image_repeats > 1:
            pixel_values = torch.cat([pixel_values] * image_repeats)
            extra = {key: torch.cat([value] * image_repeats) for key, value in extra.items()}
        outputs = model(input_ids=input_ids, pixel_values=pixel_values, **extra, **kwargs)
    return outputs.logits, start


def answer_logprobs(model_or_logits: Any, batch: Any, *, adapter: Any = None, image_repeats: int = 1,
                    share_image_features: bool = True, per_token: bool = False,
                    logits_start: int = 0) -> AnswerLogprobs:
    """Answer-token log-probs of a batch (see the module docstring).

    Args:
        model_or_logits: a model (a ``torch.nn.Module``: the forward pass is run here), or
            model outputs (with ``.logits``) or a logits tensor already computed.
        batch: the batch dict (``input_ids``, ``attention_mask``, ``labels``, optional
            ``pixel_values``); with logits, the batch or just its ``labels``.
        adapter: the model adapter (:class:`mllm.interfaces.ImageEncoder`) whose
            ``encode_images`` / ``embed_inputs`` feed ``model`` when images are shared;
            for a reference copy pass an adapter whose ``model`` is that copy.
        image_repeats: the rows are this many blocks of the same records (2 for chosen
            rows then rejected rows); ``pixel_values`` hold each record's images once.
        share_image_features: encode each image once and reuse the features (else the
            pixel values go through the model once per row).
        per_token: also return per-token log-probs and the answer mask.
        logits_start: with logits, the sequence position of their first column.
    """
    if isinstance(model_or_logits, torch.nn.Module) and isinstance(batch, dict) and "sequence_index" in batch:
        # a packed / shared-prompt batch (mllm.training.packing): one row per output sequence
        if per_token:
            raise ValueError("answer_logprobs: per_token is not available for packed batches")
        from mllm.training.packing import packed_answer_logprobs

        return packed_answer_logprobs(model_or_logits, batch, adapter=adapter,
                                      share_image_features=share_image_features)
    if isinstance(model_or_logits, torch.nn.Module):
        logits, start = _forward(model_or_logits, batch, adapter, image_repeats, share_image_features)
    else:
        logits = getattr(model_or_logits, "logits", model_or_logits)
        start = logits_start
    labels = batch["labels"] if isinstance(batch, dict) else batch
    return logprobs_from_logits(logits, labels, logits_start=start, per_token=per_token)
