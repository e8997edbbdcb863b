"""How a method lays its batches out: padded rows, packed rows, shared-prompt pairs.

The ``train:`` keys ``packing`` and ``shared_prompt`` ask for them; :func:`choose_layout`
keeps what the adapter's model can do (:func:`mllm.training.packing.layout_support`) and
logs why a part is off. The row machinery itself is :mod:`mllm.training.packing`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_LOG = logging.getLogger("mllm.align.layout")


@dataclass
class Layout:
    """``packing``: several units per row; ``shared_prompt``: a pair is one unit with its
    prompt once; ``one_row``: everything in one row (flash-attention's varlen path)."""

    packing: bool = False
    shared_prompt: bool = False
    one_row: bool = False

    @property
    def active(self) -> bool:
        return self.packing or self.shared_prompt


def choose_layout(adapter: Any, *, packing: bool, shared_prompt: bool, logger: Any = None) -> Layout:
    """The layout asked for, less what the adapter's model cannot do (logged with the reason)."""
    from mllm.training.packing import VARLEN_IMPLEMENTATIONS, attention_implementation, layout_support

    shared, packed, reason = layout_support(adapter, shared_prompt=shared_prompt, packing=packing)
    if reason:
        (logger or _LOG).warning("train layout: %s", reason)
    one_row = packed and attention_implementation(getattr(adapter, "model", None)) in VARLEN_IMPLEMENTATIONS
    layout = Layout(packing=packed, shared_prompt=shared, one_row=one_row)
    if layout.active:
        (logger or _LOG).info("train layout: packing %s, shared prompt %s%s", "on" if packed else "off",
                              "on" if shared else "off", " (one row, varlen attention)" if one_row else "")
    return layout


def layout_from_context(adapter: Any, context: Any, *, preference: bool) -> Layout:
    """The layout a train stage's ``train:`` settings ask for (plain rows when the context has
    none, e.g. a method driven by hand)."""
    train = getattr(context, "train", None)
    if train is None:
        return Layout()
    return choose_layout(adapter, packing=bool(getattr(train, "packing", False)),
                         shared_prompt=preference and bool(getattr(train, "shared_prompt", False)),
                         logger=getattr(context, "logger", None))


def sequence_units(encoded: Sequence[dict[str, Sequence[int]]], image_counts: Sequence[int]) -> list[Any]:
    """One unit per sequence (SFT); images numbered in record order."""
    from mllm.training.packing import single_unit

    units, first = [], 0
    for i, (item, count) in enumerate(zip(encoded, image_counts, strict=True)):
        units.append(single_unit(item, i, range(first, first + count)))
        first += count
    return units


def pair_units(pairs: Sequence[tuple[dict[str, Sequence[int]], dict[str, Sequence[int]]]],
               image_counts: Sequence[int], prompt_lengths: Sequence[int], *, shared_prompt: bool) -> list[Any]:
    """One unit per pair: output rows ``i`` (chosen) and ``n + i`` (rejected)."""
    from mllm.training.packing import pair_unit, shared_prompt_unit

    n, units, first = len(pairs), [], 0
    for i, ((chosen, rejected), count, prompt_length) in enumerate(
            zip(pairs, image_counts, prompt_lengths, strict=True)):
        images = range(first, first + count)
        if shared_prompt:
            units.append(shared_prompt_unit(chosen, rejected, (i, n + i), images, prompt_length=prompt_length))
        else:
            units.append(pair_unit(chosen, rejected, (i, n + i), images))
        first += count
    return units
