"""The built-in LLaVA model adapter (model ``llava``).

Wraps ``transformers.LlavaForConditionalGeneration`` and its ``LlavaProcessor``:

- ``path:`` loads a Hugging Face ``save_pretrained`` folder (``llava-hf/llava-1.5-7b-hf``
  downloaded by the user, or a folder this adapter saved); code shipped in a folder is
  never run unless the model config says ``trust_remote_code: true`` (default false).
  A folder holding a peft adapter (``adapter_config.json``) loads the base model
  it names (``mllm_model.json`` stores the base folder) and attaches the adapter.
- ``init: tiny`` builds a small model from the config: a CLIP vision tower, the
  projector (``mlp2x_gelu`` as LLaVA-1.5, or ``linear`` as LLaVA-1), a Llama language
  model, and a byte-level BPE tokenizer trained on the spot
  (:mod:`mllm.models.tokenizer`). Initialization is seeded, so the same seed gives the
  same weights.

Saved folders are ordinary ``save_pretrained`` folders (``model.safetensors``,
``config.json``, tokenizer and processor files, with the chat template as a Jinja
``chat_template``, so plain transformers' ``apply_chat_template`` works on them) plus ``mllm_model.json``
(the chat template and preprocessing choices, and for a LoRA adapter its base folder).
Folders with the ``mlp2x_gelu`` projector load in plain transformers too; a ``linear``
projector is not a transformers option, so it is recorded in ``config.json``
(``mllm_projector: linear``) and re-applied by :func:`load_llava`.

Sequences are built by the adapter, not by the processor: the chat template renders
segments (see :mod:`mllm.models.templates`), each is tokenized on its own (exact label
masks), ``<s>`` is put in front, and each ``<image>`` id is expanded to the number of
image tokens the vision tower yields, which is what the processor would do as well.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mllm.errors import InputFileError, MissingFileError
from mllm.models.llava.config import LlavaModelConfig
from mllm.models.templates import ChatTemplate, get_template

IGNORE_INDEX = -100
META_FILE = "mllm_model.json"
BASE_OVERRIDES_FILE = "mllm_base_overrides.safetensors"
META_FORMAT = 1

# -- the linear projector ------------------------------------------------------------------


class LinearProjector(nn.Module):
    """LLaVA-1's ``linear`` projector: one ``Linear`` from vision width to text width.

    transformers' ``LlavaMultiModalProjector`` is always ``mlp2x_gelu``; this module
    takes its place (same ``linear_1`` weight name) when ``config.mllm_projector`` is
    ``linear``.
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        layers = 1 if isinstance(config.vision_feature_layer, int) else len(config.vision_feature_layer)
        self.linear_1 = nn.Linear(config.vision_config.hidden_size * layers, config.text_config.hidden_size,
                                  bias=config.multimodal_projector_bias)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_1(image_features)


def _linear_projector_class() -> type:
    from transformers import LlavaForConditionalGeneration

    class LlavaLinearProjectorForConditionalGeneration(LlavaForConditionalGeneration):
        """``LlavaForConditionalGeneration`` with :class:`LinearProjector` (``mllm_projector: linear``)."""

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.model.multi_modal_projector = LinearProjector(config)
            self.post_init()  # initializes only the new module; the others are marked initialized

    return LlavaLinearProjectorForConditionalGeneration


_LINEAR_CLASS: type | None = None


def llava_class(config: Any) -> type:
    """The model class for a ``LlavaConfig``: stock, or with the linear projector."""
    global _LINEAR_CLASS
    if getattr(config, "mllm_projector", "mlp2x_gelu") == "linear":
        if _LINEAR_CLASS is None:
            _LINEAR_CLASS = _linear_projector_class()
        return _LINEAR_CLASS
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration


