"""Configs of the model families (torch-free, so validating a pipeline stays fast).

Every family takes the same source keys as the core's ``llava``: exactly one of
``init: tiny`` (build a small model from the sizes below, a tokenizer trained on the spot)
and ``path:`` (a local ``save_pretrained`` folder). A hub id given as ``path`` (``owner/name``
that is no folder here) is a one-line error saying how to download it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from mllm import ComponentConfig
from pydantic import Field, field_validator, model_serializer, model_validator

# Options of the tiny model; with ``path:`` the folder's own sizes apply.
TINY_FIELDS = (
    "image_size", "patch_size", "vision_hidden_size", "vision_layers", "vision_intermediate_size",
    "text_hidden_size", "text_layers", "text_intermediate_size", "heads", "vocab_size", "tokenizer_corpus",
    "scale_factor",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_id_problem(path: str) -> str | None:
    """The download hint when ``path`` is no folder here but reads as a Hugging Face hub id."""
    if Path(path).expanduser().exists() or not _HUB_ID.match(path):
        return None
    folder = path.rsplit("/", 1)[-1]
    return (f"path {path!r} is not a folder here but looks like a Hugging Face hub id; mllm reads local folders: "
            f"download it with `hf download {path} --local-dir models/{folder}` and set path: models/{folder}")


class VisionLanguageModelConfig(ComponentConfig):
    """``model: {name: <family>, ...}``: a local folder (``path``) or a tiny model (``init: tiny``)."""

    component_fields: ClassVar[dict[str, str]] = {"tokenizer_corpus": "text_corpus"}
    tiny_fields: ClassVar[tuple[str, ...]] = TINY_FIELDS

    init: Literal["tiny"] | None = Field("tiny", description="build a small model from the sizes below; "
                                                              "exactly one of init and path")
    path: str | None = Field(None, description="a local save_pretrained folder of this family (downloaded, or one "
                                               "mllm saved); hub ids are not fetched")
    max_length: int = Field(512, ge=16, description="longest training sequence in tokens, image tokens included")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype")
    trust_remote_code: bool = Field(False, description="run Python code shipped in the model folder (auto_map); "
                                                       "only for folders you trust")
    # tiny sizes
    image_size: int = Field(32, ge=8, description="tiny: the vision tower's input side")
    patch_size: int = Field(8, ge=1, description="tiny: vision patch side")
    vision_hidden_size: int = Field(32, ge=8, description="tiny: vision width")
    vision_layers: int = Field(1, ge=1, description="tiny: vision layers")
    vision_intermediate_size: int = Field(64, ge=8, description="tiny: vision MLP width")
    text_hidden_size: int = Field(64, ge=8, description="tiny: language model width")
    text_layers: int = Field(2, ge=1, description="tiny: language model layers")
    text_intermediate_size: int = Field(128, ge=8, description="tiny: language model MLP width")
    heads: int = Field(2, ge=1, description="tiny: attention heads of both towers")
    tokenizer_corpus: str | None = Field(None, description="tiny: a text corpus (kind text_corpus, e.g. easyvqa) "
                                                           "the tokenizer is trained on after the template text")
    vocab_size: int = Field(600, ge=260, description="tiny: BPE target size (the model gets len(tokenizer))")

    @field_validator("path")
    @classmethod
    def _not_a_hub_id(cls, value: str | None) -> str | None:
        if value is not None and (problem := hub_id_problem(value)):
            raise ValueError(problem)
        return value

    @model_validator(mode="before")
    @classmethod
    def _path_means_no_init(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("path") is not None and "init" not in data:
            data = {**data, "init": None}
        return data

    @model_validator(mode="after")
    def _exactly_one_source(self) -> VisionLanguageModelConfig:
        if self.init is not None and self.path is not None:
            raise ValueError(f"give either init: {self.init} (build a small model) or path: {self.path} "
                             "(load a folder), not both")
        if self.init is None and self.path is None:
            raise ValueError("give init: tiny (build a small model) or path: <folder> (load a saved model)")
        if self.path is not None:
            stray = sorted(set(self.tiny_fields) & self.model_fields_set)
            if stray:
                raise ValueError(f"{', '.join(stray)} only apply to init: tiny; a model loaded from path keeps its own sizes")
        if self.init == "tiny":
            if self.image_size % self.patch_size:
                raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
            for width in ("vision_hidden_size", "text_hidden_size"):
                if getattr(self, width) % self.heads:
                    raise ValueError(f"{width} {getattr(self, width)} is not a multiple of heads {self.heads}")
        return self


class LlavaNextModelConfig(VisionLanguageModelConfig):
    """LLaVA-NeXT (``LlavaNextForConditionalGeneration``): any-resolution tiles at one configured grid,
    or (``dynamic_resolution: true``) each image's own grid from the model's ``image_grid_pinpoints``."""

    template: Literal["llava-1.5", "plain"] = Field("llava-1.5", description="chat template: llava-1.5 "
                                                   "(LLaVA-NeXT vicuna's USER: <image>\\n... ASSISTANT:) or plain")
    grid: tuple[int, int] | None = Field(
        None, description="tiles [rows, cols] every image is resized to (each tile image_size square, plus the "
                          "base image), so each image has the same number of tokens; default: tiny [1, 2], "
                          "path: the folder's first image_grid_pinpoints entry")
    dynamic_resolution: bool = Field(False, description="any-resolution per image, as the real processor: each "
                                     "image's grid picked from image_grid_pinpoints by its size and aspect ratio, "
                                     "unpadded, so the token count differs per image; off: every image resized "
                                     "to grid")

    @field_validator("grid")
    @classmethod
    def _positive_grid(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"grid {list(value)} needs rows and cols >= 1")
        return value

    @model_validator(mode="after")
    def _grid_or_dynamic(self) -> LlavaNextModelConfig:
        if self.dynamic_resolution and self.grid is not None:
            raise ValueError(f"grid {list(self.grid)} only applies with dynamic_resolution off (with it each image "
                             "picks its own grid from image_grid_pinpoints); drop grid or dynamic_resolution")
        return self

    @model_serializer(mode="wrap")
    def _dump_without_unset_dynamic(self, handler: Any) -> dict[str, Any]:
        # dynamic_resolution appears in dumps (stage fingerprints) only when set, so pipelines
        # written before it existed keep their fingerprints
        out = handler(self)
        if "dynamic_resolution" not in self.model_fields_set:
            out.pop("dynamic_resolution", None)
        return out


class Idefics3ModelConfig(VisionLanguageModelConfig):
    """Idefics3 / SmolVLM: one global image per ``<image>`` (no splitting), pixel-shuffled by ``scale_factor``."""

    scale_factor: int = Field(2, ge=1, description="tiny: pixel-shuffle factor of the connector; "
                                                   "(image_size/patch_size)^2 / scale_factor^2 tokens per image")

    @model_validator(mode="after")
    def _shuffle_fits(self) -> Idefics3ModelConfig:
        if self.init == "tiny" and (self.image_size // self.patch_size) % self.scale_factor:
            raise ValueError(f"image_size/patch_size = {self.image_size // self.patch_size} is not a multiple of "
                             f"scale_factor {self.scale_factor}")
        return self


class LlavaOnevisionModelConfig(LlavaNextModelConfig):
    """LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): SigLIP tiles at one grid, ChatML."""

    template: Literal["chatml"] = Field("chatml", description="chat template: chatml (Qwen2's <|im_start|> format)")

    @field_validator("grid")
    @classmethod
    def _at_most_nine_tiles(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and value[0] * value[1] > 9:
            raise ValueError(f"grid {list(value)} has {value[0] * value[1]} tiles; llava-onevision keeps at most 9 "
                             "(anyres_max_9 downsamples more)")
        return value


class Qwen2VLModelConfig(VisionLanguageModelConfig):
    """Qwen2-VL / Qwen2.5-VL: every image resized to one square (constant token count), ChatML.

    ``image_size`` is the side (a multiple of patch size x 2, the 2x2 merge); with ``path:`` it
    may be given too (checked against the folder's patch size), else the saved one, else the
    folder image processor's smallest area as a square."""

    # with path: image_size picks the resolution (a downloaded folder has no single one)
    tiny_fields: ClassVar[tuple[str, ...]] = tuple(f for f in TINY_FIELDS if f != "image_size")

    template: Literal["qwen2-vl"] = Field("qwen2-vl", description="chat template: qwen2-vl (ChatML; each <image> "
                                          "is <|vision_start|><|image_pad|><|vision_end|>)")

    dynamic_resolution: bool = Field(False, description="keep each image near its own size (the image processor's "
                                     "smart_resize between min_pixels and max_pixels): image_grid_thw and the token "
                                     "count differ per image; off: every image resized to image_size")
    min_pixels: int | None = Field(None, ge=1, description="dynamic_resolution: least pixels an image is resized to "
                                   "(default: image_size^2 for tiny, else the folder's image processor)")
    max_pixels: int | None = Field(None, ge=1, description="dynamic_resolution: most pixels an image is resized to "
                                   "(default: 4 x image_size^2 for tiny, else the folder's image processor)")

    @model_serializer(mode="wrap")
    def _dump_without_unset_dynamic(self, handler: Any) -> dict[str, Any]:
        # the dynamic keys appear in dumps (stage fingerprints) only when set, so pipelines
        # written before they existed keep their fingerprints
        out = handler(self)
        for key in ("dynamic_resolution", "min_pixels", "max_pixels"):
            if key not in self.model_fields_set:
                out.pop(key, None)
        return out

    @model_validator(mode="after")
    def _pixels_need_dynamic(self) -> Qwen2VLModelConfig:
        stray = [k for k in ("min_pixels", "max_pixels") if getattr(self, k) is not None]
        if stray and not self.dynamic_resolution:
            raise ValueError(f"{', '.join(stray)} only apply with dynamic_resolution: true")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} is larger than max_pixels {self.max_pixels}")
        return self

    @model_validator(mode="after")
    def _size_fits(self) -> Qwen2VLModelConfig:
        if "image_size" in self.model_fields_set and self.image_size % (self.patch_size * 2) and self.init == "tiny":
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size x 2 = "
                             f"{self.patch_size * 2} (Qwen2-VL merges 2x2 patches)")
        return self
