"""Which attention implementation to ask transformers for.

``flash_attention_2`` when the flash-attn package is installed, a CUDA GPU is present and
the model's weights are half precision (bf16/fp16: flash-attn has no fp32 kernels, and an
fp32 model evaluated without autocast would fail); ``sdpa`` otherwise (PyTorch's fused
attention, which also picks flash kernels on GPUs by itself). ``MLLM_ATTN_IMPLEMENTATION``
(``sdpa``, ``eager``, ``flash_attention_2``) overrides the choice.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

_HALF = {"bfloat16", "float16", "bf16", "fp16", "torch.bfloat16", "torch.float16"}


def pick_attn_implementation(dtype: Any = None) -> str:
    """``flash_attention_2`` for half-precision weights on a GPU with flash-attn installed, else ``sdpa``.

    ``dtype``: the weights' dtype (a ``torch.dtype`` or a name); ``None`` means the
    default (fp32), which never picks flash-attn."""
    forced = os.environ.get("MLLM_ATTN_IMPLEMENTATION")
    if forced:
        return forced
    import torch

    half = dtype is not None and str(dtype) in _HALF
    if half and torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"
