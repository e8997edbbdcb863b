"""What differs between model families: one small spec each; :mod:`mllm_models.adapter` does the rest.

A :class:`Family` says how to build a tiny model and its processor from a config, which
processor class reads a folder, how one ``<image>`` expands into placeholder tokens,
where the vision tower, projector and language model sit, how images become
``pixel_values`` and features, and which extra inputs the model's forward needs
(filled in by a forward pre-hook, so ``model(input_ids=..., pixel_values=...)`` works as
the methods call it).

Every image is resized to one configured resolution, so each family gives a constant
number of image tokens per image (the core's contract: ``num_image_tokens``). Qwen2-VL /
Qwen2.5-VL, LLaVA-NeXT and LLaVA-OneVision also offer per-image resolution
(``dynamic_resolution``: each image's own grid and token count, the core's ``ImageTokenCounts``;
the ``dynamic_*`` members below); Idefics3 / SmolVLM image splitting is not done.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from mllm import InputFileError, corpus_texts, train_tokenizer

from mllm_models.templates import END_OF_UTTERANCE, IM_END, IM_START, chat_template_jinja

IMAGE = "<image>"


def _attn(dtype: str | None) -> str:
    # sdpa everywhere (PyTorch picks fused kernels itself); flash-attn needs half weights on a GPU
    return "sdpa"


def _tokenizer(config: Any, texts: list[str], specials: list[str] = ()) -> Any:
    tokenizer = train_tokenizer(config.vocab_size, model_max_length=config.max_length,
                                extra=texts + corpus_texts(config.tokenizer_corpus))
    if specials:
        tokenizer.add_special_tokens({"additional_special_tokens": list(specials)})
    return tokenizer


class Family:
    """The per-family spec (subclass per family; see the module docstring)."""

    name: str = ""
    model_type: str = ""
    template: str = ""
    processor_path: str = "full"  # "full": the family's transformers processor; "composed": PIL image processor + tokenizer

    def model_class(self) -> type:
        raise NotImplementedError

    def processor_class(self) -> type:
        raise NotImplementedError

    def build_tiny(self, config: Any, seed: int) -> tuple[Any, Any, dict[str, Any]]:
        """``(model, processor, options)`` of a tiny model (``options`` are saved with it)."""
        raise NotImplementedError

    def options_for(self, model: Any, processor: Any, config: Any, saved: dict[str, Any]) -> dict[str, Any]:
        """The options of a loaded folder (recorded ones, then the config's, then the folder's defaults)."""
        return dict(saved)

    def load_processor(self, path: Any, trust_remote_code: bool) -> Any:
        return self.processor_class().from_pretrained(path, trust_remote_code=trust_remote_code)

    def parts(self, model: Any) -> dict[str, Any]:
        """``vision_tower``, ``projector``, ``language_model``, ``lm_head`` modules of the unwrapped model."""
        raise NotImplementedError

    def image_size(self, model: Any, options: dict[str, Any]) -> tuple[int, int]:
        """``(height, width)`` every image is resized to."""
        raise NotImplementedError

    def num_image_tokens(self, model: Any, processor: Any, options: dict[str, Any]) -> int:
        raise NotImplementedError

    def expansion(self, model: Any, processor: Any, options: dict[str, Any]) -> list[int]:
        """The token ids one ``<image>`` becomes (image tokens and the family's markers around them)."""
        image_id = int(model.config.image_token_id)
        return [image_id] * self.num_image_tokens(model, processor, options)

    def pixel_values(self, processor: Any, images: list[Any], options: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def features(self, model: Any, pixel_values: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def forward_defaults(self, pixel_values: torch.Tensor, options: dict[str, Any]) -> dict[str, Any]:
        """Extra forward inputs the model needs beside ``pixel_values`` (derived from them)."""
        return {}

    def adapt_pixel_values(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` as the model's forward takes them (from ``load_images``' layout)."""
        return pixel_values

    def fill_inputs(self, module: Any, kwargs: dict[str, Any], options: dict[str, Any]) -> None:
        """Further inputs the inner model's forward needs, from the whole call (``kwargs``, edited in
        place; run after ``forward_defaults``). Qwen2-VL's M-RoPE position ids are filled here."""

    # -- per-image resolution (options["dynamic_resolution"]; families that offer it) -------------

    #: the forward inputs beside ``pixel_values`` that say each image's own layout
    dynamic_keys: tuple[str, ...] = ()

    def dynamic_inputs(self, processor: Any, images: list[Any], options: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The family's image processor's own output for ``images`` at their own sizes:
        ``pixel_values`` and the :attr:`dynamic_keys`, batched in order."""
        raise NotImplementedError(f"{self.name} has no dynamic_resolution")

    def dynamic_token_counts(self, model: Any, images: list[Any], options: dict[str, Any]) -> list[int]:
        """Image tokens each (PIL) image takes, from its size alone (no pixels processed)."""
        raise NotImplementedError(f"{self.name} has no dynamic_resolution")

    def dynamic_features(self, model: Any, pixel_values: torch.Tensor, inputs: dict[str, torch.Tensor]
                         ) -> list[torch.Tensor]:
        """Features per image, ``[tokens_i, hidden]`` each, of ``dynamic_inputs``' pixels and ``inputs``."""
        raise NotImplementedError(f"{self.name} has no dynamic_resolution")

    def dynamic_packing_problem(self) -> str:
        """Why packed and shared-prompt rows are off with ``dynamic_resolution``."""
        keys = " and ".join(self.dynamic_keys)
        return (f"{self.name} with dynamic_resolution: packed and shared-prompt rows are off (each image has its "
                f"own {keys} and token count, which packed rows do not carry to the per-image inputs); "
                "padded rows are used")

    @staticmethod
    def tagged_inputs(pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-image inputs the adapter's ``load_images`` tagged onto its ``pixel_values`` (so a
        forward given only the pixels still gets them); ``{}`` when untagged."""
        tagged = getattr(pixel_values, "_mllm_image_inputs", None) or {}
        return {key: value.to(pixel_values.device) for key, value in tagged.items()}


# -- LLaVA-NeXT ----------------------------------------------------------------------------------


class LlavaNext(Family):
    """``LlavaNextForConditionalGeneration``: a base image plus ``rows x cols`` tiles, unpadded, with newlines.

    At one resolution every image is resized to ``grid``. With ``dynamic_resolution`` each image
    keeps its size: the image processor picks its grid from ``image_grid_pinpoints``
    (``select_best_resolution``), resizes it into the grid keeping the aspect ratio, pads and
    tiles it; the model unpads the tiles' features, so the count depends on the image
    (:meth:`anyres_tokens`). ``image_sizes`` (the original sizes) go beside the pixels."""

    name = "llava-next"
    model_type = "llava_next"
    template = "llava-1.5"
    processor_path = "full"
    dynamic_keys = ("image_sizes",)
    #: the tiny model's pinpoints with dynamic_resolution, as tiles [rows, cols] of image_size:
    #: LLaVA-NeXT's own set (336 x [1, 2], [2, 1], [2, 2], [1, 3], [3, 1])
    dynamic_grids: tuple[tuple[int, int], ...] = ((1, 2), (2, 1), (2, 2), (1, 3), (3, 1))

    def model_class(self) -> type:
        from transformers import LlavaNextForConditionalGeneration

        return LlavaNextForConditionalGeneration

    def processor_class(self) -> type:
        from transformers import LlavaNextProcessor

        return LlavaNextProcessor

    def build_tiny(self, config: Any, seed: int) -> tuple[Any, Any, dict[str, Any]]:
        from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextProcessor
        from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

        (rows, cols), pinpoints, options = self._tiny_grids(config)
        side = config.image_size
        tokenizer = _tokenizer(config, [])
        vision = CLIPVisionConfig(
            hidden_size=config.vision_hidden_size, intermediate_size=config.vision_intermediate_size,
            num_hidden_layers=config.vision_layers, num_attention_heads=config.heads,
            image_size=side, patch_size=config.patch_size, projection_dim=config.vision_hidden_size)
        text = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=config.text_hidden_size,
            intermediate_size=config.text_intermediate_size, num_hidden_layers=config.text_layers,
            num_attention_heads=config.heads, num_key_value_heads=config.heads,
            max_position_embeddings=config.max_length, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
        model_config = LlavaNextConfig(
            vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
            image_grid_pinpoints=pinpoints, vision_feature_layer=-1, vision_feature_select_strategy="default",
            tie_word_embeddings=False)
        model_config._attn_implementation = _attn(config.dtype)
        torch.manual_seed(seed)
        model = self.model_class()(model_config)
        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_grid_pinpoints=pinpoints)
        processor = LlavaNextProcessor(
            image_processor=image_processor, tokenizer=tokenizer, patch_size=config.patch_size,
            vision_feature_select_strategy="default", num_additional_image_tokens=1, image_token=IMAGE,
            chat_template=chat_template_jinja(config.template))
        return model, processor, options

    def _tiny_grids(self, config: Any) -> tuple[tuple[int, int], list[list[int]], dict[str, Any]]:
        """The tiny model's grid, ``image_grid_pinpoints`` and options: the one ``grid``, or with
        ``dynamic_resolution`` the family's :attr:`dynamic_grids` (the first is the length weight's grid)."""
        side = config.image_size
        if getattr(config, "dynamic_resolution", False):
            grids = [tuple(grid) for grid in self.dynamic_grids]
            rows, cols = grids[0]
            options: dict[str, Any] = {"grid": [rows, cols], "dynamic_resolution": True}
        else:
            rows, cols = config.grid or (1, 2)
            grids = [(rows, cols)]
            options = {"grid": [rows, cols]}
        return (rows, cols), [[r * side, c * side] for r, c in grids], options

    def options_for(self, model: Any, processor: Any, config: Any, saved: dict[str, Any]) -> dict[str, Any]:
        pinpoints = [list(p) for p in model.config.image_grid_pinpoints]
        side = model.config.vision_config.image_size
        chosen = config.model_fields_set if config is not None else set()
        dynamic = bool(config.dynamic_resolution if "dynamic_resolution" in chosen
                       else saved.get("dynamic_resolution", False))
        saved = {k: v for k, v in saved.items() if k != "dynamic_resolution"}
        if dynamic:
            theirs = [list(p) for p in getattr(processor.image_processor, "image_grid_pinpoints", None) or []]
            if theirs != pinpoints:
                raise InputFileError(f"{self.name} dynamic_resolution: the folder's image processor tiles by "
                                     f"image_grid_pinpoints {theirs} but the model's config unpacks by {pinpoints}; "
                                     "make them equal (preprocessor_config.json and config.json)")
        if dynamic and "grid" in chosen and config.grid is not None:
            raise InputFileError(f"model.grid {list(config.grid)} only applies with dynamic_resolution off (this "
                                 "folder was saved with it on); drop grid or set dynamic_resolution: false")
        grid = config.grid if config is not None and config.grid is not None else saved.get("grid")
        if grid is None:
            first = pinpoints[0]
            grid = [max(first[0] // side, 1), max(first[1] // side, 1)]
        if [grid[0] * side, grid[1] * side] not in pinpoints:
            raise InputFileError(f"model.grid {list(grid)}: {grid[0] * side}x{grid[1] * side} is not one of the "
                                 f"model's image_grid_pinpoints {pinpoints}; pick a grid whose size is listed")
        if model.config.vision_feature_select_strategy != "default":
            raise InputFileError("llava-next: vision_feature_select_strategy must be 'default' (tiles are a "
                                 "patch grid without the CLS token)")
        return {**saved, "grid": [int(grid[0]), int(grid[1])], **({"dynamic_resolution": True} if dynamic else {})}

    def parts(self, model: Any) -> dict[str, Any]:
        return {"vision_tower": model.model.vision_tower, "projector": model.model.multi_modal_projector,
                "language_model": model.model.language_model, "lm_head": model.lm_head}

    def image_size(self, model: Any, options: dict[str, Any]) -> tuple[int, int]:
        side = model.config.vision_config.image_size
        rows, cols = options["grid"]
        return rows * side, cols * side

    def num_image_tokens(self, model: Any, processor: Any, options: dict[str, Any]) -> int:
        vision = model.config.vision_config
        per_side = vision.image_size // vision.patch_size
        rows, cols = options["grid"]
        # the base image, then the tiles' patch grid with one newline per row (nothing unpadded:
        # the image is exactly the grid's size)
        return per_side * per_side + rows * per_side * (cols * per_side + 1)

    def pixel_values(self, processor: Any, images: list[Any], options: dict[str, Any]) -> torch.Tensor:
        return processor.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def forward_defaults(self, pixel_values: torch.Tensor, options: dict[str, Any]) -> dict[str, Any]:
        if options.get("dynamic_resolution"):
            return self.tagged_inputs(pixel_values)  # each image's own size, set by the adapter's load_images
        height, width = options["size"]
        return {"image_sizes": torch.tensor([[height, width]] * pixel_values.shape[0], device=pixel_values.device)}

    def fill_inputs(self, module: Any, kwargs: dict[str, Any], options: dict[str, Any]) -> None:
        if options.get("dynamic_resolution") and kwargs.get("pixel_values") is not None \
                and kwargs.get("image_sizes") is None:
            # the one-size default would tile and unpad every image wrongly
            raise InputFileError(f"{self.name} with dynamic_resolution: a forward with pixel_values needs "
                                 "image_sizes (pass adapter.image_inputs(images) beside input_ids)")

    def features(self, model: Any, pixel_values: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        sizes = self.forward_defaults(pixel_values, {**options, "dynamic_resolution": False})["image_sizes"]
        out = model.model.get_image_features(pixel_values=pixel_values, image_sizes=sizes, return_dict=True)
        return torch.stack(list(out.pooler_output))

    # -- dynamic resolution (options["dynamic_resolution"]): each image's own grid ---------------

    def dynamic_inputs(self, processor: Any, images: list[Any], options: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The image processor's own output for ``images`` at their own sizes: ``pixel_values``
        ``[n, most tiles + 1, 3, side, side]`` (the base image, then the best grid's tiles; zero
        tiles pad images with fewer) and ``image_sizes`` ``[n, 2]`` (original height, width)."""
        out = processor.image_processor(images=images, return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_sizes": out["image_sizes"]}

    def dynamic_token_counts(self, model: Any, images: list[Any], options: dict[str, Any]) -> list[int]:
        return [self.anyres_tokens(model.config, image.height, image.width) for image in images]

    def anyres_tokens(self, model_config: Any, height: int, width: int) -> int:
        """Image tokens of a ``height x width`` image (what the processor's placeholder count and
        the model's ``pack_image_features`` come to): the base image's patches, then the best
        grid's patch rows after unpadding, each row with one newline."""
        from transformers.image_processing_utils import select_best_resolution

        vision = model_config.vision_config
        side = int(vision.image_size)
        per_side = side // int(vision.patch_size)
        pinpoints = [list(p) for p in model_config.image_grid_pinpoints]
        best_height, best_width = select_best_resolution((height, width), pinpoints)
        rows, cols = best_height // side * per_side, best_width // side * per_side
        # the image was scaled to fit the grid and centred: the padding's feature rows (or
        # columns) are dropped, evenly on both sides (the model's float arithmetic, kept as is)
        if width / height > cols / rows:
            kept = int(round(height * (cols / width), 7))
            rows -= 2 * ((rows - kept) // 2)
        else:
            kept = int(round(width * (rows / height), 7))
            cols -= 2 * ((cols - kept) // 2)
        rows, cols = self._downsampled(model_config, rows, cols, per_side)
        return per_side * per_side + rows * (cols + 1)

    def _downsampled(self, model_config: Any, rows: int, cols: int, per_side: int) -> tuple[int, int]:
        return rows, cols  # LLaVA-NeXT keeps every unpadded feature

    def dynamic_features(self, model: Any, pixel_values: torch.Tensor, inputs: dict[str, torch.Tensor]
                         ) -> list[torch.Tensor]:
        sizes = inputs["image_sizes"].to(pixel_values.device)
        out = model.model.get_image_features(pixel_values=pixel_values, image_sizes=sizes, return_dict=True)
        return list(out.pooler_output)


# -- Idefics3 / SmolVLM --------------------------------------------------------------------------


class Idefics3(Family):
    """``Idefics3ForConditionalGeneration``: a SigLIP tower, pixel shuffle, one global image per ``<image>``."""

    name = "idefics3"
    model_type = "idefics3"
    template = "idefics3"
    processor_path = "full"
    markers = ("<fake_token_around_image>", "<global-img>")

    def model_class(self) -> type:
        from transformers import Idefics3ForConditionalGeneration

        return Idefics3ForConditionalGeneration

    def processor_class(self) -> type:
        from transformers import Idefics3Processor

        return Idefics3Processor

    def _image_processor(self, side: int) -> Any:
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

        return Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": side},
                                         max_image_size={"longest_edge": side})

    def build_tiny(self, config: Any, seed: int) -> tuple[Any, Any, dict[str, Any]]:
        from transformers import Idefics3Config, Idefics3Processor

        texts = ["User:<image>What is in the image?<end_of_utterance>\nAssistant: A shape.<end_of_utterance>\n"]
        tokenizer = _tokenizer(config, texts, [*self.markers, END_OF_UTTERANCE])
        side = config.image_size
        image_seq_len = (side // config.patch_size) ** 2 // config.scale_factor ** 2
        model_config = Idefics3Config(
            vision_config=dict(hidden_size=config.vision_hidden_size, intermediate_size=config.vision_intermediate_size,
                               num_hidden_layers=config.vision_layers, num_attention_heads=config.heads,
                               image_size=side, patch_size=config.patch_size),
            text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=config.text_hidden_size,
                             intermediate_size=config.text_intermediate_size, num_hidden_layers=config.text_layers,
                             num_attention_heads=config.heads, num_key_value_heads=config.heads,
                             max_position_embeddings=config.max_length, pad_token_id=tokenizer.pad_token_id,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             tie_word_embeddings=False),
            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE), scale_factor=config.scale_factor,
            tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id)
        model_config._attn_implementation = _attn(config.dtype)
        torch.manual_seed(seed)
        model = self.model_class()(model_config)
        processor = Idefics3Processor(image_processor=self._image_processor(side), tokenizer=tokenizer,
                                      image_seq_len=image_seq_len, chat_template=chat_template_jinja(self.template))
        return model, processor, {}

    def parts(self, model: Any) -> dict[str, Any]:
        return {"vision_tower": model.model.vision_model, "projector": model.model.connector,
                "language_model": model.model.text_model, "lm_head": model.lm_head}

    def image_size(self, model: Any, options: dict[str, Any]) -> tuple[int, int]:
        side = model.config.vision_config.image_size
        return side, side

    def num_image_tokens(self, model: Any, processor: Any, options: dict[str, Any]) -> int:
        vision = model.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2 // model.config.scale_factor ** 2

    def expansion(self, model: Any, processor: Any, options: dict[str, Any]) -> list[int]:
        tokenizer = processor.tokenizer
        fake, global_image = (tokenizer.convert_tokens_to_ids(t) for t in self.markers)
        image_id = int(model.config.image_token_id)
        return [fake, global_image, *[image_id] * self.num_image_tokens(model, processor, options), fake]

    def pixel_values(self, processor: Any, images: list[Any], options: dict[str, Any]) -> torch.Tensor:
        side = options["size"][0]
        out = processor.image_processor(images=[[image] for image in images], do_image_splitting=False,
                                        size={"longest_edge": side}, max_image_size={"longest_edge": side},
                                        return_tensors="pt")
        return out["pixel_values"][:, 0]  # [n, 1, 3, H, W] -> [n, 3, H, W]

    def adapt_pixel_values(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.unsqueeze(1) if pixel_values.dim() == 4 else pixel_values

    def features(self, model: Any, pixel_values: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        out = model.model.get_image_features(pixel_values=self.adapt_pixel_values(pixel_values), return_dict=True)
        return torch.stack(list(out.pooler_output))


# -- LLaVA-OneVision -------------------------------------------------------------------------------


class ComposedProcessor:
    """A family's PIL image processor beside its tokenizer, for families whose transformers
    processor cannot be built here (it needs torchvision for its video processor).

    The adapter inserts the image placeholders itself; ``save_pretrained`` writes the image
    processor's and the tokenizer's files (the tokenizer with the ``chat_template``), so
    plain transformers' ``AutoTokenizer.apply_chat_template`` works on the folder.
    """

    def __init__(self, image_processor: Any, tokenizer: Any, chat_template: str | None = None) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = chat_template

    def save_pretrained(self, path: Any) -> None:
        self.image_processor.save_pretrained(path)
        if self.chat_template is not None:
            self.tokenizer.chat_template = self.chat_template
        self.tokenizer.save_pretrained(path)

    @classmethod
    def from_pretrained(cls, path: Any, image_processor_class: type, trust_remote_code: bool = False) -> ComposedProcessor:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        return cls(image_processor_class.from_pretrained(path), tokenizer, getattr(tokenizer, "chat_template", None))


class LlavaOnevision(LlavaNext):
    """``LlavaOnevisionForConditionalGeneration``: SigLIP tiles as LLaVA-NeXT's, a Qwen2 language model,
    ChatML; the processor is composed (``LlavaOnevisionProcessor`` needs torchvision for its video processor)."""

    name = "llava-onevision"
    model_type = "llava_onevision"
    template = "chatml"
    processor_path = "composed"
    #: OneVision's own pinpoints are every grid up to 6 x 6 tiles of 384; the tiny model's go up to
    #: 4 x 4, so that anyres_max_9 (more than 9 tiles' features are downsampled) takes part
    dynamic_grids = tuple((rows, cols) for rows in range(1, 5) for cols in range(1, 5))

    def model_class(self) -> type:
        from transformers import LlavaOnevisionForConditionalGeneration

        return LlavaOnevisionForConditionalGeneration

    def _image_processor_class(self) -> type:
        from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
            LlavaOnevisionImageProcessorPil,
        )

        return LlavaOnevisionImageProcessorPil

    def load_processor(self, path: Any, trust_remote_code: bool) -> Any:
        return ComposedProcessor.from_pretrained(path, self._image_processor_class(), trust_remote_code)

    def build_tiny(self, config: Any, seed: int) -> tuple[Any, Any, dict[str, Any]]:
        from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

        _, pinpoints, options = self._tiny_grids(config)
        side = config.image_size
        tokenizer = _tokenizer(config, [f"{IM_START}user\nWhat is it?{IM_END}\n{IM_START}assistant\nA shape.{IM_END}"],
                               [IM_START, IM_END])
        vision = SiglipVisionConfig(
            hidden_size=config.vision_hidden_size, intermediate_size=config.vision_intermediate_size,
            num_hidden_layers=config.vision_layers, num_attention_heads=config.heads,
            image_size=side, patch_size=config.patch_size)
        text = Qwen2Config(
            vocab_size=len(tokenizer), hidden_size=config.text_hidden_size,
            intermediate_size=config.text_intermediate_size, num_hidden_layers=config.text_layers,
            num_attention_heads=config.heads, num_key_value_heads=config.heads,
            max_position_embeddings=config.max_length, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
        model_config = LlavaOnevisionConfig(
            vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
            image_grid_pinpoints=pinpoints, vision_feature_layer=-1, vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_9", tie_word_embeddings=False)
        model_config._attn_implementation = _attn(config.dtype)
        torch.manual_seed(seed)
        model = self.model_class()(model_config)
        image_processor = self._image_processor_class()(size={"height": side, "width": side},
                                                        image_grid_pinpoints=pinpoints)
        processor = ComposedProcessor(image_processor, tokenizer, chat_template_jinja(self.template))
        return model, processor, options

    def options_for(self, model: Any, processor: Any, config: Any, saved: dict[str, Any]) -> dict[str, Any]:
        strategy = model.config.vision_feature_select_strategy
        model.config.vision_feature_select_strategy = "default"  # the parent's check; SigLIP has no CLS
        try:
            options = super().options_for(model, processor, config, saved)
        finally:
            model.config.vision_feature_select_strategy = strategy
        if strategy != "full":
            raise InputFileError("llava-onevision: vision_feature_select_strategy must be 'full' (SigLIP has no CLS)")
        rows, cols = options["grid"]
        if rows * cols > 9:  # anyres_max_9 would downsample the tiles: another token count
            raise InputFileError(f"model.grid {[rows, cols]} has {rows * cols} tiles; llava-onevision keeps at most 9 "
                                 "undownsampled (anyres_max_9)")
        return options

    def features(self, model: Any, pixel_values: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        sizes = self.forward_defaults(pixel_values, {**options, "dynamic_resolution": False})["image_sizes"]
        out = model.model.get_image_features(pixel_values=pixel_values, image_sizes=sizes, return_dict=True)
        return torch.stack(list(out.pooler_output))

    def _downsampled(self, model_config: Any, rows: int, cols: int, per_side: int) -> tuple[int, int]:
        # anyres_max_N: unpadded features of more than about N tiles are downsampled (bilinear) by
        # the model to an area of N tiles; every image counts as a single-image sample (the model's
        # default without batch_num_images), so each gets its tiles
        most = int(str(model_config.vision_aspect_ratio).removeprefix("anyres_max_"))
        ratio = math.sqrt(rows * cols / (most * per_side ** 2))
        if ratio > 1.1:
            return int(rows // ratio), int(cols // ratio)
        return rows, cols


# -- SmolVLM ----------------------------------------------------------------------------------------


class SmolVLM(Idefics3):
    """``SmolVLMForConditionalGeneration``: Idefics3's layout; the processor is composed
    (``SmolVLMProcessor`` needs a video processor, which needs torchvision)."""

    name = "smolvlm"
    model_type = "smolvlm"
    template = "smolvlm"
    processor_path = "composed"

    def model_class(self) -> type:
        from transformers import SmolVLMForConditionalGeneration

        return SmolVLMForConditionalGeneration

    def _image_processor_class(self) -> type:
        from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

        return SmolVLMImageProcessorPil

    def _image_processor(self, side: int) -> Any:
        return self._image_processor_class()(do_image_splitting=False, size={"longest_edge": side},
                                             max_image_size={"longest_edge": side})

    def load_processor(self, path: Any, trust_remote_code: bool) -> Any:
        return ComposedProcessor.from_pretrained(path, self._image_processor_class(), trust_remote_code)

    def build_tiny(self, config: Any, seed: int) -> tuple[Any, Any, dict[str, Any]]:
        from transformers import SmolVLMConfig

        texts = [f"{IM_START}User:<image>What is in the image?<end_of_utterance>\nAssistant: A shape.<end_of_utterance>\n"]
        tokenizer = _tokenizer(config, texts, [*self.markers, END_OF_UTTERANCE, IM_START])
        side = config.image_size
        model_config = SmolVLMConfig(
            vision_config=dict(hidden_size=config.vision_hidden_size, intermediate_size=config.vision_intermediate_size,
                               num_hidden_layers=config.vision_layers, num_attention_heads=config.heads,
                               image_size=side, patch_size=config.patch_size),
            text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=config.text_hidden_size,
                             intermediate_size=config.text_intermediate_size, num_hidden_layers=config.text_layers,
                             num_attention_heads=config.heads, num_key_value_heads=config.heads,
                             max_position_embeddings=config.max_length, pad_token_id=tokenizer.pad_token_id,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             tie_word_embeddings=False),
            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE), scale_factor=config.scale_factor,
            tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id)
        model_config._attn_implementation = _attn(config.dtype)
        torch.manual_seed(seed)
        model = self.model_class()(model_config)
        processor = ComposedProcessor(self._image_processor(side), tokenizer, chat_template_jinja(self.template))
        return model, processor, {}


# -- Qwen2-VL / Qwen2.5-VL ----------------------------------------------------------------------------

VISION_START, VISION_END, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"


class Qwen2VL(Family):
    """``Qwen2VLForConditionalGeneration``: patches flattened with ``image_grid_thw``, merged 2x2,
    M-RoPE position ids (3 per token: time, height, width); ChatML with
    ``<|vision_start|><|image_pad|><|vision_end|>`` per image. The processor is composed
    (``Qwen2VLProcessor`` needs a video processor, which needs torchvision).

    ``load_images`` gives ``[n, patches, channels * temporal * patch^2]`` (one image per row;
    the model takes them flattened, as its image processor gives them). Position ids: the
    model computes M-RoPE itself from ``input_ids``, ``mm_token_type_ids`` and
    ``image_grid_thw`` (filled in here); 1-D position ids handed in (the core's left-padded
    forwards) and an ``inputs_embeds`` made by the adapter's ``embed_inputs`` (which remembers
    its ``input_ids``) get exact M-RoPE ids from ``get_rope_index``; ``generate`` gets them
    at the prompt (``_prepare_position_ids_for_generation``, see the adapter). Packed rows
    (1-D ids restarting per sequence, no 2-D mask) get each sequence's own M-RoPE ids
    (:meth:`packed_rope_index`)."""

    name = "qwen2-vl"
    model_type = "qwen2_vl"
    template = "qwen2-vl"
    processor_path = "composed"
    dynamic_keys = ("image_grid_thw",)

    def model_class(self) -> type:
        from transformers import Qwen2VLForConditionalGeneration

        return Qwen2VLForConditionalGeneration

    def _image_processor_class(self) -> type:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        return Qwen2VLImageProcessorPil

    def load_processor(self, path: Any, trust_remote_code: bool) -> Any:
        return ComposedProcessor.from_pretrained(path, self._image_processor_class(), trust_remote_code)

    def _configs(self, config: Any, tokenizer: Any) -> dict[str, Any]:
        from transformers import Qwen2VLConfig

        half = config.text_hidden_size // config.heads // 2  # rotary pairs per head, split over t / h / w
        section = [half - 2 * (half // 3), half // 3, half // 3]
        text = dict(vocab_size=len(tokenizer), hidden_size=config.text_hidden_size,
                    intermediate_size=config.text_intermediate_size, num_hidden_layers=config.text_layers,
                    num_attention_heads=config.heads, num_key_value_heads=config.heads,
                    max_position_embeddings=config.max_length, bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section})
        vision = dict(depth=config.vision_layers, embed_dim=config.vision_hidden_size,
                      hidden_size=config.text_hidden_size, mlp_ratio=config.vision_intermediate_size // config.vision_hidden_size,
                      num_heads=config.heads, patch_size=config.patch_size, spatial_merge_size=2, temporal_patch_size=2)
        return {"class": Qwen2VLConfig, "text": text, "vision": vision}

    def build_tiny(self, config: Any, seed: int) -> tuple[Any, Any, dict[str, Any]]:
        tokenizer = _tokenizer(config, [f"{IM_START}user\n{VISION_START}{IMAGE_PAD}{VISION_END}What is it?{IM_END}\n"
                                        f"{IM_START}assistant\nA shape.{IM_END}"],
                               [IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, "<|video_pad|>"])
        parts = self._configs(config, tokenizer)
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (VISION_START, VISION_END, IMAGE_PAD, "<|video_pad|>")}
        model_config = parts["class"](
            text_config=parts["text"], vision_config=parts["vision"], image_token_id=ids[IMAGE_PAD],
            video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids[VISION_START],
            vision_end_token_id=ids[VISION_END], tie_word_embeddings=False)
        model_config._attn_implementation = _attn(config.dtype)
        torch.manual_seed(seed)
        model = self.model_class()(model_config)
        side = config.image_size
        image_processor = self._image_processor_class()(
            size={"shortest_edge": side * side, "longest_edge": side * side}, patch_size=config.patch_size,
            merge_size=2, temporal_patch_size=2)
        processor = ComposedProcessor(image_processor, tokenizer, chat_template_jinja(self.template))
        options: dict[str, Any] = {"image_size": [side, side]}
        if config.dynamic_resolution:
            options.update(dynamic_resolution=True, min_pixels=int(config.min_pixels or side * side),
                           max_pixels=int(config.max_pixels or 4 * side * side))
        return model, processor, options

    @staticmethod
    def _dynamic_options(processor: Any, config: Any, saved: dict[str, Any]) -> dict[str, Any]:
        """``dynamic_resolution`` / ``min_pixels`` / ``max_pixels``: the config's where set, else the saved ones,
        else the folder image processor's size range; nothing when off (constant-size options unchanged)."""
        chosen = config.model_fields_set if config is not None else set()
        on = config.dynamic_resolution if "dynamic_resolution" in chosen else saved.get("dynamic_resolution", False)
        if not on:
            return {}
        size = processor.image_processor.size
        least = config.min_pixels if "min_pixels" in chosen else saved.get("min_pixels", size["shortest_edge"])
        most = config.max_pixels if "max_pixels" in chosen else saved.get("max_pixels", size["longest_edge"])
        return {"dynamic_resolution": True, "min_pixels": int(least), "max_pixels": int(most)}

    def options_for(self, model: Any, processor: Any, config: Any, saved: dict[str, Any]) -> dict[str, Any]:
        factor = self._factor(model)
        chosen = config is not None and config.path is not None and "image_size" in config.model_fields_set
        size = [config.image_size] * 2 if chosen else saved.get("image_size")
        if size is None:  # the folder's smallest allowed area, as a square on the merged-patch grid
            least = processor.image_processor.size["shortest_edge"]
            side = max(factor, round(least ** 0.5 / factor) * factor)
            size = [side, side]
        size = [int(size[0]), int(size[1])]
        if size[0] % factor or size[1] % factor:
            raise InputFileError(f"model.image_size {size}: height and width must be multiples of "
                                 f"patch_size x spatial_merge_size = {factor}")
        out = {k: v for k, v in saved.items() if k not in ("dynamic_resolution", "min_pixels", "max_pixels")}
        return {**out, "image_size": size, **self._dynamic_options(processor, config, saved)}

    @staticmethod
    def _factor(model: Any) -> int:
        vision = model.config.vision_config
        return int(vision.patch_size) * int(vision.spatial_merge_size)

    def parts(self, model: Any) -> dict[str, Any]:
        return {"vision_tower": model.model.visual, "projector": model.model.visual.merger,
                "language_model": model.model.language_model, "lm_head": model.lm_head}

    def image_size(self, model: Any, options: dict[str, Any]) -> tuple[int, int]:
        height, width = options["image_size"]
        return height, width

    def _grid(self, model_config: Any, options: dict[str, Any]) -> tuple[int, int, int]:
        patch = int(model_config.vision_config.patch_size)
        height, width = options["size"]
        return 1, height // patch, width // patch

    def num_image_tokens(self, model: Any, processor: Any, options: dict[str, Any]) -> int:
        _, rows, cols = self._grid(model.config, {"size": self.image_size(model, options)})
        merge = int(model.config.vision_config.spatial_merge_size)
        return rows * cols // merge ** 2

    def pixel_values(self, processor: Any, images: list[Any], options: dict[str, Any]) -> torch.Tensor:
        height, width = options["size"]
        out = processor.image_processor(images=images, size={"shortest_edge": height * width,
                                                             "longest_edge": height * width}, return_tensors="pt")
        flat = out["pixel_values"]
        return flat.reshape(len(images), flat.shape[0] // len(images), flat.shape[-1])

    def adapt_pixel_values(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.reshape(-1, pixel_values.shape[-1]) if pixel_values.dim() == 3 else pixel_values

    # -- dynamic resolution (options["dynamic_resolution"]): each image at its own size ----------

    def dynamic_inputs(self, processor: Any, images: list[Any], options: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The image processor's own output for ``images`` at their own sizes (smart_resize between
        ``min_pixels`` and ``max_pixels``): flattened patches concatenated over images and one
        ``image_grid_thw`` row per image."""
        out = processor.image_processor(images=images, size={"shortest_edge": options["min_pixels"],
                                                             "longest_edge": options["max_pixels"]},
                                        return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}

    @staticmethod
    def grid_token_counts(model_config: Any, grid: torch.Tensor) -> list[int]:
        """Image tokens per image of an ``image_grid_thw``: t * h * w / merge^2."""
        merge = int(model_config.vision_config.spatial_merge_size)
        return [int(row.prod()) // merge ** 2 for row in grid]

    def dynamic_token_counts(self, model: Any, images: list[Any], options: dict[str, Any]) -> list[int]:
        # the grid alone decides the count: smart_resize of each image's size
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        patch = int(model.config.vision_config.patch_size)
        merge = int(model.config.vision_config.spatial_merge_size)
        grids = []
        for image in images:
            height, width = smart_resize(image.height, image.width, factor=patch * merge,
                                         min_pixels=options["min_pixels"], max_pixels=options["max_pixels"])
            grids.append([1, height // patch, width // patch])
        return self.grid_token_counts(model.config, torch.tensor(grids))

    def dynamic_features(self, model: Any, pixel_values: torch.Tensor, inputs: dict[str, torch.Tensor]
                         ) -> list[torch.Tensor]:
        grid = inputs["image_grid_thw"].to(pixel_values.device)
        out = model.model.get_image_features(pixel_values=pixel_values, image_grid_thw=grid, return_dict=True)
        return list(out.pooler_output)

    def dynamic_packing_problem(self) -> str:
        return (f"{self.name} with dynamic_resolution: packed and shared-prompt rows are off (each image has "
                "its own image_grid_thw and token count, which packed rows do not carry to the per-image inputs "
                "and the per-sequence M-RoPE ids); padded rows are used")

    def forward_defaults(self, pixel_values: torch.Tensor, options: dict[str, Any]) -> dict[str, Any]:
        if not options.get("dynamic_resolution"):
            return {}
        return self.tagged_inputs(pixel_values)  # the grid, set by the adapter's load_images

    def _grid_thw(self, module: Any, count: int, options: dict[str, Any], device: Any) -> torch.Tensor:
        return torch.tensor([list(self._grid(module.config, options))] * count, dtype=torch.long, device=device)

    def features(self, model: Any, pixel_values: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
        grid = self._grid_thw(model, pixel_values.shape[0], options, pixel_values.device)
        out = model.model.get_image_features(pixel_values=self.adapt_pixel_values(pixel_values), image_grid_thw=grid,
                                             return_dict=True)
        return torch.stack(list(out.pooler_output))

    def fill_inputs(self, module: Any, kwargs: dict[str, Any], options: dict[str, Any]) -> None:
        input_ids = kwargs.get("input_ids")
        embeds = kwargs.get("inputs_embeds")
        if input_ids is None and embeds is not None:
            input_ids = getattr(embeds, "_mllm_input_ids", None)  # set by the adapter's embed_inputs
        if input_ids is None:
            return
        image_id = int(module.config.image_token_id)
        n_tokens = int((input_ids == image_id).sum())
        if kwargs.get("image_grid_thw") is None and n_tokens and options.get("dynamic_resolution"):
            given = kwargs.get("position_ids")
            if given is not None and given.dim() == 3 and kwargs.get("mm_encoder_outputs") is not None:
                # generate's prefill: M-RoPE ids were computed from the grid before generate
                # encoded the pixels (mm_encoder_outputs) and dropped the grid
                return
            raise InputFileError(f"{self.name} with dynamic_resolution: a forward with image tokens needs "
                                 "image_grid_thw (pass adapter.image_inputs(images) beside input_ids)")
        if kwargs.get("image_grid_thw") is None and n_tokens:
            per_image = self.num_image_tokens(module, None, options)
            kwargs["image_grid_thw"] = self._grid_thw(module, n_tokens // per_image, options, input_ids.device)
        if kwargs.get("image_grid_thw") is None:
            return
        if kwargs.get("mm_token_type_ids") is None:
            kwargs["mm_token_type_ids"] = (input_ids == image_id).int()
        position_ids = kwargs.get("position_ids")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        cached = cache is not None and cache.get_seq_length() > 0
        mask = kwargs.get("attention_mask")
        if not cached and position_ids is not None and position_ids.dim() == 2 and (mask is None or mask.dim() != 2) \
                and not options.get("dynamic_resolution"):
            # packed rows (mllm.training.packing): no 2-D mask, 1-D ids restarting per sequence
            kwargs["position_ids"] = self.packed_rope_index(module, input_ids, position_ids, options)
            return
        if cached or (position_ids is not None and position_ids.dim() != 2) or (mask is not None and mask.dim() != 2):
            return  # M-RoPE ids given, or a continuation: the model's own rope_deltas apply
        if position_ids is None and kwargs.get("input_ids") is not None:
            return  # the model computes them itself from input_ids
        positions, deltas = module.get_rope_index(input_ids, mm_token_type_ids=kwargs["mm_token_type_ids"],
                                                  image_grid_thw=kwargs["image_grid_thw"], attention_mask=mask)
        module.rope_deltas = deltas
        kwargs["position_ids"] = positions


    def packed_rope_index(self, module: Any, input_ids: torch.Tensor, position_ids: torch.Tensor,
                          options: dict[str, Any]) -> torch.Tensor:
        """``[4, rows, T]`` position ids of packed rows: the 1-D ids as given (flash-attention's varlen
        path reads the sequence boundaries from them), then each sequence's own M-RoPE ids.

        The 1-D ids say where each sequence is (:mod:`mllm.training.packing`): they restart at 0
        for every sequence, and a shared prompt's rejected answer continues from the prompt's
        length ``k`` after the chosen one, so its sequence is the first ``k`` tokens of its
        document followed by its own. Each sequence gets ``get_rope_index`` of its tokens alone
        (its images' grids, all of the model's one size), exactly the ids it has unpacked; text
        with no image before it keeps the 1-D ids (they are equal)."""
        image_id = int(module.config.image_token_id)
        per_image = self.num_image_tokens(module, None, options)
        mrope = position_ids.unsqueeze(0).repeat(3, 1, 1)
        starts = torch.ones_like(position_ids, dtype=torch.bool)
        starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
        # image tokens before each position (so text-only stretches, padding included, cost nothing)
        before = torch.nn.functional.pad((input_ids == image_id).long().cumsum(1), (1, 0)).tolist()
        for row in range(input_ids.shape[0]):
            ids, positions, count = input_ids[row], position_ids[row].tolist(), before[row]
            bounds = starts[row].nonzero().flatten().tolist() + [len(positions)]
            document = 0
            for start, end in zip(bounds[:-1], bounds[1:], strict=True):
                offset = positions[start]
                if offset == 0:
                    document = start
                elif positions[document:document + offset] != list(range(offset)):
                    raise ValueError(f"{self.name}: packed position ids of row {row} at {start} continue from "
                                     f"{offset}, but their document does not start with {offset} prompt tokens")
                images = count[document + offset] - count[document] + count[end] - count[start]
                if not images:
                    continue  # text only so far: M-RoPE ids are the 1-D ones
                sequence = torch.cat([ids[document:document + offset], ids[start:end]]) if offset else ids[start:end]
                grid = self._grid_thw(module, images // per_image, options, ids.device)
                own, _ = module.get_rope_index(sequence[None], mm_token_type_ids=(sequence == image_id).int()[None],
                                               image_grid_thw=grid)
                mrope[:, row, start:end] = own[:, 0, sequence.shape[0] - (end - start):]
        return torch.cat([position_ids.unsqueeze(0), mrope])


class Qwen25VL(Qwen2VL):
    """``Qwen2_5_VLForConditionalGeneration``: Qwen2-VL's layout with a windowed RMSNorm/SwiGLU vision tower."""

    name = "qwen2.5-vl"
    model_type = "qwen2_5_vl"

    def model_class(self) -> type:
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration

    def _configs(self, config: Any, tokenizer: Any) -> dict[str, Any]:
        from transformers import Qwen2_5_VLConfig

        parts = super()._configs(config, tokenizer)
        vision = dict(depth=config.vision_layers, hidden_size=config.vision_hidden_size,
                      intermediate_size=config.vision_intermediate_size, out_hidden_size=config.text_hidden_size,
                      num_heads=config.heads, patch_size=config.patch_size, spatial_merge_size=2,
                      temporal_patch_size=2, window_size=config.image_size, fullatt_block_indexes=[0])
        return {**parts, "class": Qwen2_5_VLConfig, "vision": vision}


FAMILIES: dict[str, Family] = {family.name: family for family in (LlavaNext(), Idefics3(), LlavaOnevision(), SmolVLM(),
                                                                  Qwen2VL(), Qwen25VL())}
