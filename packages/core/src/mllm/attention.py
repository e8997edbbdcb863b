"""Which attention implementation to ask transformers for."""

from __future__ import annotations

import importlib.util


def pick_attn_implementation() -> str:
    """``flash_attention_2`` when flash-attn is installed and a GPU is present, else ``sdpa``."""
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"
