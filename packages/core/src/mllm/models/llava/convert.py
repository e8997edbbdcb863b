"""``mllm convert llava-original SRC DST``: checkpoints of the original LLaVA repository
into the Hugging Face ``LlavaForConditionalGeneration`` folder the ``llava`` adapter loads.

The original layout (haotian-liu/LLaVA) is a ``LlavaLlamaForCausalLM``:

- ``config.json`` with the Llama keys plus ``mm_vision_tower`` (a CLIP name such as
  ``openai/clip-vit-large-patch14-336``), ``mm_hidden_size``, ``mm_projector_type``
  (``linear`` | ``mlp2x_gelu``), ``mm_vision_select_layer``, ``mm_vision_select_feature``
  and ``image_aspect_ratio``;
- weights in ``pytorch_model*.bin`` or ``model*.safetensors``: the language model under
  ``model.*`` / ``lm_head.*``, the projector under ``model.mm_projector.*`` (``0`` and
  ``2`` for ``mlp2x_gelu``) and, in some checkpoints, the vision tower under
  ``model.vision_tower.vision_tower.*``;
- stage-1 outputs: only ``mm_projector.bin`` (the language model comes from ``--model-base``);
- LoRA outputs: ``adapter_config.json`` + ``adapter_model.bin`` (or ``.safetensors``) +
  ``non_lora_trainables.bin`` (the projector); the language model comes from
  ``--model-base`` and LoRA is merged into it (``W += B @ A * alpha / r``).

The vision tower is usually referenced by name only and nothing can be downloaded here:
``--vision-tower`` points at a local CLIP folder (``CLIPVisionModel`` or ``CLIPModel``
``save_pretrained``, with its ``preprocessor_config.json``). Every ``.bin`` is read with
``torch.load(..., weights_only=True)``; the result is written as safetensors by
:meth:`mllm.models.llava.adapter.LlavaAdapter.save`. LLaVA marks images with a token id outside
the vocabulary; the converted tokenizer gets an ``<image>`` token (its embedding is the
mean of the others, as llava-hf's conversion does) when it has none.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from mllm.errors import ConvertError

IMAGE_TOKEN = "<image>"
LLAMA_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
    "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings", "attention_bias", "initializer_range",
    "head_dim", "mlp_bias",
)


# -- reading weights ----------------------------------------------------------------------------


def load_weights_file(path: Path) -> dict[str, Any]:
    """One weights file: ``.safetensors``, or a ``.bin`` read with ``weights_only=True``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from mllm.models.pickles import CONVERT_HINT, load_weights_only, refusal_reason

    try:
        state = load_weights_only(path)
    except Exception as error:  # pickles with code in them are refused by weights_only
        raise ConvertError(f"{path}: refused: a pickle that is not plain weights ({refusal_reason(error)}); "
                           f"loading it could run code; {CONVERT_HINT}") from None
    if not isinstance(state, dict):
        raise ConvertError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def load_folder_weights(folder: Path) -> dict[str, Any]:
    """All model weights of a folder (sharded or not), preferring safetensors."""
    files = sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    state: dict[str, Any] = {}
    for file in files:
        state.update(load_weights_file(file))
    return state


