"""Entry-point module: registers this distribution's model adapters (specs only, no torch)."""

from __future__ import annotations

from mllm import ComponentSpec, Register, hookimpl


@hookimpl
def mllm_register_models(register: Register) -> None:
    register(ComponentSpec(
        name="llava-next", impl="mllm_models.adapter:LlavaNextAdapter", config="mllm_models.config:LlavaNextModelConfig",
        description="LLaVA-NeXT (transformers LlavaNextForConditionalGeneration, any-resolution tiles at one grid): "
                    "a local folder or a tiny model",
    ))
    register(ComponentSpec(
        name="idefics3", impl="mllm_models.adapter:Idefics3Adapter", config="mllm_models.config:Idefics3ModelConfig",
        description="Idefics3 / SmolVLM-style (transformers Idefics3ForConditionalGeneration, one global image per "
                    "<image>): a local folder or a tiny model",
    ))
    register(ComponentSpec(
        name="llava-onevision", impl="mllm_models.adapter:LlavaOnevisionAdapter",
        config="mllm_models.config:LlavaOnevisionModelConfig",
        description="LLaVA-OneVision (transformers LlavaOnevisionForConditionalGeneration, SigLIP tiles at one grid, "
                    "ChatML; composed processor): a local folder or a tiny model",
    ))
    register(ComponentSpec(
        name="smolvlm", impl="mllm_models.adapter:SmolVLMAdapter", config="mllm_models.config:Idefics3ModelConfig",
        description="SmolVLM (transformers SmolVLMForConditionalGeneration, Idefics3's layout, one global image per "
                    "<image>; composed processor): a local folder or a tiny model",
    ))
    register(ComponentSpec(
        name="qwen2-vl", impl="mllm_models.adapter:Qwen2VLAdapter", config="mllm_models.config:Qwen2VLModelConfig",
        description="Qwen2-VL (transformers Qwen2VLForConditionalGeneration, one resolution per model, "
                    "image_grid_thw, M-RoPE; composed processor): a local folder or a tiny model",
    ))
    register(ComponentSpec(
        name="qwen2.5-vl", impl="mllm_models.adapter:Qwen25VLAdapter", config="mllm_models.config:Qwen2VLModelConfig",
        description="Qwen2.5-VL (transformers Qwen2_5_VLForConditionalGeneration, one resolution per model, "
                    "image_grid_thw, M-RoPE; composed processor): a local folder or a tiny model",
    ))
