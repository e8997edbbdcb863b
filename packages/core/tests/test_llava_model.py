"""The LLaVA adapter on tiny models: config, save/load, encoding, labels, images, generation."""

from __future__ import annotations

import pytest
import torch
from mllm.models.llava.adapter import IGNORE_INDEX, META_FILE, LlavaAdapter, LlavaModelConfig
from mllm.records import Conversation, EvalItem, Turn
from PIL import Image
from pydantic import ValidationError

TURNS = [
    Turn("user", "<image>\nwhat is the blue shape?"),
    Turn("assistant", "rectangle"),
    Turn("user", "is there a red shape?"),
    Turn("assistant", "no"),
]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Real easy-VQA images when the package is installed, else drawn ones."""
    try:
        import easy_vqa

        paths = easy_vqa.get_train_image_paths()
        return [paths[i] for i in range(4)]
    except ImportError:
        folder = tmp_path_factory.mktemp("images")
        out = []
        for i, colour in enumerate(["red", "blue", "green", "yellow"]):
            path = folder / f"{i}.png"
            image = Image.new("RGB", (64, 64), "white")
            image.paste(Image.new("RGB", (20 + 5 * i, 30), colour), (10, 10))
            image.save(path)
            out.append(str(path))
        return out


@pytest.fixture(scope="module")
def adapter():
    return LlavaAdapter.from_config(LlavaModelConfig(init="tiny"), seed=0)


def batch_of(adapter, prompts):
    """Left-padded input_ids and attention_mask."""
    width = max(map(len, prompts))
    ids = torch.tensor([[adapter.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


# -- config --------------------------------------------------------------------------------------


def test_config_needs_exactly_one_of_init_and_path(tmp_path):
    with pytest.raises(ValidationError, match="not both"):
        LlavaModelConfig(init="tiny", path=str(tmp_path))
    with pytest.raises(ValidationError, match="give init: tiny"):
        LlavaModelConfig(init=None)
    with pytest.raises(ValidationError, match="only apply to init: tiny"):
        LlavaModelConfig(path=str(tmp_path), text_layers=4)
    with pytest.raises(ValidationError, match="extra"):
        LlavaModelConfig(init="tiny", layers=3)
    with pytest.raises(ValidationError, match="multiple of patch_size"):
        LlavaModelConfig(image_size=60, patch_size=8)
    config = LlavaModelConfig(path=str(tmp_path))
    assert config.init is None
    assert LlavaAdapter.source_path(config) == tmp_path
    assert LlavaAdapter.source_path(LlavaModelConfig()) is None


def test_module_names(adapter):
    names = adapter.module_names()
    modules = dict(adapter.model.named_modules())
    assert names == {"vision_tower": "model.vision_tower", "projector": "model.multi_modal_projector",
                     "language_model": "model.language_model", "lm_head": "lm_head"}
    assert type(modules[names["vision_tower"]]).__name__ == "CLIPVisionModel"
    assert type(modules[names["language_model"]]).__name__ == "LlamaModel"
    assert type(modules[names["projector"]]).__name__ == "LlavaMultiModalProjector"


def test_seeded_init_is_deterministic(adapter):
    again = LlavaAdapter.from_config(LlavaModelConfig(), seed=0)
    other = LlavaAdapter.from_config(LlavaModelConfig(), seed=1)
    state, same, different = adapter.model.state_dict(), again.model.state_dict(), other.model.state_dict()
    assert all(torch.equal(state[k], same[k]) for k in state)
    assert not torch.equal(state["lm_head.weight"], different["lm_head.weight"])


# -- save / load ------------------------------------------------------------------------------------


def test_save_load_round_trip(adapter, images, tmp_path):
    adapter.save(tmp_path / "model")
    files = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", META_FILE} <= files
    assert not any(name.endswith((".bin", ".pt")) for name in files)
    loaded = LlavaAdapter.load(tmp_path / "model")
    assert loaded.template.name == "llava-1.5"
    assert loaded.tokenizer.get_vocab() == adapter.tokenizer.get_vocab()
    assert loaded.encode_conversation(TURNS) == adapter.encode_conversation(TURNS)
    pixel_values = loaded.load_images(images[:2])
    assert torch.equal(pixel_values, adapter.load_images(images[:2]))
    ids, mask = batch_of(adapter, [adapter.encode_prompt(TURNS[:1]), adapter.encode_prompt([Turn("user", "<image>\nhi")])])
    with torch.no_grad():
        expected = adapter.model(input_ids=ids, attention_mask=mask, pixel_values=pixel_values).logits
        got = loaded.model(input_ids=ids, attention_mask=mask, pixel_values=pixel_values).logits
    assert torch.equal(expected, got)


def test_linear_projector_round_trip(images, tmp_path):
    linear = LlavaAdapter.from_config(LlavaModelConfig(projector="linear", template="plain"), seed=3)
    projector = dict(linear.model.named_modules())[linear.module_names()["projector"]]
    assert [type(m).__name__ for m in projector.children()] == ["Linear"]
    linear.save(tmp_path / "linear")
    loaded = LlavaAdapter.load(tmp_path / "linear")
    assert loaded.template.name == "plain"
    loaded_projector = dict(loaded.model.named_modules())[loaded.module_names()["projector"]]
    assert [type(m).__name__ for m in loaded_projector.children()] == ["Linear"]
    ids = torch.tensor([linear.encode_prompt([Turn("user", "<image>\ndescribe")])])
    pixel_values = linear.load_images(images[:1])
    with torch.no_grad():
        assert torch.equal(linear.model(input_ids=ids, pixel_values=pixel_values).logits,
                           loaded.model(input_ids=ids, pixel_values=pixel_values).logits)


def test_plain_transformers_folder_and_config_overrides(adapter, tmp_path):
    """A folder without mllm_model.json (llava-hf layout) loads; explicit config options win."""
    adapter.save(tmp_path / "hf")
    (tmp_path / "hf" / META_FILE).unlink()
    loaded = LlavaAdapter.load(tmp_path / "hf")
    assert loaded.template.name == "llava-1.5" and loaded.image_aspect_ratio == "pad"
    overridden = LlavaAdapter.from_config(LlavaModelConfig(path=str(tmp_path / "hf"), template="plain",
                                                           image_aspect_ratio="resize"))
    assert overridden.template.name == "plain" and overridden.image_aspect_ratio == "resize"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LlavaAdapter.load(tmp_path / "missing")


def test_lora_adapter_round_trip(adapter, images, tmp_path):
    from peft import LoraConfig, get_peft_model

    adapter.save(tmp_path / "base")
    base = LlavaAdapter.load(tmp_path / "base")
    base.model = get_peft_model(base.model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                       target_modules=r".*language_model.*\.(q_proj|v_proj)"))
    projector = dict(base.model.named_modules())[base.module_names()["projector"]]
    assert base.module_names()["projector"].endswith("model.multi_modal_projector")
    with torch.no_grad():  # LLaVA's LoRA recipe trains the projector fully beside LoRA
        for param in projector.parameters():
            param.requires_grad_(True)
            param.add_(0.05)
    base.save(tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter_config.json").is_file()
    assert not (tmp_path / "lora" / "model.safetensors").exists()
    loaded = LlavaAdapter.load(tmp_path / "lora")
    ids = torch.tensor([adapter.encode_prompt(TURNS[:1])])
    pixel_values = adapter.load_images(images[:1])
    with torch.no_grad():
        expected = base.model(input_ids=ids, pixel_values=pixel_values).logits
        assert torch.equal(expected, loaded.model(input_ids=ids, pixel_values=pixel_values).logits)
        assert not torch.equal(expected, adapter.model(input_ids=ids, pixel_values=pixel_values).logits)
    loaded.save(tmp_path / "lora-again")  # re-saving a loaded adapter keeps the projector weights
    again = LlavaAdapter.load(tmp_path / "lora-again")
    with torch.no_grad():
        assert torch.equal(expected, again.model(input_ids=ids, pixel_values=pixel_values).logits)
    loaded.save(tmp_path / "merged", merge=True)
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    merged = LlavaAdapter.load(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(merged.model(input_ids=ids, pixel_values=pixel_values).logits, expected,
                                   rtol=1e-4, atol=1e-4)


# -- text encoding and labels -------------------------------------------------------------------------


def test_labels_are_exactly_the_answers(adapter):
    encoded = adapter.encode_conversation(TURNS)
    ids, labels = encoded["input_ids"], encoded["labels"]
    assert len(ids) == len(labels)
    assert ids[0] == adapter.tokenizer.bos_token_id and labels[0] == IGNORE_INDEX
    assert ids.count(adapter.image_token_id) == adapter.num_image_tokens == 64
    learned = [t for t in labels if t != IGNORE_INDEX]
    assert adapter.tokenizer.decode(learned) == " rectangle</s> no</s>"
    # each labelled span on its own is one answer plus its end-of-turn token
    spans, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(label)
        elif current:
            spans.append(current)
            current = []
    spans.append(current)
    assert [adapter.tokenizer.decode(s) for s in spans] == [" rectangle</s>", " no</s>"]
    assert all(s[-1] == adapter.eos_token_id for s in spans)
    text = adapter.tokenizer.decode(ids).replace("<image>" * 64, "<image>")
    assert text == "<s>" + adapter.template.render(TURNS)


def test_prompt_is_prefix_of_conversation(adapter):
    conversation = Conversation("c1", TURNS[:2], images=("x.png",), check_files=False)
    full = adapter.encode_conversation(conversation)["input_ids"]
    prompt = adapter.encode_prompt(TURNS[:1])
    assert full[: len(prompt)] == prompt
    assert adapter.tokenizer.decode(prompt).endswith("ASSISTANT:")
    item = EvalItem("e1", prompt="<image>\nwhat is the blue shape?", images=("x.png",), check_files=False)
    assert adapter.encode_prompt(item) == prompt == adapter.encode_prompt("<image>\nwhat is the blue shape?")
    assert adapter.encode_prompt(TURNS[:3]) == adapter.encode_conversation(TURNS)["input_ids"][: len(adapter.encode_prompt(TURNS[:3]))]


def test_plain_template_labels(adapter):
    plain = LlavaAdapter(adapter.model, adapter.processor, "plain")
    encoded = plain.encode_conversation([Turn("user", "<image>\nDescribe."), Turn("assistant", "a red circle")])
    learned = [t for t in encoded["labels"] if t != IGNORE_INDEX]
    assert plain.tokenizer.decode(learned) == "a red circle\n"
    assert encoded["input_ids"][: 1 + 64] == [plain.bos_token_id] + [plain.image_token_id] * 64


def test_max_length_truncates_but_never_inside_an_image(adapter):
    short = LlavaAdapter(adapter.model, adapter.processor, "llava-1.5", max_length=120)
    encoded = short.encode_conversation([Turn("user", "<image>\nwhat is it?"), Turn("assistant", "a circle " * 30)])
    assert len(encoded["input_ids"]) == len(encoded["labels"]) == 120
    tiny = LlavaAdapter(adapter.model, adapter.processor, "llava-1.5", max_length=60)
    with pytest.raises(ValueError, match="cut an image"):
        tiny.encode_conversation(TURNS)


# -- images ---------------------------------------------------------------------------------------------


def test_load_images_pads_with_mean_colour(adapter, tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (64, 32), (255, 0, 0)).save(path)
    pixel_values = adapter.load_images([path])
    assert pixel_values.shape == (1, 3, 64, 64) and pixel_values.dtype == torch.float32
    # top rows are padding in the mean colour: normalized to about zero
    assert pixel_values[0, :, :8].abs().max() < 0.02
    assert pixel_values[0, 0, 32, 32] > 1.5  # red stays red
    resized = LlavaAdapter(adapter.model, adapter.processor, "llava-1.5", image_aspect_ratio="resize").load_images([path])
    assert resized.shape == (1, 3, 64, 64) and resized[0, 0, :8].min() > 1.5
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        adapter.load_images([bad])


def test_embed_inputs_matches_normal_forward(adapter, images):
    prompts = [adapter.encode_conversation(TURNS)["input_ids"],
               adapter.encode_conversation([Turn("user", "<image>\nwhat color?"), Turn("assistant", "blue")])["input_ids"]]
    ids, mask = batch_of(adapter, prompts)
    pixel_values = adapter.load_images(images[:2])
    with torch.no_grad():
        expected = adapter.model(input_ids=ids, attention_mask=mask, pixel_values=pixel_values).logits
        features = adapter.encode_images(pixel_values)
        assert features.shape == (2, adapter.num_image_tokens, adapter.model.config.text_config.hidden_size)
        embeds = adapter.embed_inputs(ids, features)
        got = adapter.model(inputs_embeds=embeds, attention_mask=mask).logits
        assert torch.equal(expected, got)
        # one vision pass shared by two sequences (DPO's chosen and rejected)
        pair = [adapter.encode_conversation([Turn("user", "<image>\nshape?"), Turn("assistant", answer)])["input_ids"]
                for answer in ("circle", "a big rectangle")]
        pair_ids, pair_mask = batch_of(adapter, pair)
        shared = adapter.model(inputs_embeds=adapter.embed_inputs(pair_ids, features[[0, 0]]), attention_mask=pair_mask).logits
        separate = adapter.model(input_ids=pair_ids, attention_mask=pair_mask,
                                 pixel_values=pixel_values[[0, 0]]).logits
        assert torch.equal(shared, separate)
    with pytest.raises(ValueError, match="image tokens"):
        adapter.embed_inputs(ids, features[:1])


# -- generation -------------------------------------------------------------------------------------------


def test_left_padded_batch_generation_matches_one_at_a_time(adapter, images):
    questions = ["<image>\nwhat is the blue shape?", "<image>\nwhat color is the shape in this image, tell me please?",
                 "<image>\nis there a circle?", "<image>\nis there not a yellow shape in the image?"]
    prompts = [adapter.encode_prompt([Turn("user", q)]) for q in questions]
    assert len(set(map(len, prompts))) > 2
    pixel_values = adapter.load_images(images[: len(questions)])
    ids, mask = batch_of(adapter, prompts)
    settings = {"max_new_tokens": 6, "do_sample": False}
    with torch.no_grad():
        batched = adapter.model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixel_values, **settings)
        batched = batched[:, ids.shape[1]:].tolist()
        single = [adapter.model.generate(input_ids=torch.tensor([p]), pixel_values=pixel_values[i: i + 1],
                                         **settings)[0, len(p):].tolist() for i, p in enumerate(prompts)]
    assert batched == single
