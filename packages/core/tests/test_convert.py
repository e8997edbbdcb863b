"""`mllm convert llava-original`: a tiny checkpoint written in the original LLaVA layout
(full, and LoRA + non_lora_trainables + --model-base) converts back to the same model."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from mllm.cli.main import main
from mllm.models.llava.adapter import LlavaAdapter, LlavaModelConfig
from mllm.models.llava.convert import ConvertError, convert_llava_original
from mllm.records import Turn
from PIL import Image


@pytest.fixture(scope="module")
def tiny():
    return LlavaAdapter.from_config(LlavaModelConfig(init="tiny", vision_feature_layer=-2), seed=1)


def to_original(key: str) -> str | None:
    """The inverse of the converter's mapping (what LLaVA's LlavaLlamaForCausalLM calls each weight)."""
    if key.startswith("model.vision_tower."):
        return None
    if key.startswith("model.multi_modal_projector."):
        return key.replace("model.multi_modal_projector.linear_1.", "model.mm_projector.0.").replace(
            "model.multi_modal_projector.linear_2.", "model.mm_projector.2.")
    return key.replace("model.language_model.", "model.")


def original_config(adapter) -> dict:
    text = adapter.model.config.text_config
    return {
        "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama",
        **{k: getattr(text, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                         "num_attention_heads", "num_key_value_heads", "hidden_act",
                                         "max_position_embeddings", "rms_norm_eps", "bos_token_id", "eos_token_id",
                                         "pad_token_id", "tie_word_embeddings")},
        "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_hidden_size": 64,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "image_aspect_ratio": "pad", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "tokenizer_model_max_length": 512,
    }


@pytest.fixture(scope="module")
def clip_folder(tiny, tmp_path_factory):
    """The tiny vision tower saved as a CLIPVisionModel folder (what --vision-tower points at)."""
    from transformers import CLIPVisionModel

    folder = tmp_path_factory.mktemp("clip")
    clip = CLIPVisionModel(tiny.model.config.vision_config)
    ours = {k[len("model.vision_tower."):]: v for k, v in tiny.model.state_dict().items()
            if k.startswith("model.vision_tower.")}
    target = clip.state_dict()
    clip.load_state_dict({(k if k in target else f"vision_model.{k}"): v for k, v in ours.items()}, strict=True)
    clip.save_pretrained(folder)
    tiny.processor.image_processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def original_folder(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("llava-original")
    state = {to_original(k): v.clone() for k, v in tiny.model.state_dict().items() if to_original(k)}
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(original_config(tiny)))
    tiny.tokenizer.save_pretrained(folder)
    return folder


def inputs(adapter, tmp_path):
    path = tmp_path / "wide.png"
    image = Image.new("RGB", (48, 32), "white")
    image.paste(Image.new("RGB", (20, 12), "red"), (5, 5))
    image.save(path)
    ids = adapter.encode_prompt([Turn("user", "<image>\nwhat colour is the shape?")])
    return torch.tensor([ids]), adapter.load_images([path])


def logits(adapter, ids, pixels):
    with torch.no_grad():
        return adapter.model(input_ids=ids, pixel_values=pixels).logits


def test_full_checkpoint_round_trip(tiny, original_folder, clip_folder, tmp_path):
    out = tmp_path / "converted"
    result = CliRunner().invoke(main, ["convert", "llava-original", str(original_folder), str(out),
                                       "--vision-tower", str(clip_folder)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{"):])["projector"] == "mlp2x_gelu"
    assert (out / "model.safetensors").is_file()
    converted = LlavaAdapter.load(out)
    assert converted.image_aspect_ratio == "pad" and converted.model.config.vision_feature_layer == -2
    ids, pixels = inputs(tiny, tmp_path)
    assert converted.encode_prompt([Turn("user", "<image>\nwhat colour is the shape?")]) == ids[0].tolist()
    assert torch.allclose(converted.load_images([tmp_path / "wide.png"]), pixels)
    torch.testing.assert_close(logits(converted, ids, pixels), logits(tiny, ids, pixels))


def test_missing_vision_tower_says_how_to_fix(original_folder, tmp_path):
    result = CliRunner().invoke(main, ["convert", "llava-original", str(original_folder), str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "openai/clip-vit-large-patch14-336" in result.output and "--vision-tower" in result.output


def test_lora_output_with_model_base(tiny, clip_folder, tmp_path):
    """LLaVA's LoRA output: adapter_model.bin + non_lora_trainables.bin (projector), LM from --model-base."""
    state = tiny.model.state_dict()
    base = tmp_path / "vicuna"
    base.mkdir()
    torch.save({to_original(k): v.clone() for k, v in state.items()
                if k.startswith(("model.language_model.", "lm_head."))}, base / "pytorch_model.bin")
    lora_dir = tmp_path / "llava-lora"
    lora_dir.mkdir()
    (lora_dir / "config.json").write_text(json.dumps(original_config(tiny)))
    tiny.tokenizer.save_pretrained(lora_dir)
    torch.manual_seed(0)
    projector = {f"base_model.model.{to_original(k)}": v + 0.01 * torch.randn_like(v) for k, v in state.items()
                 if k.startswith("model.multi_modal_projector.")}
    torch.save(projector, lora_dir / "non_lora_trainables.bin")
    rank, alpha = 4, 8
    adapter = {}
    for layer in range(2):
        for proj in ("q_proj", "v_proj"):
            weight = state[f"model.language_model.layers.{layer}.self_attn.{proj}.weight"]
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            adapter[f"{prefix}.lora_A.weight"] = torch.randn(rank, weight.shape[1]) * 0.1
            adapter[f"{prefix}.lora_B.weight"] = torch.randn(weight.shape[0], rank) * 0.1
    torch.save(adapter, lora_dir / "adapter_model.bin")
    (lora_dir / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": alpha,
                                                              "target_modules": ["q_proj", "v_proj"]}))
    with pytest.raises(ConvertError, match="--model-base"):
        convert_llava_original(lora_dir, tmp_path / "x", vision_tower=clip_folder)
    out = tmp_path / "converted"
    summary = convert_llava_original(lora_dir, out, vision_tower=clip_folder, model_base=base)
    assert "LoRA merged into 4 weights" in summary["parts"]

    # the expected model: the tiny one with the projector replaced and LoRA merged by hand
    expected = LlavaAdapter.from_config(LlavaModelConfig(init="tiny", vision_feature_layer=-2), seed=1)
    new_state = expected.model.state_dict()
    for key, value in projector.items():
        new_state[key.replace("base_model.model.model.mm_projector.0.", "model.multi_modal_projector.linear_1.")
                  .replace("base_model.model.model.mm_projector.2.", "model.multi_modal_projector.linear_2.")] = value
    for key in adapter:
        if key.endswith("lora_A.weight"):
            module = key[len("base_model.model.model."):-len(".lora_A.weight")]
            target = f"model.language_model.{module}.weight"
            new_state[target] = new_state[target] + adapter[key.replace("lora_A", "lora_B")] @ adapter[key] * (alpha / rank)
    expected.model.load_state_dict(new_state)
    converted = LlavaAdapter.load(out)
    ids, pixels = inputs(tiny, tmp_path)
    torch.testing.assert_close(logits(converted, ids, pixels), logits(expected, ids, pixels))
    assert not torch.allclose(logits(converted, ids, pixels), logits(tiny, ids, pixels))


def test_not_an_original_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ConvertError, match="not an original LLaVA checkpoint"):
        convert_llava_original(tmp_path, tmp_path / "out")