def _read_config(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise ConvertError(f"{folder}: no such folder; SRC must be an original LLaVA checkpoint folder")
    path = folder / "config.json"
    if not path.is_file():
        raise ConvertError(f"{folder} has no config.json; SRC must be an original LLaVA checkpoint folder")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConvertError(f"{path}: cannot be read as JSON ({error}); SRC must be an original LLaVA checkpoint "
                           "folder") from None


# -- key mapping ----------------------------------------------------------------------------------


def map_original_key(key: str, projector_type: str) -> str | None:
    """The Hugging Face LLaVA key of an original-layout key (``None``: the vision tower, mapped separately)."""
    if key.startswith("model.vision_tower."):
        return None
    if key.startswith("model.mm_projector."):
        rest = key[len("model.mm_projector."):]
        if projector_type == "linear":
            return f"model.multi_modal_projector.linear_1.{rest}"
        index, _, param = rest.partition(".")
        layer = {"0": "linear_1", "2": "linear_2"}.get(index)
        if layer is None:
            raise ConvertError(f"projector weight {key!r} does not fit mm_projector_type {projector_type!r} "
                               "(expected mm_projector.0.* and mm_projector.2.*)")
        return f"model.multi_modal_projector.{layer}.{param}"
    if key.startswith("lm_head."):
        return key
    if key.startswith("model."):
        return "model.language_model." + key[len("model."):]
    raise ConvertError(f"unexpected weight {key!r}: not under model.* or lm_head.* (is this an original LLaVA checkpoint?)")


def strip_peft_prefix(key: str) -> str:
    """``base_model.model.model.mm_projector.0.weight`` -> ``model.mm_projector.0.weight`` (LLaVA's own rule)."""
    if key.startswith("base_model.model."):
        key = key[len("base_model.model."):]
    elif key.startswith("base_model."):
        key = key[len("base_model."):]
    if key.startswith("model.model."):
        key = key[len("model."):]
    return key


def merge_lora(state: dict[str, Any], adapter: dict[str, Any], adapter_config: dict[str, Any]) -> int:
    """Merge LoRA pairs into ``state`` (original-layout keys); returns how many weights changed."""
    import math

    rank = int(adapter_config.get("r", 8))
    alpha = float(adapter_config.get("lora_alpha", rank))
    scale = alpha / math.sqrt(rank) if adapter_config.get("use_rslora") else alpha / rank
    if adapter_config.get("fan_in_fan_out"):
        raise ConvertError("LoRA with fan_in_fan_out is not supported (LLaVA's Llama layers do not use it)")
    pairs: dict[str, dict[str, Any]] = {}
    for key, value in adapter.items():
        match = re.match(r"(.*)\.lora_([AB])(?:\.default)?\.weight$", key)
        if match:
            pairs.setdefault(match.group(1), {})[match.group(2)] = value
        elif "lora_" in key:
            raise ConvertError(f"LoRA weight {key!r} is not a lora_A/lora_B matrix; cannot merge it")
    changed = 0
    for module, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise ConvertError(f"LoRA module {module!r} lacks lora_A or lora_B")
        target = strip_peft_prefix(module) + ".weight"
        if target not in state:
            raise ConvertError(f"LoRA targets {target!r}, which the base model does not have (wrong --model-base?)")
        weight = state[target]
        delta = (pair["B"].float() @ pair["A"].float()) * scale
        state[target] = (weight.float() + delta).to(weight.dtype)
        changed += 1
    return changed


# -- conversion ------------------------------------------------------------------------------------


def _vision_parts(vision_tower: Path | None, state: dict[str, Any], config: dict[str, Any]) -> tuple[Any, dict, Any]:
    """(CLIPVisionConfig, vision weights keyed without prefix, image processor)."""
    from transformers import AutoConfig, CLIPVisionConfig
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    inline = {k[len("model.vision_tower.vision_tower."):]: v for k, v in state.items()
              if k.startswith("model.vision_tower.vision_tower.")}
    if vision_tower is None:
        raise ConvertError(
            f"the checkpoint names its vision tower {config.get('mm_vision_tower')!r}, which cannot be downloaded here; "
            "pass --vision-tower PATH to a local CLIP folder (CLIPVisionModel or CLIPModel save_pretrained)")
    if not (vision_tower / "config.json").is_file():
        raise ConvertError(f"--vision-tower {vision_tower}: no config.json; give a CLIP save_pretrained folder")
    clip_config = AutoConfig.from_pretrained(vision_tower)
    vision_config = getattr(clip_config, "vision_config", clip_config)
    if not isinstance(vision_config, CLIPVisionConfig):
        raise ConvertError(f"--vision-tower {vision_tower}: a {type(vision_config).__name__}, not a CLIP vision model")
    weights = inline or {k: v for k, v in load_folder_weights(vision_tower).items()
                         if k.startswith("vision_model.") or not k.startswith(("text_model.", "text_projection",
                                                                               "visual_projection", "logit_scale"))}
    if not weights:
        raise ConvertError(f"--vision-tower {vision_tower}: no vision weights found")
    if int(config.get("mm_hidden_size", vision_config.hidden_size)) != vision_config.hidden_size:
        raise ConvertError(f"--vision-tower {vision_tower} has hidden size {vision_config.hidden_size} but the checkpoint's "
                           f"mm_hidden_size is {config['mm_hidden_size']}; give the CLIP it was trained with "
                           f"({config.get('mm_vision_tower')})")
    if (vision_tower / "preprocessor_config.json").is_file():
        image_processor = CLIPImageProcessorPil.from_pretrained(vision_tower)
    else:
        side = vision_config.image_size
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return vision_config, weights, image_processor


def convert_llava_original(src: Path, dst: Path, *, vision_tower: Path | None = None, model_base: Path | None = None,
                           template: str = "llava-1.5") -> dict[str, Any]:
    """Convert ``src`` (original LLaVA layout) into ``dst`` (the adapter's layout); returns a summary."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    for option, folder in (("--vision-tower", vision_tower), ("--model-base", model_base)):
        if folder is not None and not Path(folder).expanduser().is_dir():
            raise ConvertError(f"{option} {folder}: no such folder")
    if dst.exists() and not dst.is_dir():
        raise ConvertError(f"DST {dst} is a file; give a folder to write the converted model to")
    config = _read_config(src)
    if not isinstance(config, dict) or not {"mm_vision_tower", "mm_projector_type", "mm_hidden_size"} & set(config):
        architectures = config.get("architectures") if isinstance(config, dict) else None
        raise ConvertError(f"{src}/config.json has no mm_vision_tower / mm_projector_type: not an original LLaVA "
                           f"checkpoint (architectures: {architectures})")
    projector_type = config.get("mm_projector_type", "linear")
    if projector_type not in ("linear", "mlp2x_gelu"):
        raise ConvertError(f"mm_projector_type {projector_type!r} is not supported; linear and mlp2x_gelu are")
    # the source is checked before torch and transformers are imported (seconds), so a wrong SRC fails at once
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlavaConfig, LlavaProcessor

    from mllm.models.attention import pick_attn_implementation
    from mllm.models.llava.adapter import LlavaAdapter, llava_class

    lora = (src / "adapter_config.json").is_file()
    state = load_folder_weights(src) if not lora else {}
    sources = []
    if model_base is not None:
        base_state = load_folder_weights(Path(model_base).expanduser())
        if not base_state:
            raise ConvertError(f"--model-base {model_base}: no pytorch_model*.bin or model*.safetensors")
        state = {**base_state, **state}
        sources.append(f"language model from {model_base}")
    elif lora or not any(k.startswith("model.layers.") for k in state):
        raise ConvertError(f"{src} holds no language model weights (a LoRA or projector-only output); "
                           "pass --model-base PATH to the language model it was trained from (e.g. vicuna-7b-v1.5)")
    projector_file = src / "mm_projector.bin"
    if projector_file.is_file():
        state.update(load_weights_file(projector_file))
        sources.append("projector from mm_projector.bin")
    if lora:
        non_lora = src / "non_lora_trainables.bin"
        if non_lora.is_file():
            state.update({strip_peft_prefix(k): v for k, v in load_weights_file(non_lora).items()})
            sources.append("non-LoRA weights from non_lora_trainables.bin")
        adapter_files = sorted(src.glob("adapter_model*.safetensors")) or sorted(src.glob("adapter_model*.bin"))
        if not adapter_files:
            raise ConvertError(f"{src} has adapter_config.json but no adapter_model.bin / .safetensors")
        adapter = {}
        for file in adapter_files:
            adapter.update(load_weights_file(file))
        merged = merge_lora(state, adapter, json.loads((src / "adapter_config.json").read_text()))
        sources.append(f"LoRA merged into {merged} weights")
    if not any(k.startswith("model.mm_projector.") for k in state):
        raise ConvertError(f"{src}: no projector weights (model.mm_projector.* in the weights, mm_projector.bin or "
                           "non_lora_trainables.bin)")

    vision_config, vision_weights, image_processor = _vision_parts(vision_tower and Path(vision_tower).expanduser(),
                                                                   state, config)
    tokenizer_dir = src if any((src / n).is_file() for n in ("tokenizer_config.json", "tokenizer.json", "tokenizer.model")) \
        else Path(model_base).expanduser() if model_base else src
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False)

    mapped: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith("model.vision_tower."):
            continue
        new = map_original_key(key, projector_type)
        if new is not None:
            mapped[new] = value
    vocab = mapped["model.language_model.embed_tokens.weight"].shape[0]
    added = False
    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) in (None, tokenizer.unk_token_id):
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
        added = True
    if len(tokenizer) > vocab:  # new rows: the mean embedding (llava-hf's conversion does the same)
        for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
            if key in mapped:
                old = mapped[key]
                extra = old.float().mean(dim=0, keepdim=True).repeat(len(tokenizer) - vocab, 1).to(old.dtype)
                mapped[key] = torch.cat([old, extra])
        vocab = len(tokenizer)

    text_values = {k: config[k] for k in LLAMA_KEYS if k in config}
    text_values["vocab_size"] = vocab
    text_config = LlamaConfig(**text_values)
    select = config.get("mm_vision_select_feature", "patch")
    strategy = {"patch": "default", "cls_patch": "full"}.get(select)
    if strategy is None:
        raise ConvertError(f"mm_vision_select_feature {select!r} is not supported (patch or cls_patch)")
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    llava_config = LlavaConfig(
        vision_config=vision_config, text_config=text_config, image_token_index=image_token_id,
        image_seq_length=patches + (1 if strategy == "full" else 0), projector_hidden_act="gelu",
        vision_feature_layer=int(config.get("mm_vision_select_layer", -2)),
        vision_feature_select_strategy=strategy, mllm_projector=projector_type,
    )
    llava_config._attn_implementation = pick_attn_implementation()
    try:  # every weight is loaded below: skip the random initialization
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        from contextlib import nullcontext as no_init_weights
    with no_init_weights():
        model = llava_class(llava_config)(llava_config)
    targets = set(model.state_dict())
    for key, value in vision_weights.items():
        candidates = [f"model.vision_tower.{key}", f"model.vision_tower.{key.removeprefix('vision_model.')}",
                      f"model.vision_tower.vision_model.{key}"]
        found = next((c for c in candidates if c in targets), None)
        if found is None:
            if key.endswith("position_ids"):
                continue
            raise ConvertError(f"vision weight {key!r} of --vision-tower has no place in the LLaVA model")
        mapped[found] = value
    if text_config.tie_word_embeddings:
        mapped.pop("lm_head.weight", None)
    missing = sorted(targets - set(mapped) - ({"lm_head.weight"} if text_config.tie_word_embeddings else set()))
    unexpected = sorted(set(mapped) - targets)
    if missing or unexpected:
        raise ConvertError(f"{src}: the converted weights do not fit the model: missing {missing[:5]}"
                           f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}")
    model.load_state_dict(mapped, strict=not text_config.tie_word_embeddings)
    if text_config.tie_word_embeddings:
        model.tie_weights()
    model.eval()

    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=vision_config.patch_size,
                               vision_feature_select_strategy=strategy, num_additional_image_tokens=1,
                               image_token=IMAGE_TOKEN)
    aspect = config.get("image_aspect_ratio") or "square"
    adapter = LlavaAdapter(model, processor, template, image_aspect_ratio="pad" if aspect == "pad" else "resize",
                           max_length=int(config.get("tokenizer_model_max_length") or config.get("max_position_embeddings", 2048)))
    adapter.save(dst)
    return {"source": str(src), "destination": str(dst), "projector": projector_type, "parts": sources,
            "vision_tower": str(vision_tower), "image_token_added": added, "vocab_size": vocab,
            "image_aspect_ratio": adapter.image_aspect_ratio}


# -- command line ----------------------------------------------------------------------------------


@click.group(name="convert")
def convert() -> None:
    """Convert checkpoints of other layouts into folders the llava adapter loads."""


@convert.command(name="llava-original")
@click.argument("src", type=click.Path())  # convert_llava_original names a wrong SRC, --vision-tower, --model-base
@click.argument("dst", type=click.Path())
@click.option("--vision-tower", type=click.Path(), default=None,
              help="local CLIP folder (the checkpoint's mm_vision_tower, e.g. openai/clip-vit-large-patch14-336)")
@click.option("--model-base", type=click.Path(), default=None,
              help="the language model a LoRA or projector-only output was trained from")
@click.option("--template", type=click.Choice(["llava-1.5", "plain"]), default="llava-1.5", show_default=True,
              help="chat template recorded with the converted model")
def llava_original(src: str, dst: str, vision_tower: str | None, model_base: str | None, template: str) -> None:
    """Convert SRC (original LLaVA repo layout: LlavaLlamaForCausalLM, mm_projector, LoRA outputs) into DST."""
    summary = convert_llava_original(Path(src), Path(dst), vision_tower=Path(vision_tower) if vision_tower else None,
                                     model_base=Path(model_base) if model_base else None, template=template)
    click.echo(json.dumps(summary, indent=2))
