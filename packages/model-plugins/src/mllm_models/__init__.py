"""mllm-models: model families beyond the core's LLaVA-1.5, as mllm model plugins.

One generic adapter over transformers' vision-language classes
(:mod:`mllm_models.adapter`) with a small spec per family (:mod:`mllm_models.families`):
LLaVA-NeXT (``llava-next``), Idefics3 (``idefics3``), SmolVLM (``smolvlm``) and
LLaVA-OneVision (``llava-onevision``), Qwen2-VL (``qwen2-vl``) and Qwen2.5-VL (``qwen2.5-vl``). What other
distributions may import is ``__all__`` (loaded on first use, so the plugin stays light).
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "VisionLanguageAdapter": "mllm_models.adapter",
    "LlavaNextAdapter": "mllm_models.adapter",
    "Idefics3Adapter": "mllm_models.adapter",
    "LlavaOnevisionAdapter": "mllm_models.adapter",
    "SmolVLMAdapter": "mllm_models.adapter",
    "Qwen2VLAdapter": "mllm_models.adapter",
    "Qwen25VLAdapter": "mllm_models.adapter",
    "Qwen2VLModelConfig": "mllm_models.config",
    "LlavaOnevisionModelConfig": "mllm_models.config",
    "VisionLanguageModelConfig": "mllm_models.config",
    "LlavaNextModelConfig": "mllm_models.config",
    "Idefics3ModelConfig": "mllm_models.config",
    "chat_template_jinja": "mllm_models.templates",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mllm_models' has no attribute {name!r}; its public names are mllm_models.__all__")
