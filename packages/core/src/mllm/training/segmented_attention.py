"""Attention over packed rows block by block, so no row pays for the full square.

A packed row (:mod:`mllm.training.packing`) holds several sequences; a 4D block mask keeps
them apart, but ``sdpa`` with an arbitrary mask computes every query against every key of
the row and then discards most of them: a row twice as long costs four times the
attention, so packing saved padding in the linear layers and lost it again in attention
(on a CPU, and on a GPU without the flash-attn package). Here each sequence's queries meet
only the keys they may see, one ``scaled_dot_product_attention`` call per block:

- a sequence (SFT, or one side of a pair): its own tokens, causal (``is_causal``);
- a shared-prompt pair: the prompt and the chosen answer as one causal block; the rejected
  answer's queries against the prompt's keys followed by its own (all of the prompt,
  causal over itself), never the chosen ones.

The result equals the block-mask forward (same softmax over the same keys; tested to
1e-5, forward and backward). Padding positions get zeros: no label is ever read there.

It is registered with transformers' ``AttentionInterface`` as :data:`IMPLEMENTATION` and
set on a model's language model by :func:`use_segmented_attention` (the first packed
forward through ``packed_model_inputs`` does it). Without the layout keyword, that is in
every unpacked forward (evaluation, generation, a padded batch), it *is* transformers'
``sdpa`` function, so nothing else changes; the name is not saved with the model
(transformers leaves ``_attn_implementation`` out of ``config.json``).
``MLLM_PACKED_ATTENTION=mask`` keeps the 4D block mask instead (benchmarks compare both).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

IMPLEMENTATION = "mllm_segmented_sdpa"
#: the keyword a packed forward passes down to the attention layers
LAYOUT_KEYWORD = "mllm_segments"
ENV_SWITCH = "MLLM_PACKED_ATTENTION"


@dataclass(frozen=True)
class Block:
    """Queries ``[start, end)`` of ``row``; with ``prefix`` (a ``[start, end)`` of earlier keys),
    they see all of the prefix and, causally, themselves (a rejected answer after its prompt)."""

    row: int
    start: int
    end: int
    prefix: tuple[int, int] | None = None


def blocks_of(doc_ids: torch.Tensor, branch_ids: torch.Tensor) -> tuple[Block, ...]:
    """The attention blocks of a packed batch (``doc_ids`` -1 on padding; branch 0 prompt,
    1 chosen, 2 rejected), as :func:`mllm.training.packing.block_attention_mask` allows."""
    out: list[Block] = []
    docs, branches = doc_ids.tolist(), branch_ids.tolist()
    for row, (row_docs, row_branches) in enumerate(zip(docs, branches, strict=True)):
        position, width = 0, len(row_docs)
        while position < width:
            doc = row_docs[position]
            end = position
            while end < width and row_docs[end] == doc:
                end += 1
            if doc >= 0:
                out.extend(_doc_blocks(row, position, end, row_branches))
            position = end
    return tuple(out)


def _doc_blocks(row: int, start: int, end: int, branches: list[int]) -> list[Block]:
    try:
        rejected = branches.index(2, start, end)
    except ValueError:
        return [Block(row, start, end)]
    prompt_end = start
    while prompt_end < rejected and branches[prompt_end] == 0:
        prompt_end += 1
    blocks = [Block(row, start, rejected)]
    blocks.append(Block(row, rejected, end, prefix=(start, prompt_end) if prompt_end > start else None))
    return blocks


def segmented_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention signature (``query`` ``[B, H, T, D]``, output ``[B, T, H, D]``):
    block by block when the forward carries the layout, transformers' ``sdpa`` otherwise."""
    blocks = kwargs.pop(LAYOUT_KEYWORD, None)
    if blocks is None or query.shape[2] != key.shape[2]:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    options: dict[str, Any] = {"scale": scaling, "dropout_p": dropout if module.training else 0.0}
    if key.shape[1] != query.shape[1]:
        options["enable_gqa"] = True
    out = query.new_zeros(query.shape)
    for block in blocks:
        q = query[block.row:block.row + 1, :, block.start:block.end]
        k = key[block.row:block.row + 1, :, block.start:block.end]
        v = value[block.row:block.row + 1, :, block.start:block.end]
        if block.prefix is None:
            result = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, **options)
        else:
            first, last = block.prefix
            k = torch.cat([key[block.row:block.row + 1, :, first:last], k], dim=2)
            v = torch.cat([value[block.row:block.row + 1, :, first:last], v], dim=2)
            length = block.end - block.start
            mask = torch.ones(length, last - first + length, dtype=torch.bool, device=query.device)
            mask[:, last - first:] = torch.ones(length, length, dtype=torch.bool, device=query.device).tril()
            result = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, **options)
        out[block.row, :, block.start:block.end] = result[0]
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make :data:`IMPLEMENTATION` known to transformers (idempotent); its mask is sdpa's."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(IMPLEMENTATION, segmented_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, sdpa_mask)


def wanted() -> bool:
    """Whether packed sdpa forwards go block by block (``MLLM_PACKED_ATTENTION`` not ``mask``)."""
    return os.environ.get(ENV_SWITCH, "segmented").strip().lower() != "mask"


def use_segmented_attention(model: Any) -> bool:
    """Switch ``model``'s language model from ``sdpa`` to :data:`IMPLEMENTATION` (idempotent);
    ``False`` (and nothing changed) where it is not on sdpa or ``MLLM_PACKED_ATTENTION=mask``."""
    config = getattr(model, "config", None)
    target = getattr(config, "text_config", None) or config
    current = getattr(target, "_attn_implementation", None)
    if current == IMPLEMENTATION:
        return True
    if current != "sdpa" or not wanted():
        return False
    register()
    target._attn_implementation = IMPLEMENTATION
    return True
