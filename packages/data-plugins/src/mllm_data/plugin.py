"""Entry-point module: registers this distribution's components (specs only, no torch)."""

from __future__ import annotations

from mllm import hookimpl
from mllm.hookspecs import Register
from mllm.specs import ComponentSpec


@hookimpl(specname="mllm_register_datasets")
def register_easyvqa_dataset(register: Register) -> None:
    register(ComponentSpec(name="easyvqa", impl="mllm_data.easyvqa:EasyVQA", config="mllm_data.easyvqa:EasyVQAConfig",
                           description="easy-VQA questions (the easy-vqa package) as single-turn conversations"))
