"""The component kinds, in one table: kind -> hook -> Protocol.

Everything a pipeline names is a component of one of these kinds, registered through the
kind's hook and resolved by the registry the same way ("did you mean", ``dist:name``,
aliases, ``mllm plugins``). The registry, the hook specifications' meta-tests and the
conformance kit read this table; adding a kind is one row here, one hook in
:mod:`mllm.plugins.hookspecs` and one Protocol in :mod:`mllm.interfaces`.

Protocols are named as strings so that importing the plugin system imports nothing else.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

ComponentKind = Literal["model", "dataset", "method", "benchmark", "judge", "stage_kind",
                        "score_rule", "transform_op", "pairing", "prompt_style", "text_corpus"]


@dataclass(frozen=True)
class Kind:
    """One component kind: its name, the hook that registers it, the Protocol it satisfies,
    and where a pipeline names it."""

    name: ComponentKind
    hook: str
    protocol: str  # attribute of mllm.interfaces
    named_by: str

    def load_protocol(self) -> type:
        """The Protocol class (imports :mod:`mllm.interfaces`)."""
        return getattr(importlib.import_module("mllm.interfaces"), self.protocol)


KINDS: tuple[Kind, ...] = (
    Kind("model", "mllm_register_models", "ModelAdapter", "model: {name: ...}"),
    Kind("dataset", "mllm_register_datasets", "Dataset", "data: {name: ...}"),
    Kind("method", "mllm_register_methods", "Method", "a train stage's method: {name: ...}"),
    Kind("benchmark", "mllm_register_benchmarks", "Benchmark", "an eval stage's benchmarks: [{name: ...}]"),
    Kind("judge", "mllm_register_judges", "Judge", "judge: {name: ...} of benchmarks, rules and ops"),
    Kind("stage_kind", "mllm_register_stage_kinds", "StageKind", "a stage's kind: ..."),
    Kind("score_rule", "mllm_register_score_rules", "ScoreRule", "a generate stage's score: {rule: ...}"),
    Kind("transform_op", "mllm_register_transform_ops", "TransformOp", "a transform stage's ops: [{op: ...}]"),
    Kind("pairing", "mllm_register_pairings", "Pairing", "a train stage's data: {from: <stage>, pairs: ...}"),
    Kind("prompt_style", "mllm_register_prompt_styles", "PromptStyle",
         "an eval stage's prompt_style: {name: ...} (steer: {...} is the steerlm style)"),
    Kind("text_corpus", "mllm_register_text_corpora", "TextCorpus",
         "the tiny model's tokenizer_corpus: <name>"),
)

KIND_BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}
COMPONENT_KINDS: tuple[ComponentKind, ...] = tuple(kind.name for kind in KINDS)
HOOK_FOR_KIND: dict[str, str] = {kind.name: kind.hook for kind in KINDS}
