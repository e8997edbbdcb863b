"""One model adapter over transformers' vision-language classes; the family spec says what differs.

:class:`VisionLanguageAdapter` implements :class:`mllm.ModelAdapter` for every family of
:mod:`mllm_models.families` (one subclass per family only names its spec and config):

- ``init: tiny`` builds a small model from the config (small vision and text towers, a
  tokenizer trained on the spot, the family's real image processor and processor);
  ``path:`` loads a local ``save_pretrained`` folder (safetensors only; code in the folder
  runs only with ``trust_remote_code: true``). A folder holding a peft adapter loads the
  base folder it names and attaches the adapter, as the core's ``llava`` does.
- Sequences are built by the adapter: the family's chat template renders segments, each is
  tokenized on its own (exact assistant-only labels), ``<s>`` goes in front and each
  ``<image>`` expands to the family's placeholder tokens -- what the family's processor
  produces for the same text (the tests check it).
- Images are resized to one resolution per model (see :mod:`mllm_models.families`), so
  every image has ``num_image_tokens`` tokens. ``load_images`` gives the family's
  ``pixel_values`` (first dimension: images; LLaVA-NeXT's are ``[n, tiles + 1, 3, H, W]``).
  Qwen2-VL / Qwen2.5-VL, LLaVA-NeXT and LLaVA-OneVision with ``dynamic_resolution: true`` keep
  each image near its own size instead (:class:`PerImageResolutionAdapter`: ``image_inputs`` /
  ``image_token_counts``; ``encode_*`` take ``images=``).
- Extra forward inputs a family needs (LLaVA-NeXT's ``image_sizes``, Idefics3's 5-D pixel
  layout) are filled in by a forward pre-hook on the inner model, so
  ``model(input_ids=..., pixel_values=..., labels=...)`` works as methods call it, peft-wrapped too.
- Saved folders are ``save_pretrained`` folders with the processor and a ``chat_template``
  (tokenizer and processor), so plain transformers' ``AutoProcessor`` /
  ``AutoTokenizer.apply_chat_template`` work on them; plus ``mllm_model.json``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from mllm import ImageReadError, InputFileError, MissingFileError

from mllm_models.config import (
    Idefics3ModelConfig,
    LlavaNextModelConfig,
    LlavaOnevisionModelConfig,
    Qwen2VLModelConfig,
    VisionLanguageModelConfig,
    hub_id_problem,
)
from mllm_models.families import FAMILIES, Family
from mllm_models.templates import chat_template_jinja, template_of

IGNORE_INDEX = -100
META_FILE = "mllm_model.json"
BASE_OVERRIDES_FILE = "mllm_base_overrides.safetensors"
META_FORMAT = 1
_DTYPES = {None: None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as error:
        raise InputFileError(f"{path}: cannot read ({error})") from None


def _open_images(paths: Sequence[Any]) -> list[Any]:
    """RGB PIL images of image files (or PIL images); an unreadable file is an :class:`ImageReadError`."""
    from PIL import Image

    images = []
    for item in paths:
        if isinstance(item, Image.Image):
            images.append(item.convert("RGB"))
            continue
        try:
            with Image.open(item) as opened:
                images.append(opened.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise ImageReadError(item, f"cannot read image {os.fspath(item)!r}: {error}") from None
    return images


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _unwrap(model: Any) -> Any:
    return model.get_base_model() if _is_peft(model) else model


def _install_hook(model: Any, family: Family, options: dict[str, Any]) -> None:
    """A forward pre-hook on the inner model filling the inputs ``family`` derives from ``pixel_values``.

    On the inner module (``model.model``), because peft calls the outer model's ``forward``
    directly (no hooks) while the outer forward calls the inner module."""
    inner = model.model
    if getattr(inner, "_mllm_hook", None) is not None:
        inner._mllm_hook.remove()
    defaults = dict(options)

    def fill(module: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        pixel_values = kwargs.get("pixel_values")
        if pixel_values is not None:
            kwargs["pixel_values"] = family.adapt_pixel_values(pixel_values)
            for key, value in family.forward_defaults(pixel_values, defaults).items():
                if kwargs.get(key) is None:
                    kwargs[key] = value
        family.fill_inputs(module, kwargs, defaults)
        return args, kwargs

    inner._mllm_hook = inner.register_forward_pre_hook(fill, with_kwargs=True)


class VisionLanguageAdapter:
    """A vision-language model of one family with its processor and chat template (see the module docstring)."""

    family: Family
    config_class: type[VisionLanguageModelConfig] = VisionLanguageModelConfig
    #: packed rows and the shared prompt pass (mllm.training.packing) are exact for every family:
    #: per-sequence position ids and segmented attention reach the language model through the
    #: families' forwards, images follow ``image_index`` (their extra inputs, LLaVA-NeXT's
    #: ``image_sizes``, are derived from the reordered ``pixel_values`` by the forward hook), and
    #: Qwen2-VL / 2.5-VL get each sequence's own M-RoPE ids (``Qwen2VL.packed_rope_index``); off
    #: with dynamic_resolution (PerImageResolutionAdapter); tested in tests/test_packing_families.py
    supports_packed_sequences = True

    def __init__(self, model: Any, processor: Any, template: str, *, options: dict[str, Any] | None = None,
                 max_length: int = 512, base_path: Path | None = None) -> None:
        self.model = model
        self.processor = processor
        self.template = template_of(template) if isinstance(template, str) else template
        self.max_length = max_length
        self.base_path = Path(base_path).resolve() if base_path is not None else None
        self.base_overrides: dict[str, torch.Tensor] = {}
        self.options = dict(options or {})
        self.options["size"] = list(self.family.image_size(self._inner, self.options))
        _install_hook(self._inner, self.family, self.options)
        self._expansion = self.family.expansion(self._inner, processor, self.options)
        self._set_chat_template()
        self._sync_generation_config()

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def source_path(cls, config: VisionLanguageModelConfig | None) -> Path | None:
        """The ``path:`` folder of a config, else ``None`` (a tiny model is built)."""
        if config is None or config.path is None:
            return None
        return Path(config.path).expanduser()

    @classmethod
    def example_config(cls, tmp_path: Path) -> dict[str, Any]:
        """The conformance kit's tiny model: as small as the family allows."""
        return {"init": "tiny", "image_size": 16, "patch_size": 8, "vision_hidden_size": 16,
                "vision_intermediate_size": 32, "text_hidden_size": 32, "text_intermediate_size": 64,
                "text_layers": 1, "max_length": 256}

    @classmethod
    def from_config(cls, config: VisionLanguageModelConfig, seed: int = 0) -> VisionLanguageAdapter:
        """Load ``config.path``, or build the tiny model the config describes (seeded)."""
        if config.path is not None:
            return cls.load(Path(config.path).expanduser(), config=config)
        model, processor, options = cls.family.build_tiny(config, seed)
        model.to(_DTYPES[config.dtype])
        model.eval()
        return cls(model, processor, getattr(config, "template", cls.family.template), options=options,
                   max_length=config.max_length)

    @classmethod
    def _load_model(cls, path: Path, dtype: str | None, trust_remote_code: bool) -> Any:
        from transformers import AutoConfig

        if not any(path.glob("*.safetensors")):
            raise InputFileError(f"{path} holds no .safetensors weights; mllm loads safetensors only "
                                 "(convert pickled .bin weights with transformers' save_pretrained first)")
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        if config.model_type != cls.family.model_type:
            known = {f.model_type: f.name for f in FAMILIES.values()}
            hint = f"use model name {known[config.model_type]}" if config.model_type in known else \
                f"this adapter reads {cls.family.model_type} folders"
            raise InputFileError(f"{path}: model_type {config.model_type!r} is not {cls.family.name}'s "
                                 f"({cls.family.model_type!r}); {hint}")
        kwargs: dict[str, Any] = {"config": config, "use_safetensors": True, "attn_implementation": "sdpa"}
        if dtype is not None:
            kwargs["dtype"] = _DTYPES[dtype]
        model = cls.family.model_class().from_pretrained(path, **kwargs)
        model.eval()
        return model

    @classmethod
    def load(cls, path: str | os.PathLike, *, config: VisionLanguageModelConfig | None = None) -> VisionLanguageAdapter:
        """A folder written by :meth:`save`, a downloaded ``save_pretrained`` folder, or a peft adapter folder."""
        path = Path(path).expanduser()
        if not path.is_dir():
            problem = hub_id_problem(str(path))
            raise MissingFileError(problem or f"model folder {path} does not exist")
        meta = _read_json(path / META_FILE)
        chosen = config.model_fields_set if config is not None else set()

        def option(name: str, default: Any) -> Any:
            if config is not None and name in chosen:
                return getattr(config, name)
            return meta.get(name, default)

        dtype = config.dtype if config is not None and "dtype" in chosen else None
        trust = bool(config is not None and config.trust_remote_code)
        overrides: dict[str, torch.Tensor] = {}
        if (path / "adapter_config.json").is_file():
            base_path = cls._adapter_base(path, meta)
            model, overrides = cls._load_peft(path, base_path, dtype, trust)
        else:
            if not (path / "config.json").is_file():
                raise MissingFileError(f"{path} holds no config.json: not a save_pretrained model folder")
            base_path = path
            model = cls._load_model(path, dtype, trust)
        processor_dir = path if (path / "tokenizer_config.json").is_file() else base_path
        processor = cls.family.load_processor(processor_dir, trust)
        options = cls.family.options_for(_unwrap(model), processor, config, meta.get("options", {}))
        adapter = cls(model, processor, option("template", cls.family.template), options=options,
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
        if not candidates and (named := _read_json(path / "adapter_config.json").get("base_model_name_or_path")):
            candidates.append(Path(named).expanduser())
        for candidate in candidates:
            if (candidate / "config.json").is_file():
                return candidate
        raise MissingFileError(f"{path} is a LoRA adapter whose base model folder is missing "
                               f"(looked for: {', '.join(map(str, candidates)) or 'nothing recorded'})")

    @classmethod
    def _load_peft(cls, path: Path, base_path: Path, dtype: str | None, trust: bool) -> tuple[Any, dict[str, Any]]:
        from peft import PeftModel
        from safetensors.torch import load_file

        base = cls._load_model(base_path, dtype, trust)
        state: dict[str, torch.Tensor] = {}
        if (path / BASE_OVERRIDES_FILE).is_file():
            state = load_file(str(path / BASE_OVERRIDES_FILE))
            missing = set(state) - set(base.state_dict())
            if missing:
                raise InputFileError(f"{path / BASE_OVERRIDES_FILE}: weights {sorted(missing)[:3]} are not in the "
                                     f"base model {base_path}")
            base.load_state_dict(state, strict=False)
        model = PeftModel.from_pretrained(base, str(path))
        model.eval()
        return model, state

    # -- saving -------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike, *, merge: bool = False) -> None:
        """Write a folder :meth:`load` reads: ``save_pretrained`` (safetensors), the processor with its
        ``chat_template``, and ``mllm_model.json``; a LoRA model as its adapter naming its base folder."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._set_chat_template()
        meta: dict[str, Any] = {"format": META_FORMAT, "family": self.family.name, "template": self.template.name,
                                "max_length": self.max_length,
                                "options": {k: v for k, v in self.options.items() if k != "size"}}
        if _is_peft(self.model) and merge:
            self.model = self.model.merge_and_unload()
        if _is_peft(self.model):
            base_path = self.base_path
            if base_path is None or not (base_path / "config.json").is_file():
                base_path = path / "base"
                copy.deepcopy(self.model).unload().save_pretrained(base_path)
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
        """Trainable base weights of a peft model that peft itself does not save (loaded ones kept)."""
        prefix = "base_model.model."
        out: dict[str, torch.Tensor] = {}
        current = dict(self.model.named_parameters())
        for key in self.base_overrides:
            head, _, leaf = key.rpartition(".")
            for name in (prefix + key, f"{prefix}{head}.base_layer.{leaf}"):
                if name in current:
                    out[key] = current[name].detach().to("cpu").contiguous().clone()
                    break
        for name, param in current.items():
            if not param.requires_grad or any(s in name for s in ("lora_", "modules_to_save", "original_module")):
                continue
            key = (name[len(prefix):] if name.startswith(prefix) else name).replace(".base_layer.", ".")
            out[key] = param.detach().to("cpu").contiguous().clone()
        return out

    def _set_chat_template(self) -> None:
        # the Jinja of the template the model is trained with, on the processor and its tokenizer
        jinja = chat_template_jinja(self.template.name)
        self.processor.chat_template = jinja
        self.processor.tokenizer.chat_template = jinja

    # -- parts --------------------------------------------------------------------------------

    @property
    def _inner(self) -> Any:
        """The transformers model (unwrapped from peft)."""
        return _unwrap(self.model)

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
        return int(self._inner.config.image_token_id)

    @property
    def num_image_tokens(self) -> int:
        """Image tokens one image occupies (its features; the family's markers around them not counted)."""
        return self.family.num_image_tokens(self._inner, self.processor, self.options)

    def module_names(self) -> dict[str, str]:
        """Dotted paths in ``self.model`` of the vision tower, projector, language model and LM head."""
        wanted = self.family.parts(self._inner)
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
        generation = getattr(self._inner, "generation_config", None)
        if generation is not None:
            generation.pad_token_id = self.pad_token_id
            generation.eos_token_id = self.eos_token_id
            if self.bos_token_id is not None:
                generation.bos_token_id = self.bos_token_id

    # -- images -------------------------------------------------------------------------------

    def _vision_dtype(self) -> torch.dtype:
        return next(self.family.parts(self._inner)["vision_tower"].parameters()).dtype

    def load_images(self, paths: Sequence[Any]) -> torch.Tensor:
        """``pixel_values`` of image files (or PIL images), each resized to the model's one resolution
        (``options['size']``, height x width) and then put through the family's image processor."""
        from PIL import Image

        height, width = self.options["size"]
        images = []
        for image in _open_images(paths):
            if image.size != (width, height):
                image = image.resize((width, height), Image.BICUBIC)
            images.append(image)
        if not images:
            return torch.empty(0, 3, height, width, dtype=self._vision_dtype())
        return self.family.pixel_values(self.processor, images, self.options).to(self._vision_dtype())

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image features as the language model consumes them, ``[n, num_image_tokens, hidden]``."""
        device = next(self._inner.parameters()).device
        return self.family.features(self._inner, pixel_values.to(device, self._vision_dtype()), self.options)

    def embed_inputs(self, input_ids: torch.Tensor, image_features: torch.Tensor | Sequence[torch.Tensor] | None = None
                     ) -> torch.Tensor:
        """``inputs_embeds`` for ``input_ids`` with image features put at the image tokens (rows of
        ``image_features`` follow the images in order over the batch)."""
        embeddings = self.model.get_input_embeddings()(input_ids)
        mask = input_ids == self.image_token_id
        n_tokens = int(mask.sum())
        if isinstance(image_features, (list, tuple)):
            image_features = torch.cat([f.reshape(-1, f.shape[-1]) for f in image_features]) if image_features else None
        if image_features is None:
            if n_tokens:
                raise ValueError(f"input_ids hold {n_tokens} image tokens but no image features were given")
            return self._tag(embeddings, input_ids)
        flat = image_features.reshape(-1, image_features.shape[-1])
        if flat.shape[0] != n_tokens:
            raise ValueError(f"input_ids hold {n_tokens} image tokens but the image features cover {flat.shape[0]} "
                             f"({self.num_image_tokens} per image)")
        flat = flat.to(embeddings.device, embeddings.dtype)
        return self._tag(embeddings.masked_scatter(mask.unsqueeze(-1).expand_as(embeddings), flat), input_ids)

    @staticmethod
    def _tag(embeddings: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        # families whose position ids depend on the tokens (M-RoPE) read them back in their forward hook
        embeddings._mllm_input_ids = input_ids
        return embeddings

    # -- text ---------------------------------------------------------------------------------

    def _tokenize_segments(self, texts: list[str], counts: list[int] | None = None) -> list[list[int]]:
        """Segments' ids with each ``<image>`` expanded: to ``self._expansion``, or with ``counts``
        (dynamic resolution) to that image's own number of image tokens, in order."""
        if not texts:
            return []
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        image_id = self.image_token_id
        remaining = iter(counts) if counts is not None else None
        out = []
        for ids in encoded:
            expanded: list[int] = []
            for token in ids:
                if token != image_id:
                    expanded.append(token)
                elif remaining is None:
                    expanded.extend(self._expansion)
                else:
                    count = next(remaining, None)
                    if count is None:
                        raise InputFileError(f"the turns hold more <image> than the {len(counts)} image(s) given; "
                                             "with dynamic_resolution pass the turns' images (images=)")
                    expanded.extend([image_id] * count)
            out.append(expanded)
        if remaining is not None and next(remaining, None) is not None:
            raise InputFileError(f"{len(counts)} image(s) given but the turns hold fewer <image>")
        return out

    def _image_counts(self, turns: Any, images: Sequence[Any] | None) -> list[int] | None:
        """Per-image token counts when they vary (dynamic resolution), else ``None``."""
        return None

    def _start(self) -> list[int]:
        return [self.bos_token_id] if self.bos_token_id is not None else []

    @property
    def _image_part_ids(self) -> set[int]:
        return set(self._expansion)

    def encode_conversation(self, turns: Any, images: Sequence[Any] | None = None) -> dict[str, list[int]]:
        """``{"input_ids", "labels"}``: ``<s>`` + the template's segments, each tokenized on its own;
        labels are ``-100`` except on the assistant answers and the stop closing each. A sequence
        longer than ``max_length`` is cut (``cut_from``: its length before); a cut through an
        image's tokens is an error."""
        counts = self._image_counts(turns, images)
        turns = getattr(turns, "turns", turns)
        segments = self.template.segments(turns, add_generation_prompt=False)
        input_ids = self._start()
        labels = [IGNORE_INDEX] * len(input_ids)
        image_parts = self._image_part_ids
        for segment, ids in zip(segments, self._tokenize_segments([s.text for s in segments], counts), strict=True):
            input_ids.extend(ids)
            if segment.learned:
                labels.extend(IGNORE_INDEX if token in image_parts else token for token in ids)
            else:
                labels.extend([IGNORE_INDEX] * len(ids))
        if len(input_ids) > self.max_length:
            cut = self.max_length
            image_id = self.image_token_id
            if input_ids[cut - 1] == image_id or input_ids[cut] == image_id:
                raise ValueError(f"conversation is {len(input_ids)} tokens; cutting it to max_length={self.max_length} "
                                 "would cut an image's tokens; raise max_length")
            return {"input_ids": input_ids[:cut], "labels": labels[:cut], "cut_from": len(input_ids)}
        return {"input_ids": input_ids, "labels": labels}

    def encode_prompt(self, turns: Any, images: Sequence[Any] | None = None) -> list[int]:
        """Ids of prompt turns up to the assistant's cue: a true prefix of :meth:`encode_conversation`
        of the same turns plus an answer (turns, a record with ``.turns`` / ``.prompt``, or a string)."""
        from mllm import Turn

        counts = self._image_counts(turns, images)
        if isinstance(turns, str):
            turns = [Turn("user", turns)]
        elif hasattr(turns, "turns") or (hasattr(turns, "prompt") and not isinstance(turns.prompt, str)):
            turns = getattr(turns, "turns", None) or turns.prompt
        elif hasattr(turns, "prompt"):
            turns = [Turn("user", turns.prompt)]
        segments = self.template.segments(turns, add_generation_prompt=True)
        input_ids = self._start()
        for ids in self._tokenize_segments([s.text for s in segments], counts):
            input_ids.extend(ids)
        return input_ids


class PerImageResolutionAdapter(VisionLanguageAdapter):
    """A family that can keep each image at its own resolution: the model key ``dynamic_resolution``
    (off by default: one resolution, as every family).

    On, the adapter has the core's :class:`mllm.ImageTokenCounts` capability in force: the family's
    image processor runs on each image at its own size (``Family.dynamic_inputs``),
    :meth:`image_inputs` gives ``pixel_values`` and the per-image inputs the forward needs beside
    them (``Family.dynamic_keys``: Qwen2-VL's ``image_grid_thw``, LLaVA-NeXT's ``image_sizes``),
    :meth:`image_token_counts` each image's own count (from its size alone), each ``<image>``
    expands to its own count (``encode_*`` take ``images=``; turns with ``<image>`` but no images
    are an error, never one count per image) and :meth:`encode_images` gives a list of
    ``[tokens_i, hidden]``. Packed and shared-prompt rows are off with it
    (:attr:`packed_sequences_problem`). Off, everything is as for the other families."""

    @property
    def dynamic_resolution(self) -> bool:
        """Each image at its own resolution (its own per-image inputs and token count)."""
        return bool(self.options.get("dynamic_resolution"))

    @property
    def supports_packed_sequences(self) -> bool:  # type: ignore[override]
        """Packed rows and the shared prompt: at the one image size; off with ``dynamic_resolution``
        (:attr:`packed_sequences_problem`)."""
        return not self.dynamic_resolution

    @property
    def packed_sequences_problem(self) -> str | None:
        """Why packed rows are off (``mllm.layout_support`` logs it), ``None`` when they are on."""
        return self.family.dynamic_packing_problem() if self.dynamic_resolution else None

    def _dynamic(self, images: Sequence[Any]) -> dict[str, torch.Tensor]:
        out = self.family.dynamic_inputs(self.processor, _open_images(images), self.options)
        out["pixel_values"] = out["pixel_values"].to(self._vision_dtype())
        # the forward hook reads the per-image inputs back when only pixel_values reach the model
        out["pixel_values"]._mllm_image_inputs = {k: v for k, v in out.items() if k != "pixel_values"}
        return out

    def image_inputs(self, images: Sequence[Any]) -> dict[str, torch.Tensor]:
        """``pixel_values`` (and, with dynamic resolution, the per-image inputs, e.g. ``image_grid_thw`` or
        ``image_sizes``) of images, to pass to the model beside ``input_ids``."""
        if not self.dynamic_resolution:
            return {"pixel_values": self.load_images(images)}
        return self._dynamic(images)

    def image_token_counts(self, images: Sequence[Any]) -> list[int]:
        """Image tokens per image (from its size; no pixels processed), or ``num_image_tokens`` each when off."""
        if not self.dynamic_resolution:
            return [self.num_image_tokens] * len(images)
        if not images:
            return []
        return self.family.dynamic_token_counts(self._inner, _open_images(images), self.options)

    def _image_counts(self, turns: Any, images: Sequence[Any] | None) -> list[int] | None:
        if not self.dynamic_resolution:
            return None
        if images is None:
            images = getattr(turns, "images", None) or []
        return self.image_token_counts(list(images))

    def load_images(self, paths: Sequence[Any]) -> torch.Tensor:
        """As the other families'; with dynamic resolution the image processor's pixels of every image at
        its own size (the per-image inputs: :meth:`image_inputs`; they ride along on the tensor)."""
        if not self.dynamic_resolution:
            return super().load_images(paths)
        return self._dynamic(paths)["pixel_values"]

    def encode_images(self, pixel_values: torch.Tensor, *args: torch.Tensor, **inputs: torch.Tensor
                      ) -> torch.Tensor | list[torch.Tensor]:
        """As the other families'; with dynamic resolution a list of ``[tokens_i, hidden]``, one per image
        (the per-image inputs as arguments, positional in ``Family.dynamic_keys`` order, or read from
        ``load_images``' tensor)."""
        if not self.dynamic_resolution:
            return super().encode_images(pixel_values)
        given = {**self.family.tagged_inputs(pixel_values), **dict(zip(self.family.dynamic_keys, args, strict=False)),
                 **{k: v for k, v in inputs.items() if v is not None}}
        missing = [key for key in self.family.dynamic_keys if key not in given]
        if missing:
            raise InputFileError(f"{self.family.name} dynamic_resolution: encode_images needs {', '.join(missing)} "
                                 "(from adapter.image_inputs(images))")
        device = next(self._inner.parameters()).device
        return self.family.dynamic_features(self._inner, pixel_values.to(device, self._vision_dtype()), given)


class LlavaNextAdapter(PerImageResolutionAdapter):
    """LLaVA-NeXT (``LlavaNextForConditionalGeneration``, full ``LlavaNextProcessor``); any-resolution
    per image with ``dynamic_resolution: true`` (:class:`PerImageResolutionAdapter`)."""

    family = FAMILIES["llava-next"]
    config_class = LlavaNextModelConfig


class Idefics3Adapter(VisionLanguageAdapter):
    """Idefics3 / SmolVLM-style (``Idefics3ForConditionalGeneration``, full ``Idefics3Processor``)."""

    family = FAMILIES["idefics3"]
    config_class = Idefics3ModelConfig


class LlavaOnevisionAdapter(PerImageResolutionAdapter):
    """LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``; composed processor: PIL image processor +
    tokenizer); any-resolution per image (anyres_max_9) with ``dynamic_resolution: true``."""

    family = FAMILIES["llava-onevision"]
    config_class = LlavaOnevisionModelConfig


class SmolVLMAdapter(VisionLanguageAdapter):
    """SmolVLM (``SmolVLMForConditionalGeneration``; composed processor: PIL image processor + tokenizer)."""

    family = FAMILIES["smolvlm"]
    config_class = Idefics3ModelConfig


def _mrope_generation_positions(self: Any, inputs_tensor: Any, model_kwargs: dict[str, Any]) -> Any:
    """Qwen2-VL's ``_prepare_position_ids_for_generation`` given the image inputs it needs.

    ``generate`` computes M-RoPE ids of the prompt only when ``mm_token_type_ids`` and
    ``image_grid_thw`` are among its kwargs; the core passes encoded images
    (``mm_encoder_outputs``, one grid per image: derived here from the prompt's tokens) or,
    with dynamic resolution, ``image_inputs`` (the grid without ``mm_token_type_ids``: those
    are derived here from the prompt's tokens)."""
    kwargs = dict(model_kwargs)
    ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else inputs_tensor
    missing = kwargs.get("image_grid_thw") is None or kwargs.get("mm_token_type_ids") is None
    if missing and ids is not None and ids.dim() == 2:
        probe = {"input_ids": ids, "position_ids": None, "image_grid_thw": kwargs.get("image_grid_thw")}
        self._mllm_family.fill_inputs(self.model, probe, self._mllm_options)
        for key in ("image_grid_thw", "mm_token_type_ids"):
            if probe.get(key) is not None:
                kwargs[key] = probe[key]
    return type(self)._prepare_position_ids_for_generation(self, inputs_tensor, kwargs)


class Qwen2VLAdapter(PerImageResolutionAdapter):
    """Qwen2-VL (``Qwen2VLForConditionalGeneration``; composed processor: ``Qwen2VLImageProcessorPil`` +
    tokenizer). M-RoPE position ids depend on the whole prompt, so the answer engine's prompt caches
    and choice trees are off for it (``uses_position_caches = False``). With ``dynamic_resolution``
    each image keeps its size (``smart_resize``), with its own ``image_grid_thw``
    (:class:`PerImageResolutionAdapter`); packed rows stay off then, as they do not carry each
    image's grid to the per-sequence M-RoPE ids."""

    family = FAMILIES["qwen2-vl"]
    config_class = Qwen2VLModelConfig
    uses_position_caches = False

    @classmethod
    def example_config(cls, tmp_path: Path) -> dict[str, Any]:
        """As the other families', with a 4x4 patch grid: 4 image tokens whose M-RoPE ids differ from 1-D ones."""
        return {**super().example_config(tmp_path), "image_size": 32}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        import types

        inner = self._inner
        inner._mllm_family, inner._mllm_options = self.family, self.options
        inner._prepare_position_ids_for_generation = types.MethodType(_mrope_generation_positions, inner)


class Qwen25VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``; as Qwen2-VL, composed processor)."""

    family = FAMILIES["qwen2.5-vl"]
