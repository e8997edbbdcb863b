"""mllm-align: mllm plugins for alignment methods (SFT, DPO, HA-DPO, rejection sampling, SteerLM).

What other distributions may import from it is ``__all__`` (imported on first use, so
loading the plugin stays light), always as ``from mllm_align import <name>``; every other
module and name is internal. It offers what a new method builds on:

- ``TrainableConfig`` and ``prepare_trainable``: the freeze / LoRA / QLoRA switches of
  LLaVA's recipe and applying them to an adapter;
- ``pad_encoded`` and ``load_batch_images``: padded batches of encoded sequences and a
  batch's ``pixel_values``;
- ``SFT`` / ``SFTConfig`` and ``DPO`` / ``DPOConfig`` with ``dpo_losses`` (sigmoid, IPO,
  hinge, robust), to subclass or compose (answer log-probs come from ``mllm.answer_logprobs``).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_PUBLIC = {
    "DPO": "mllm_align.dpo",
    "DPOConfig": "mllm_align.dpo",
    "SFT": "mllm_align.sft",
    "SFTConfig": "mllm_align.sft",
    "TrainableConfig": "mllm_align.common",
    "dpo_losses": "mllm_align.dpo",
    "load_batch_images": "mllm_align.common",
    "pad_encoded": "mllm_align.common",
    "prepare_trainable": "mllm_align.common",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mllm_align' has no attribute {name!r}; its public names are mllm_align.__all__")
