"""How a method lays its batches out: padded rows, packed rows, shared-prompt pairs.

The ``train:`` keys ``packing`` and ``shared_prompt`` ask for them; :func:`choose_layout`
keeps what the adapter's model can do (:func:`mllm.training.packing.layout_support`) and
logs why a part is off. The rows themselves come from ``mllm.pack_sequences`` /
``mllm.pack_pairs`` (the core's ``mllm.training.packing``).
"""

from __future__ import annotations

import logging
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


def choose_layout(adapter: Any, *, packing: bool, shared_prompt: bool, logger: Any = None,
                  asked: bool = True) -> Layout:
    """The layout asked for, less what the adapter's model cannot do (logged with the reason:
    a warning when the settings asked for it, an info line when it was only the default)."""
    from mllm import layout_support

    shared, packed, one_row, reason = layout_support(adapter, shared_prompt=shared_prompt, packing=packing)
    if reason:
        (logger or _LOG).log(logging.WARNING if asked else logging.INFO, "train layout: %s", reason)
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
    packing = bool(getattr(train, "packing", False))
    shared_prompt = preference and bool(getattr(train, "shared_prompt", False))
    # shared_prompt is on by default: where a model cannot take it, say so without alarm
    # unless the pipeline asked for it (or for packing) itself
    given = getattr(train, "model_fields_set", set())
    asked = packing or "shared_prompt" in given
    return choose_layout(adapter, packing=packing, shared_prompt=shared_prompt,
                         logger=getattr(context, "logger", None), asked=asked)
