"""The pluggy hook specifications of mllm: one hook per component kind.

Every hook receives a ``register`` callback; call it once per component with a
:class:`mllm.plugins.specs.ComponentSpec`. A plugin module (the value of an entry point in the
``mllm`` group) implements any subset of these hooks with :data:`mllm.hookimpl`::

    from mllm import hookimpl
    from mllm.plugins.specs import ComponentSpec

    @hookimpl
    def mllm_register_datasets(register):
        register(ComponentSpec(name="my-data", impl="my_pkg.data:MyData",
                               config="my_pkg.data:MyDataConfig"))

Plugin modules must not import torch, transformers or deepspeed: specs are strings and
the implementation is imported only when a pipeline names it.
"""

from __future__ import annotations

from typing import Callable

import pluggy

from mllm.plugins import kinds as _kinds
from mllm.plugins.specs import ComponentSpec

PROJECT_NAME = "mllm"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[[ComponentSpec], None]


@hookspec
def mllm_register_models(register: Register) -> None:
    """Register model adapters (load a checkpoint or build one from a config).

    The implementation satisfies :class:`mllm.interfaces.ModelAdapter`.
    Example: ``register(ComponentSpec(name="llava", impl="mllm.models.llava.adapter:LlavaAdapter",
    config="mllm.models.llava.adapter:LlavaModelConfig"))``.
    """


@hookspec
def mllm_register_datasets(register: Register) -> None:
    """Register datasets that turn a source into records.

    The implementation satisfies :class:`mllm.interfaces.Dataset`; its config class
    should subclass :class:`mllm.interfaces.DatasetConfig` to get the bad-row policy.
    Example: ``register(ComponentSpec(name="easyvqa", impl="mllm_data.easyvqa:EasyVQA",
    config="mllm_data.easyvqa:EasyVQAConfig"))``.
    """


@hookspec
def mllm_register_methods(register: Register) -> None:
    """Register alignment methods (SFT, DPO, ...) used by ``train`` stages.

    The implementation satisfies :class:`mllm.interfaces.Method`.
    Example: ``register(ComponentSpec(name="sft", impl="mllm_align.sft:SFT",
    config="mllm_align.sft:SFTConfig"))``.
    """


@hookspec
def mllm_register_benchmarks(register: Register) -> None:
    """Register benchmarks used by ``eval`` stages and ``mllm eval score``.

    The implementation satisfies :class:`mllm.interfaces.Benchmark`.
    Example: ``register(ComponentSpec(name="pope", impl="mllm_eval.pope:POPE",
    config="mllm_eval.pope:POPEConfig"))``.
    """


@hookspec
def mllm_register_judges(register: Register) -> None:
    """Register judges (text in, text out) that benchmarks and scoring can call.

    The implementation satisfies :class:`mllm.interfaces.Judge`.
    Example: ``register(ComponentSpec(name="openai", impl="mllm_eval.judges:OpenAIJudge",
    config="mllm_eval.judges:OpenAIJudgeConfig"))``.
    """


@hookspec
def mllm_register_stage_kinds(register: Register) -> None:
    """Register pipeline stage kinds (``train``, ``eval``, ``generate``, ...).

    The implementation satisfies :class:`mllm.interfaces.StageKind`; ``config`` names
    the pydantic model of the stage's YAML keys (a subclass of
    :class:`mllm.pipeline.config.StageConfig`).
    Example: ``register(ComponentSpec(name="train", impl="mllm.stages.train:TrainStage",
    config="mllm.stages.train:TrainStageConfig"))``.
    """


@hookspec
def mllm_register_score_rules(register: Register) -> None:
    """Register score rules: a ``generate`` stage's ``score: {rule: <name>, <its keys>}``.

    The implementation satisfies :class:`mllm.interfaces.ScoreRule` and is built as
    ``Rule(config)``; ``config`` names the pydantic model of the keys beside ``rule:``.
    A rule writes ``metadata.score`` (a number, ``None`` when unscored) and
    ``metadata.correct`` on every generated answer.
    Example: ``register(ComponentSpec(name="exact-match", impl="mllm.data.score_rules:ExactMatch",
    config="mllm.data.score_rules:ExactMatchConfig"))``.
    """


@hookspec
def mllm_register_transform_ops(register: Register) -> None:
    """Register transform ops: a ``transform`` stage's ``ops: [{op: <name>, <its keys>}, ...]``.

    The implementation satisfies :class:`mllm.interfaces.TransformOp` (built as
    ``Op(config)``; ``apply(records, context)`` returns the new records); ``config`` names
    the pydantic model of the keys beside ``op:``.
    Example: ``register(ComponentSpec(name="realign", impl="mllm_data.realign:Realign",
    config="mllm_data.realign:RealignConfig"))``.
    """


@hookspec
def mllm_register_pairings(register: Register) -> None:
    """Register pairings: how a train stage's ``data: {from: <stage>, pairs: <name>}`` turns
    an earlier stage's records into Preference pairs.

    The implementation satisfies :class:`mllm.interfaces.Pairing` (built as
    ``Pairing(config)``); ``pairs:`` is a name, or ``{name: ..., <its keys>}``.
    Example: ``register(ComponentSpec(name="wrong-vs-gold", impl="mllm.data.pairings:WrongVsGold",
    config="mllm.data.pairings:WrongVsGoldConfig"))``.
    """


@hookspec
def mllm_register_prompt_styles(register: Register) -> None:
    """Register prompt styles: how an ``eval`` stage puts each prompt to a model
    (``prompt_style: {name: <name>, models: [...], <its keys>}``).

    The implementation satisfies :class:`mllm.interfaces.PromptStyle` (built as
    ``Style(config)``): ``apply`` turns a prompt into what the model sees, ``clean`` an
    answer into what is scored.
    Example: ``register(ComponentSpec(name="instruction", impl="mllm.data.prompt_styles:Instruction",
    config="mllm.data.prompt_styles:InstructionConfig"))``.
    """


@hookspec
def mllm_register_text_corpora(register: Register) -> None:
    """Register text corpora: texts a tiny model's tokenizer is trained on
    (``model: {name: llava, init: tiny, tokenizer_corpus: <name>}``).

    The implementation satisfies :class:`mllm.interfaces.TextCorpus` (built as
    ``Corpus(config)``; ``texts()`` in a fixed order, so the tokenizer is deterministic).
    Example: ``register(ComponentSpec(name="easyvqa", impl="mllm_data.easyvqa:EasyVQACorpus"))``.
    """


# kind -> hook, kept here for code that imported it from this module; the table is mllm.plugins.kinds
HOOK_FOR_KIND = _kinds.HOOK_FOR_KIND