def _torch_dtype(name: str | None) -> torch.dtype | None:
    return {None: None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_llava(path: Path, dtype: str | None = None, trust_remote_code: bool = False) -> Any:
    """``from_pretrained`` of a LLaVA folder (code in the folder runs only with ``trust_remote_code``)."""
    from transformers import AutoConfig

    from mllm.models.attention import pick_attn_implementation
    from mllm.models.pickles import pickle_weights_to_load, refuse_unsafe_weights

    refuse_unsafe_weights(pickle_weights_to_load(Path(path), "pytorch_model"))
    config = AutoConfig.from_pretrained(path, trust_remote_code=bool(trust_remote_code))
    if config.model_type != "llava":
        raise InputFileError(f"{path}: model_type {config.model_type!r} is not supported by the llava adapter "
                             "(it loads LlavaForConditionalGeneration folders, model_type 'llava')")
    # flash-attn only for half-precision weights: the dtype asked for, else the one the folder recorded
    weights_dtype = dtype if dtype is not None else getattr(config, "dtype", None)
    kwargs: dict[str, Any] = {"config": config, "attn_implementation": pick_attn_implementation(weights_dtype)}
    if dtype is not None:
        kwargs["dtype"] = _torch_dtype(dtype)
    model = llava_class(config).from_pretrained(path, **kwargs)
    model.eval()
    return model


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as error:
        raise InputFileError(f"{path}: cannot read ({error})") from None


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


# -- the adapter ---------------------------------------------------------------------------


class LlavaAdapter:
    """A LLaVA model with its processor and chat template (see docs/components.md)."""

    #: the model takes per-sequence position ids and a 4D block attention mask (checked by
    #: the packing tests): ``train: {packing, shared_prompt}`` may lay batches out that way
    supports_packed_sequences = True

    def __init__(self, model: Any, processor: Any, template: ChatTemplate | str = "llava-1.5", *,
                 image_aspect_ratio: Literal["pad", "resize"] = "pad", max_length: int = 512,
                 base_path: Path | None = None) -> None:
        self.model = model
        self.processor = processor
        self.template = get_template(template) if isinstance(template, str) else template
        if image_aspect_ratio not in ("pad", "resize"):
            raise ValueError(f"image_aspect_ratio must be pad or resize, got {image_aspect_ratio!r}")
        self.image_aspect_ratio = image_aspect_ratio
        self.max_length = max_length
        # The folder whose weights the (un-adapted) model holds; a LoRA adapter saved
        # from this model names it as its base.
        self.base_path = Path(base_path).resolve() if base_path is not None else None
        # Base weights a loaded LoRA folder replaced (mllm_base_overrides.safetensors);
        # saved again with the adapter so that re-saving never drops them.
        self.base_overrides: dict[str, torch.Tensor] = {}
        self._sync_generation_config()

    # -- construction -------------------------------------------------------------------

    @classmethod
    def source_path(cls, config: LlavaModelConfig | None) -> Path | None:
        """The ``path:`` folder of a config, else ``None`` (a tiny model is built)."""
        if config is None or config.path is None:
            return None
        return Path(config.path).expanduser()

    @classmethod
    def from_config(cls, config: LlavaModelConfig, seed: int = 0) -> LlavaAdapter:
        """Load ``config.path``, or build the tiny model the config describes (seeded)."""
        if config.path is not None:
            return cls.load(Path(config.path).expanduser(), config=config)
        return cls.build_tiny(config, seed=seed)

    @classmethod
    def build_tiny(cls, config: LlavaModelConfig, seed: int = 0) -> LlavaAdapter:
        from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        from mllm.models.attention import pick_attn_implementation
        from mllm.models.tokenizer import IMAGE_TOKEN, corpus_texts, train_tokenizer

        tokenizer = train_tokenizer(config.vocab_size, model_max_length=config.max_length,
                                    extra=corpus_texts(config.tokenizer_corpus))
        image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        patches = (config.image_size // config.patch_size) ** 2
        image_tokens = patches + (1 if config.vision_feature_select_strategy == "full" else 0)
        vision = CLIPVisionConfig(
            hidden_size=config.vision_hidden_size, intermediate_size=config.vision_intermediate_size,
            num_hidden_layers=config.vision_layers, num_attention_heads=config.heads,
            image_size=config.image_size, patch_size=config.patch_size, projection_dim=config.vision_hidden_size,
        )
        text = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=config.text_hidden_size,
            intermediate_size=config.text_intermediate_size, num_hidden_layers=config.text_layers,
            num_attention_heads=config.heads, num_key_value_heads=config.heads,
            max_position_embeddings=config.max_length, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        )
        llava_config = LlavaConfig(
            vision_config=vision, text_config=text, image_token_index=image_token_id,
            image_seq_length=image_tokens, projector_hidden_act="gelu",
            vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            mllm_projector=config.projector,
        )
        llava_config._attn_implementation = pick_attn_implementation(config.dtype)
        torch.manual_seed(seed)
        model = llava_class(llava_config)(llava_config)
        model.to(_torch_dtype(config.dtype))
        model.eval()
        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": config.image_size},
            crop_size={"height": config.image_size, "width": config.image_size},
        )
        processor = LlavaProcessor(
            image_processor=image_processor, tokenizer=tokenizer, patch_size=config.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            num_additional_image_tokens=1, image_token=IMAGE_TOKEN,
        )
        return cls(model, processor, config.template, image_aspect_ratio=config.image_aspect_ratio,
                   max_length=config.max_length)

    @classmethod
    def load(cls, path: str | os.PathLike, *, config: LlavaModelConfig | None = None) -> LlavaAdapter:
        """A folder written by :meth:`save`, a llava-hf folder, or a peft adapter folder.

        ``config`` (optional): options set explicitly in it (template,
        image_aspect_ratio, max_length, dtype) override what the folder recorded.
        """
        from transformers import LlavaProcessor

        path = Path(path).expanduser()
        if not path.is_dir():
            raise MissingFileError(f"model folder {path} does not exist")
        meta = _read_json(path / META_FILE)
        chosen = config.model_fields_set if config is not None else set()

        def option(name: str, default: Any) -> Any:
            if config is not None and name in chosen:
                return getattr(config, name)
            return meta.get(name, getattr(config, name) if config is not None else default)

        dtype = config.dtype if config is not None and "dtype" in chosen else None
        trust_remote_code = bool(config is not None and config.trust_remote_code)
        overrides: dict[str, torch.Tensor] = {}
        if (path / "adapter_config.json").is_file():
            base_path = cls._adapter_base(path, meta)
            model, overrides = cls._load_peft(path, base_path, dtype, trust_remote_code)
        else:
            if not (path / "config.json").is_file():
                raise MissingFileError(f"{path} holds no config.json: not a save_pretrained model folder")
            base_path = path
            model = load_llava(path, dtype, trust_remote_code)
        processor_dir = path if (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file() else base_path
        processor = LlavaProcessor.from_pretrained(processor_dir, trust_remote_code=bool(trust_remote_code))
        adapter = cls(model, processor, option("template", "llava-1.5"),
                      image_aspect_ratio=option("image_aspect_ratio", "pad"),
                      max_length=int(option("max_length", 512)), base_path=base_path)
        adapter.base_overrides = overrides
        return adapter

    @staticmethod
    def _adapter_base(path: Path, meta: dict[str, Any]) -> Path:
        base = meta.get("base_model") or {}
        candidates = []
        if base.get("relative"):
            candidates.append((path / base["relative"]).resolve())
        if base.get("absolute"):
            candidates.append(Path(base["absolute"]))
        if not candidates:
            named = _read_json(path / "adapter_config.json").get("base_model_name_or_path")
            if named:
                candidates.append(Path(named).expanduser())
        for candidate in candidates:
            if (candidate / "config.json").is_file():
                return candidate
        raise MissingFileError(f"{path} is a LoRA adapter whose base model folder is missing "
                               f"(looked for: {', '.join(map(str, candidates)) or 'nothing recorded'})")

    @staticmethod
    def _load_peft(path: Path, base_path: Path, dtype: str | None,
                   trust_remote_code: bool = False) -> tuple[Any, dict[str, torch.Tensor]]:
        from peft import PeftModel
        from safetensors.torch import load_file

        from mllm.models.pickles import pickle_weights_to_load, refuse_unsafe_weights

        refuse_unsafe_weights(pickle_weights_to_load(path, "adapter_model"))
        base = load_llava(base_path, dtype, trust_remote_code)
        overrides = path / BASE_OVERRIDES_FILE
        state: dict[str, torch.Tensor] = {}
        if overrides.is_file():
            state = load_file(str(overrides))
            missing = set(state) - set(base.state_dict())
            if missing:
                raise ValueError(f"{overrides}: weights {sorted(missing)[:3]} do not exist in the base model {base_path}")
            base.load_state_dict(state, strict=False)
        model = PeftModel.from_pretrained(base, str(path))
        model.eval()
        return model, state

    # -- saving ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike, *, merge: bool = False) -> None:
        """Write a folder :meth:`load` reads: ``save_pretrained`` (safetensors) + processor + ``mllm_model.json``.

        A peft (LoRA) model is saved as its adapter only, naming its base folder in
        ``mllm_model.json``; base weights that were trained outside peft (e.g. a fully
        trained projector beside LoRA, LLaVA's recipe) go to ``mllm_base_overrides.safetensors``.
        A LoRA model whose base was never saved gets its base written to ``base/``.
        ``merge=True`` merges LoRA into the weights first (this adapter's model becomes
        the merged model) and writes a full model.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        # the template the model is trained with, as Jinja: plain transformers' apply_chat_template
        # on the saved folder (processor or tokenizer) renders what mllm trains on
        self.processor.chat_template = self.template.jinja
        self.processor.tokenizer.chat_template = self.template.jinja
        meta: dict[str, Any] = {
            "format": META_FORMAT,
            "template": self.template.name,
            "image_aspect_ratio": self.image_aspect_ratio,
            "max_length": self.max_length,
            "projector": getattr(self._llava.config, "mllm_projector", "mlp2x_gelu"),
        }
        if _is_peft(self.model) and merge:
            self.model = self.model.merge_and_unload()
        if _is_peft(self.model):
            base_path = self.base_path
            if base_path is None or not (base_path / "config.json").is_file():
                base_path = path / "base"
                base_model = copy.deepcopy(self.model).unload()
                base_model.save_pretrained(base_path)
                self.processor.save_pretrained(base_path)
            self.model.save_pretrained(path)
            overrides = self._base_overrides()
            if overrides:
                from safetensors.torch import save_file

                save_file(overrides, str(path / BASE_OVERRIDES_FILE))
            else:
                (path / BASE_OVERRIDES_FILE).unlink(missing_ok=True)
            meta["base_model"] = {"relative": os.path.relpath(base_path.resolve(), path.resolve()),
                                  "absolute": str(base_path.resolve())}
        else:
            self.model.save_pretrained(path)
        self.processor.save_pretrained(path)
        (path / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    def _base_overrides(self) -> dict[str, torch.Tensor]:
        """Trainable base weights of a peft model that peft itself does not save."""
        model = self.model
        prefix = "base_model.model."
        out: dict[str, torch.Tensor] = {}
        current = dict(model.named_parameters())
        for key in self.base_overrides:  # loaded overrides, with their present values
            for name in (prefix + key, prefix + key.rsplit(".", 1)[0] + ".base_layer." + key.rsplit(".", 1)[1]):
                if name in current:
                    out[key] = current[name].detach().to("cpu").contiguous().clone()
                    break
        for name, param in current.items():
            if not param.requires_grad or "lora_" in name or "modules_to_save" in name or "original_module" in name:
                continue
            key = name[len(prefix):] if name.startswith(prefix) else name
            key = key.replace(".base_layer.", ".")
            out[key] = param.detach().to("cpu").contiguous().clone()
        return out

    # -- parts ------------------------------------------------------------------------------

    @property
    def _llava(self) -> Any:
        """The ``LlavaForConditionalGeneration`` (unwrapped from peft)."""
        model = self.model
        if _is_peft(model):
            model = model.get_base_model()
        return model

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    @property
    def image_token_id(self) -> int:
        return int(self._llava.config.image_token_id)

    @property
    def num_image_tokens(self) -> int:
        """Tokens one image occupies in the sequence (what the vision tower + projector yield)."""
        config = self._llava.config
        vision = config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        if str(getattr(vision, "model_type", "")).startswith("clip"):
            extra = 1  # CLS
        else:
            extra = int(getattr(self.processor, "num_additional_image_tokens", 0) or 0)
        if config.vision_feature_select_strategy == "default":
            extra -= 1
        return patches + extra

    def module_names(self) -> dict[str, str]:
        """Dotted paths in ``self.model`` of the vision tower, projector, language model and LM head.

        ``lm_head`` is the language model's output layer, a sibling of
        ``language_model`` in transformers' LLaVA; freezing the language model means
        freezing both.
        """
        llava = self._llava
        wanted = {
            "vision_tower": llava.model.vision_tower,
            "projector": llava.model.multi_modal_projector,
            "language_model": llava.model.language_model,
            "lm_head": llava.lm_head,
        }
        found: dict[str, str] = {}
        for name, module in self.model.named_modules():
            for key, target in wanted.items():
                if key not in found and module is target:
                    found[key] = name
        missing = set(wanted) - set(found)
        if missing:  # pragma: no cover - would mean transformers changed its layout
            raise RuntimeError(f"cannot find module(s) {sorted(missing)} in {type(self.model).__name__}")
        return found

    def _sync_generation_config(self) -> None:
        generation = getattr(self._llava, "generation_config", None)
        if generation is not None:
            generation.pad_token_id = self.pad_token_id
            generation.eos_token_id = self.eos_token_id
            if self.bos_token_id is not None:
                generation.bos_token_id = self.bos_token_id

    # -- images -----------------------------------------------------------------------------

    def load_images(self, paths: Sequence[Any]) -> torch.Tensor:
        """``pixel_values`` ``[n, 3, H, W]`` for image files (or PIL images), aspect ratio handled.

        ``pad`` pads to a square with the image processor's mean colour (LLaVA-1.5's
        ``expand2square``); ``resize`` stretches to the square input size. Then the CLIP
        image processor resizes, crops and normalizes.
        """
        from PIL import Image

        from mllm.data.badrows import ImageReadError

        image_processor = self.processor.image_processor
        images = []
        for item in paths:
            if isinstance(item, Image.Image):
                image = item.convert("RGB")
            else:
                try:
                    with Image.open(item) as opened:
                        image = opened.convert("RGB")
                except (OSError, ValueError, Image.DecompressionBombError) as error:  # the bomb: not an OSError
                    raise ImageReadError(item, f"cannot read image {os.fspath(item)!r}: {error}") from None
            if self.image_aspect_ratio == "pad":
                mean = tuple(int(round(x * 255)) for x in image_processor.image_mean)
                image = _expand_to_square(image, mean)
            else:
                height, width = _input_size(image_processor)
                image = image.resize((width, height), Image.BICUBIC)
            images.append(image)
        if not images:
            height, width = _input_size(image_processor)
            return torch.empty(0, 3, height, width, dtype=self._vision_dtype())
        pixel_values = image_processor(images=images, return_tensors="pt")["pixel_values"]
        return pixel_values.to(self._vision_dtype())

    def _vision_dtype(self) -> torch.dtype:
        return next(self._llava.model.vision_tower.parameters()).dtype

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image features ``[n, image_tokens, text_hidden]``: what the language model consumes."""
        llava = self._llava
        device = next(llava.parameters()).device
        outputs = llava.model.get_image_features(pixel_values=pixel_values.to(device, self._vision_dtype()),
                                                 return_dict=True)
        features = outputs.pooler_output
        return torch.stack(list(features)) if isinstance(features, (list, tuple)) else features

    def embed_inputs(self, input_ids: torch.Tensor, image_features: torch.Tensor | Sequence[torch.Tensor] | None = None
                     ) -> torch.Tensor:
        """``inputs_embeds`` for ``input_ids`` with image features put at the image tokens.

        ``image_features`` rows belong to the images in order of appearance over the
        batch (row-major), as :meth:`encode_images` returns them; index it to reuse one
        encoding for several sequences (``features[[0, 0, 1, 1]]`` for chosen/rejected
        pairs). ``model(inputs_embeds=..., attention_mask=...)`` then gives the logits
        ``model(input_ids=..., pixel_values=...)`` gives.
        """
        embeddings = self.model.get_input_embeddings()(input_ids)
        mask = input_ids == self.image_token_id
        n_tokens = int(mask.sum())
        if image_features is None:
            if n_tokens:
                raise ValueError(f"input_ids hold {n_tokens} image tokens but no image features were given")
            return embeddings
        if isinstance(image_features, (list, tuple)):
            image_features = torch.cat([f.reshape(-1, f.shape[-1]) for f in image_features]) if image_features else None
            if image_features is None:
                return self.embed_inputs(input_ids, None)
        flat = image_features.reshape(-1, image_features.shape[-1])
        if flat.shape[0] != n_tokens:
            raise ValueError(f"input_ids hold {n_tokens} image tokens but the image features cover {flat.shape[0]} "
                             f"({self.num_image_tokens} per image)")
        flat = flat.to(embeddings.device, embeddings.dtype)
        return embeddings.masked_scatter(mask.unsqueeze(-1).expand_as(embeddings), flat)

    # -- text -------------------------------------------------------------------------------

    def _tokenize_segments(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        image_id, count = self.image_token_id, self.num_image_tokens
        out = []
        for ids in encoded:
            if image_id in ids:
                expanded: list[int] = []
                for token in ids:
                    if token == image_id:
                        expanded.extend([image_id] * count)
                    else:
                        expanded.append(token)
                ids = expanded
            out.append(list(ids))
        return out

    def _start(self) -> list[int]:
        return [self.bos_token_id] if self.bos_token_id is not None else []

    def encode_conversation(self, turns: Any) -> dict[str, list[int]]:
        """``{"input_ids", "labels"}`` of a conversation (a ``Conversation`` or its turns).

        ``<s>`` + the chat template's segments, each tokenized on its own; labels are
        ``-100`` except on the assistant answers and the separator closing each (``</s>``).
        Sequences longer than ``max_length`` are cut at the end (``cut_from`` then holds
        the length before the cut); a cut through an image's tokens is an error (the image
        would no longer fit its features).
        """
        turns = getattr(turns, "turns", turns)
        segments = self.template.segments(turns, add_generation_prompt=False)
        input_ids = self._start()
        labels = [IGNORE_INDEX] * len(input_ids)
        image_id = self.image_token_id
        for segment, ids in zip(segments, self._tokenize_segments([s.text for s in segments]), strict=True):
            input_ids.extend(ids)
            if segment.learned:
                labels.extend(IGNORE_INDEX if token == image_id else token for token in ids)
            else:
                labels.extend([IGNORE_INDEX] * len(ids))
        if len(input_ids) > self.max_length:
            cut = self.max_length
            if input_ids[cut - 1] == image_id and input_ids[cut] == image_id:
                raise ValueError(f"conversation is {len(input_ids)} tokens; cutting it to max_length={self.max_length} "
                                 "would cut an image's tokens; raise max_length")
            return {"input_ids": input_ids[:cut], "labels": labels[:cut], "cut_from": len(input_ids)}
        return {"input_ids": input_ids, "labels": labels}

    def encode_prompt(self, turns: Any) -> list[int]:
        """Token ids of prompt turns (ending with a user turn) up to the assistant's cue.

        A true prefix of :meth:`encode_conversation` of the same turns plus an answer.
        Accepts turns, a ``Preference``-like object (``.prompt`` turns) or a plain string
        (one user turn, e.g. an ``EvalItem.prompt``).
        """
        from mllm.records import Turn

        if isinstance(turns, str):
            turns = [Turn("user", turns)]
        elif hasattr(turns, "turns") or (hasattr(turns, "prompt") and not isinstance(turns.prompt, str)):
            turns = getattr(turns, "turns", None) or turns.prompt
        elif hasattr(turns, "prompt"):
            turns = [Turn("user", turns.prompt)]
        segments = self.template.segments(turns, add_generation_prompt=True)
        input_ids = self._start()
        for ids in self._tokenize_segments([s.text for s in segments]):
            input_ids.extend(ids)
        return input_ids


def _expand_to_square(image: Any, background: tuple[int, ...]) -> Any:
    """LLaVA's ``expand2square``: paste the image centred on a square of ``background``."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), background)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


def _input_size(image_processor: Any) -> tuple[int, int]:
    crop = getattr(image_processor, "crop_size", None)
    if crop:
        crop = dict(crop) if not isinstance(crop, dict) else crop
        if crop.get("height") and crop.get("width"):
            return int(crop["height"]), int(crop["width"])
    size = dict(getattr(image_processor, "size", {}) or {})
    if size.get("height") and size.get("width"):
        return int(size["height"]), int(size["width"])
    edge = int(size.get("shortest_edge", 224))
    return edge, edge
