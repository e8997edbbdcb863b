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


HOOK_FOR_KIND = {
    "model": "mllm_register_models",
    "dataset": "mllm_register_datasets",
    "method": "mllm_register_methods",
    "benchmark": "mllm_register_benchmarks",
    "judge": "mllm_register_judges",
    "stage_kind": "mllm_register_stage_kinds",
}
