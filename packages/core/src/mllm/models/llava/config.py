"""The config of the built-in LLaVA adapter (torch-free, so validating a pipeline is fast)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from mllm.interfaces import ComponentConfig

TINY_FIELDS = (
    "image_size", "patch_size", "vision_hidden_size", "vision_layers", "vision_intermediate_size",
    "text_hidden_size", "text_layers", "text_intermediate_size", "heads", "vocab_size", "projector",
    "vision_feature_layer", "vision_feature_select_strategy", "tokenizer_corpus",
)
# Options that describe preprocessing; with ``path:`` an explicit value overrides the folder's.
PREPROCESSING_FIELDS = ("template", "image_aspect_ratio", "max_length")


class LlavaModelConfig(ComponentConfig):
    """``model: {name: llava, ...}``: a local folder (``path``) or a tiny model (``init: tiny``)."""

    # tokenizer_corpus names a text corpus: the pipeline loader checks the name
    component_fields: ClassVar[dict[str, str]] = {"tokenizer_corpus": "text_corpus"}

    init: Literal["tiny"] | None = Field("tiny", description="build a small model from the sizes below; "
                                                              "exactly one of init and path")
    path: str | None = Field(None, description="a save_pretrained LLaVA folder (llava-hf layout, or one mllm saved)")
    template: Literal["llava-1.5", "plain"] = Field("llava-1.5", description="chat template: llava-1.5 "
                                                   "(USER: <image>\\n... ASSISTANT:) or plain (LLaVA stage-1)")
    image_aspect_ratio: Literal["pad", "resize"] = Field(
        "pad", description="pad: pad to a square with the image mean colour (LLaVA-1.5); resize: stretch to the square size")
    max_length: int = Field(512, ge=16, description="longest training sequence in tokens, image tokens included")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype")
    trust_remote_code: bool = Field(False, description="run Python code shipped in the model folder (auto_map); "
                                                       "only for folders you trust")
    # tiny sizes
    image_size: int = Field(64, ge=8, description="tiny: input image side (easy-VQA images are 64x64)")
    patch_size: int = Field(8, ge=1, description="tiny: vision patch side; (image_size/patch_size)^2 image tokens")
    vision_hidden_size: int = Field(64, ge=8, description="tiny: CLIP vision width")
    vision_layers: int = Field(2, ge=1, description="tiny: CLIP vision layers")
    vision_intermediate_size: int = Field(256, ge=8, description="tiny: CLIP MLP width")
    text_hidden_size: int = Field(128, ge=8, description="tiny: Llama width")
    text_layers: int = Field(2, ge=1, description="tiny: Llama layers")
    text_intermediate_size: int = Field(352, ge=8, description="tiny: Llama MLP width")
    heads: int = Field(4, ge=1, description="tiny: attention heads of both towers")
    tokenizer_corpus: str | None = Field(None, description="tiny: a text corpus (kind text_corpus, e.g. easyvqa "
                                                           "from mllm-data) whose texts the tokenizer is trained on "
                                                           "after the built-in template text; none: template text only")
    vocab_size: int = Field(1000, ge=260, description="tiny: BPE target size; the model gets len(tokenizer), "
                                                      "which may be smaller when the corpus runs out of merges")
    projector: Literal["linear", "mlp2x_gelu"] = Field("mlp2x_gelu", description="tiny: vision-to-text projector")
    vision_feature_layer: int = Field(-1, description="tiny: vision hidden state fed to the projector "
                                                      "(LLaVA-1.5 uses -2 with a pretrained CLIP; -1 suits a tiny tower trained from scratch)")
    vision_feature_select_strategy: Literal["default", "full"] = Field(
        "default", description="tiny: default drops the CLS token (LLaVA), full keeps it")

    @model_validator(mode="before")
    @classmethod
    def _path_means_no_init(cls, data: Any) -> Any:
        # `init` defaults to tiny; naming only `path` means "load", not "both".
        if isinstance(data, dict) and data.get("path") is not None and "init" not in data:
            data = {**data, "init": None}
        return data

    @model_validator(mode="after")
    def _exactly_one_source(self) -> LlavaModelConfig:
        if self.init is not None and self.path is not None:
            raise ValueError(f"give either init: {self.init} (build a small model) or path: {self.path} "
                             "(load a folder), not both")
        if self.init is None and self.path is None:
            raise ValueError("give init: tiny (build a small model) or path: <folder> (load a saved LLaVA)")
        if self.path is not None:
            stray = sorted(set(TINY_FIELDS) & self.model_fields_set)
            if stray:
                raise ValueError(f"{', '.join(stray)} only apply to init: tiny; a model loaded from path keeps its own sizes")
        if self.init == "tiny":
            if self.image_size % self.patch_size:
                raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
            for width in ("vision_hidden_size", "text_hidden_size"):
                if getattr(self, width) % self.heads:
                    raise ValueError(f"{width} {getattr(self, width)} is not a multiple of heads {self.heads}")
        return self
