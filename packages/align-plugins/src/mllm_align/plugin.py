"""Entry-point module: registers this distribution's components (specs only, no torch)."""

from __future__ import annotations

from mllm import hookimpl
from mllm.plugins.hookspecs import Register
from mllm.plugins.specs import ComponentSpec


@hookimpl
def mllm_register_methods(register: Register) -> None:
    register(ComponentSpec(
        name="sft", impl="mllm_align.sft:SFT", config="mllm_align.sft:SFTConfig",
        description="supervised fine-tuning (LLaVA instruction tuning): full, LoRA or QLoRA; labels on answers only",
    ))


@hookimpl(specname="mllm_register_methods")
def register_preference_methods(register: Register) -> None:
    register(ComponentSpec(
        name="dpo", impl="mllm_align.dpo:DPO", config="mllm_align.dpo:DPOConfig",
        description="direct preference optimization (sigmoid/cDPO, ipo, hinge, robust; optional SFT term); "
                    "reference log-probs precomputed, one vision pass per pair; full or LoRA",
    ))
    register(ComponentSpec(
        name="hadpo", impl="mllm_align.hadpo:HADPO", config="mllm_align.hadpo:HADPOConfig",
        description="HA-DPO: hallucination-aware DPO (the dpo loss, HA-DPO's LoRA recipe, pairs resampled per epoch)",
    ))


@hookimpl(specname="mllm_register_datasets")
def register_hadpo_dataset(register: Register) -> None:
    register(ComponentSpec(
        name="hadpo", impl="mllm_align.hadpo:HADPOData", config="mllm_align.hadpo:HADPODataConfig",
        description="HA-DPO's desc_data.json and pope_data.json with Visual Genome images, as preference pairs",
    ))


@hookimpl(specname="mllm_register_methods")
def register_attribute_methods(register: Register) -> None:
    """Methods on attribute-scored candidates (the mllm-dpo comparison)."""
    register(ComponentSpec(
        name="rejection-sampling", impl="mllm_align.rejection_sampling:RejectionSampling",
        config="mllm_align.rejection_sampling:RejectionSamplingConfig",
        description="SFT on the best attribute-scored candidate per prompt (ties, min_score); rounds: k repeats "
                    "generate-score-train",
    ))
    register(ComponentSpec(
        name="steerlm", impl="mllm_align.steerlm:SteerLM", config="mllm_align.steerlm:SteerLMConfig",
        description="SteerLM: SFT conditioned on each candidate's attributes (mllm-dpo's 5-point Likert text)",
    ))
