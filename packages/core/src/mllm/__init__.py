"""mllm: align and evaluate LLaVA-family multimodal models from one YAML file.

This module is **the plugin API**: everything a plugin distribution may use from the core
is a name in :data:`__all__` (listed, one line each, in ``docs/api.md``); every other
module of ``mllm`` is internal and may change without notice. The test kit for plugin
authors is :mod:`mllm.testing` (its own ``__all__``).

Importing ``mllm`` is cheap and never imports torch: each name is imported from its
module the first time it is used (module ``__getattr__``, PEP 562). The records,
Protocols, config bases and errors are torch-free; the helpers that run models
(``answer_logprobs``, ``train_method``, ``SampleGenerator``) import torch when touched.

::

    from mllm import ComponentConfig, ComponentSpec, Preference, answer_logprobs, hookimpl
"""

from __future__ import annotations

import importlib
from typing import Any

from mllm import errors as _errors

__version__ = "0.1.0"

# name -> the module that defines it (the single place the public API is mapped)
_EXPORTS: dict[str, str] = {
    # plugin system
    "hookimpl": "mllm.plugins.hookspecs",
    "Register": "mllm.plugins.hookspecs",
    "ComponentSpec": "mllm.plugins.specs",
    "ComponentKind": "mllm.plugins.specs",
    "get_registry": "mllm.plugins.registry",
    # records
    "IMAGE_TOKEN": "mllm.records",
    "RECORD_KINDS": "mllm.records",
    "Conversation": "mllm.records",
    "EvalItem": "mllm.records",
    "Preference": "mllm.records",
    "Record": "mllm.records",
    "RecordKind": "mllm.records",
    "Turn": "mllm.records",
    # config bases
    "ComponentConfig": "mllm.interfaces",
    "DatasetConfig": "mllm.interfaces",
    "StageConfig": "mllm.pipeline.config",
    "ComponentRef": "mllm.pipeline.config",
    "ResolvedComponent": "mllm.pipeline.config",
    "TrainSettings": "mllm.training.settings",
    # the bad-row policy
    "DataReport": "mllm.data.badrows",
    "OnBadRow": "mllm.data.badrows",
    # Protocols (mllm.interfaces) and the contexts stages and methods get
    "AnswerMode": "mllm.interfaces",
    "Benchmark": "mllm.interfaces",
    "Dataset": "mllm.interfaces",
    "ImageEncoder": "mllm.interfaces",
    "Judge": "mllm.interfaces",
    "Method": "mllm.interfaces",
    "ModelAdapter": "mllm.interfaces",
    "ModelAdapterClass": "mllm.interfaces",
    "ModelHandle": "mllm.interfaces",
    "PromptEncoder": "mllm.interfaces",
    "StageKind": "mllm.interfaces",
    "ScoreRule": "mllm.interfaces",
    "TransformOp": "mllm.interfaces",
    "Pairing": "mllm.interfaces",
    "PromptStyle": "mllm.interfaces",
    "TextCorpus": "mllm.interfaces",
    "ComponentContext": "mllm.data.context",
    "StageContext": "mllm.pipeline.runner",
    "TrainContext": "mllm.pipeline.runner",
    # optional capabilities (mllm.interfaces)
    "ChoosesAnswerMode": "mllm.interfaces",
    "GroupsByLength": "mllm.interfaces",
    "HasAnswerBudget": "mllm.interfaces",
    "ChecksRows": "mllm.interfaces",
    "HasDataFiles": "mllm.interfaces",
    "HasExampleConfig": "mllm.interfaces",
    "HasExampleRecords": "mllm.interfaces",
    "HasPositionCaches": "mllm.interfaces",
    "ImageTokenCounts": "mllm.interfaces",
    "HasProjectorLr": "mllm.interfaces",
    "HasSourcePath": "mllm.interfaces",
    "HasTrainCallbacks": "mllm.interfaces",
    "RunsDistributed": "mllm.interfaces",
    "ScoresFromFiles": "mllm.interfaces",
    "RecordsProvenance": "mllm.interfaces",
    # helpers plugins need
    "ChatTemplate": "mllm.models.templates",
    "TemplateName": "mllm.models.templates",
    "get_template": "mllm.models.templates",
    "train_tokenizer": "mllm.models.tokenizer",
    "corpus_texts": "mllm.models.tokenizer",
    "AnswerLogprobs": "mllm.training.logprobs",
    "answer_logprobs": "mllm.training.logprobs",
    "pack_sequences": "mllm.training.packing",
    "pack_pairs": "mllm.training.packing",
    "packed_model_inputs": "mllm.training.packing",
    "layout_support": "mllm.training.packing",
    "train_method": "mllm.training.trainer",
    "Prompt": "mllm.generation.sampling",
    "SampleGenerator": "mllm.generation.sampling",
    "generated_records": "mllm.stages.generate",
    "KeyedJsonlCache": "mllm.generation.cache",
    "AnswerRule": "mllm.data.score_rules",
    "conversations_only": "mllm.data.ops",
    "rewrite_answers": "mllm.data.ops",
}

# errors: every user-facing error class of mllm.errors (stdlib only, so importing it here is free)
_EXPORTS.update({name: "mllm.errors" for name in _errors.__all__ if name[0].isupper() and not name.isupper()})

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mllm' has no attribute {name!r}; the plugin API is mllm.__all__ (docs/api.md)")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

