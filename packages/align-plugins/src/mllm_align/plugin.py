"""Entry-point module: registers this distribution's components (specs only, no torch)."""

from __future__ import annotations

from mllm import ComponentSpec, Register, hookimpl


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
        name="steerlm", impl="mllm_align.steerlm.method:SteerLM", config="mllm_align.steerlm.method:SteerLMConfig",
        description="SteerLM: SFT conditioned on each candidate's attributes (mllm-dpo's 5-point Likert text)",
    ))


# -- the SteerLM / attribute-scoring family: a score rule, a prompt style, a pairing, the describe task --


@hookimpl(specname="mllm_register_score_rules")
def register_attribute_rule(register: Register) -> None:
    register(ComponentSpec(
        name="attributes", impl="mllm_align.steerlm.rule:AttributeRule",
        config="mllm_align.steerlm.rule:AttributeRuleConfig",
        description="SteerLM's five attributes 0-4 from rules (rules: description) or a judge; score = the "
                    "aggregate (Helpfulness + Correctness + Coherence); a bad judge reply leaves it unscored",
    ))


@hookimpl(specname="mllm_register_prompt_styles")
def register_steer_style(register: Register) -> None:
    register(ComponentSpec(
        name="steerlm", impl="mllm_align.steerlm.style:SteerLMStyle", config="mllm_align.steerlm.style:SteerLMStyleConfig",
        description="SteerLM's attribute-conditioned prompt (an eval stage's steer:); echoed attribute lines "
                    "stripped from answers",
    ))


@hookimpl(specname="mllm_register_pairings")
def register_best_vs_worse(register: Register) -> None:
    register(ComponentSpec(
        name="best-vs-worse", impl="mllm_align.candidates:BestVsWorse", config="mllm_align.candidates:BestVsWorseConfig",
        description="chosen = a prompt's best scored candidate, rejected = one at least min_gap (2) points lower",
    ))


@hookimpl(specname="mllm_register_datasets")
def register_describe_dataset(register: Register) -> None:
    register(ComponentSpec(
        name="easyvqa-describe", impl="mllm_align.steerlm.describe_data:EasyVQADescribe",
        config="mllm_align.steerlm.describe_data:EasyVQADescribeConfig",
        description="easy-VQA images described in one templated sentence (shape and colour); "
                    "optionally with the images' questions",
    ))


@hookimpl(specname="mllm_register_benchmarks")
def register_describe_benchmark(register: Register) -> None:
    register(ComponentSpec(
        name="easyvqa-describe", impl="mllm_align.steerlm.describe_benchmark:EasyVQADescribeBenchmark",
        config="mllm_align.steerlm.describe_benchmark:EasyVQADescribeBenchConfig",
        description="describe easy-VQA test images: shape/colour named, rule attributes (SteerLM)",
    ))
