"""Entry-point module: registers this distribution's components (specs only, no torch)."""

from __future__ import annotations

from mllm import hookimpl
from mllm.hookspecs import Register
from mllm.specs import ComponentSpec


@hookimpl
def mllm_register_methods(register: Register) -> None:
    register(ComponentSpec(
        name="sft", impl="mllm_align.sft:SFT", config="mllm_align.sft:SFTConfig",
        description="supervised fine-tuning (LLaVA instruction tuning): full, LoRA or QLoRA; labels on answers only",
    ))
