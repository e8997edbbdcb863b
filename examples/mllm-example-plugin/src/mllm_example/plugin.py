"""Entry-point module: registers the example components (specs only, no torch)."""

from __future__ import annotations

from mllm import ComponentSpec, Register, hookimpl


@hookimpl
def mllm_register_datasets(register: Register) -> None:
    register(ComponentSpec(name="preference-jsonl", impl="mllm_example.data:PreferenceJsonl",
                           config="mllm_example.data:PreferenceJsonlConfig", aliases=("pref-jsonl",),
                           description="preference pairs (question, chosen, rejected) from a JSON Lines file"))


@hookimpl
def mllm_register_methods(register: Register) -> None:
    register(ComponentSpec(name="orpo", impl="mllm_example.orpo:ORPO", config="mllm_example.orpo:ORPOConfig",
                           description="ORPO: NLL on chosen + odds-ratio preference term; no reference model"))


@hookimpl
def mllm_register_benchmarks(register: Register) -> None:
    register(ComponentSpec(name="yes-no", impl="mllm_example.yesno:YesNo", config="mllm_example.yesno:YesNoConfig",
                           description="yes/no questions from a JSON Lines file: accuracy, yes-ratio"))
