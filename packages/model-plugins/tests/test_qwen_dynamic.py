"""Qwen2-VL / Qwen2.5-VL with ``dynamic_resolution: true``: each image at its own size.

Pixel values and ``image_grid_thw`` equal ``Qwen2VLImageProcessorPil``'s for two images of
different sizes; each ``<image>`` gets its own ``h*w/merge^2`` placeholders; logits of our
encoded batch equal the model's forward on ids built as ``Qwen2VLProcessor`` builds them (its
text expansion over the tokenizer, the image processor's pixels, ``get_rope_index`` M-RoPE ids);
SFT trains real steps on a batch with two differently sized images; a caller that does not pass
images fails loudly instead of using one count per image (the answer engine, sampling and
serving pass them: test_qwen_dynamic_engine.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mllm import Conversation, ImageTokenCounts, InputFileError, Turn  # noqa: E402
from mllm_models.adapter import Qwen2VLAdapter, Qwen25VLAdapter  # noqa: E402
from PIL import Image  # noqa: E402

FAMILIES = {"qwen2-vl": Qwen2VLAdapter, "qwen2.5-vl": Qwen25VLAdapter}
SIZES = ((48, 32), (20, 70))  # (width, height): grids 4x6 and 8x2 patches (tiny patch 8, merge 2)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def adapter(request, tmp_path_factory):
    cls = FAMILIES[request.param]
    config = cls.config_class(**{**cls.example_config(tmp_path_factory.getbasetemp()), "dynamic_resolution": True,
                                 "min_pixels": 256, "max_pixels": 64 * 64})
    return cls.from_config(config, seed=0)


def _images():
    out = []
    for index, (width, height) in enumerate(SIZES):
        image = Image.new("RGB", (width, height), (250, 250, 250))
        image.paste(Image.new("RGB", (width // 2, height // 2), (200, 30 * index, 30)), (width // 4, height // 4))
        out.append(image)
    return out


def _processor_ids(adapter, text, grid):
    """``Qwen2VLProcessor``'s ids: each ``<|image_pad|>`` repeated grid.prod() // merge^2 times, then tokenized."""
    merge = adapter._inner.config.vision_config.spatial_merge_size
    parts = text.split("<|image_pad|>")
    expanded = parts[0]
    for row, rest in zip(grid, parts[1:], strict=True):
        expanded += "<|placeholder|>" * (int(row.prod()) // merge ** 2) + rest
    expanded = expanded.replace("<|placeholder|>", "<|image_pad|>")
    ids = adapter.tokenizer(expanded, add_special_tokens=False)["input_ids"]
    return ([adapter.bos_token_id] if adapter.bos_token_id is not None else []) + ids


def test_off_by_default_and_the_config_dump_unchanged():
    config = Qwen2VLAdapter.config_class(init="tiny")
    dumped = config.model_dump(mode="json")
    assert not {"dynamic_resolution", "min_pixels", "max_pixels"} & set(dumped)
    with pytest.raises(ValueError, match="only apply with dynamic_resolution"):
        Qwen2VLAdapter.config_class(init="tiny", min_pixels=64)


def test_pixel_values_and_grids_equal_the_family_image_processor(adapter):
    images = _images()
    ours = adapter.image_inputs(images)
    image_processor = type(adapter.processor.image_processor)(
        patch_size=8, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 256, "longest_edge": 64 * 64})
    assert type(image_processor).__name__ == "Qwen2VLImageProcessorPil"
    theirs = image_processor(images=images, return_tensors="pt")
    assert torch.equal(ours["image_grid_thw"], theirs["image_grid_thw"])
    assert ours["image_grid_thw"].tolist() == [[1, 4, 6], [1, 8, 2]]
    assert torch.equal(ours["pixel_values"], theirs["pixel_values"])
    assert torch.equal(adapter.load_images(images), theirs["pixel_values"])
    assert isinstance(adapter, ImageTokenCounts)
    assert adapter.image_token_counts(images) == [6, 4]


def test_each_image_gets_its_own_placeholders_and_logits_equal_the_processor_path(adapter):
    images = _images()
    turns = [Turn("user", "<image>\n<image>\nWhich is wider?"), Turn("assistant", "the first")]
    encoded = adapter.encode_conversation(turns, images=images)
    inputs = adapter.image_inputs(images)
    grid = inputs["image_grid_thw"]
    ids = torch.tensor([encoded["input_ids"]])
    # runs of image tokens, one per image, of h*w/merge^2 each
    image_id = adapter.image_token_id
    counts, current = [], 0
    for token in encoded["input_ids"] + [-1]:
        if token == image_id:
            current += 1
        elif current:
            counts.append(current)
            current = 0
    assert counts == [int(row.prod()) // 4 for row in grid] == [6, 4]
    reference_text = adapter.tokenizer.decode(adapter.encode_conversation(
        [Turn("user", "<image>\n<image>\nWhich is wider?"), Turn("assistant", "the first")],
        images=images)["input_ids"][1 if adapter.bos_token_id is not None else 0:])
    single = reference_text.replace("<|image_pad|>" * 6, "<|image_pad|>", 1).replace("<|image_pad|>" * 4,
                                                                                      "<|image_pad|>", 1)
    assert _processor_ids(adapter, single, grid) == encoded["input_ids"]
    inner = adapter._inner
    types = (ids == image_id).int()
    with torch.inference_mode():
        positions, _ = inner.model.get_rope_index(ids, mm_token_type_ids=types, image_grid_thw=grid)
        theirs = adapter.model(input_ids=ids, pixel_values=inputs["pixel_values"], image_grid_thw=grid,
                               mm_token_type_ids=types, position_ids=positions).logits
        ours = adapter.model(input_ids=ids, **inputs).logits
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
        tagged = adapter.model(input_ids=ids, pixel_values=adapter.load_images(images)).logits  # grid from the tag
        torch.testing.assert_close(tagged, theirs, rtol=0, atol=1e-5)
        features = adapter.encode_images(inputs["pixel_values"], inputs["image_grid_thw"])
        assert [f.shape[0] for f in features] == [6, 4]
        shared = adapter.model(inputs_embeds=adapter.embed_inputs(ids, features), image_grid_thw=grid).logits
        torch.testing.assert_close(shared, theirs, rtol=0, atol=1e-5)
        # M-RoPE from the grid really matters here: 1-D positions give other logits
        flat = torch.arange(ids.shape[1])[None, None].expand(3, 1, -1).clone()
        assert (adapter.model(input_ids=ids, position_ids=flat, **inputs).logits - theirs).abs().max() > 1e-4
    with pytest.raises(InputFileError, match="image_grid_thw"):
        adapter.model(input_ids=ids, pixel_values=inputs["pixel_values"].clone())


def test_callers_without_images_fail_loudly(adapter):
    with pytest.raises(InputFileError, match="images="):
        adapter.encode_prompt("<image>\nWhat is it?")
    assert adapter.encode_prompt("no image here") == adapter.encode_prompt("no image here", images=[])


def test_sft_trains_on_two_differently_sized_images_in_one_batch(adapter, tmp_path, train_steps):
    from mllm_align.sft import SFT

    paths = []
    for index, image in enumerate(_images()):
        paths.append(tmp_path / f"{index}.png")
        image.save(paths[-1])
    records = [Conversation(id=answer, images=(str(path),), turns=(Turn("user", "<image>\nWhat colour?"),
                                                        Turn("assistant", answer)))
               for path, answer in zip(paths, ("red", "orange"), strict=True)]
    model = adapter.model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    method = SFT()
    trained = method.setup(adapter)
    batch = method.collate(records)
    assert batch["image_grid_thw"].tolist() == [[1, 4, 6], [1, 8, 2]]
    assert int((batch["input_ids"] == adapter.image_token_id).sum(1)[0]) == 6
    assert int((batch["input_ids"] == adapter.image_token_id).sum(1)[1]) == 4
    losses = train_steps(method, trained, batch, steps=4, lr=5e-3)
    trained.eval()
    model.load_state_dict(state)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_dpo_runs_with_shared_vision_off_and_equals_the_constant_size_loss(name, tmp_path, caplog):
    """Images all of the model's one size: dynamic (vision per row, grids in the batch) == constant
    (one shared vision pass), log-probs and loss; the reason the speed-up is off is logged."""
    from mllm import Preference
    from mllm_align.dpo import DPO, DPOConfig

    cls = FAMILIES[name]
    base = cls.example_config(tmp_path)
    side = base["image_size"]
    constant = cls.from_config(cls.config_class(**base), seed=0)
    dynamic = cls.from_config(cls.config_class(**base, dynamic_resolution=True, min_pixels=side * side,
                                               max_pixels=side * side), seed=0)
    paths = []
    for index in range(2):
        image = Image.new("RGB", (side, side), (250, 250, 250))
        image.paste(Image.new("RGB", (side // 2, side // 2), (200, 90 * index, 30)), (side // 4, side // 4))
        paths.append(str(tmp_path / f"{index}.png"))
        image.save(paths[-1])
    records = [Preference(id=str(i), images=(path,), prompt=(Turn("user", "<image>\nWhat colour?"),),
                          chosen=good, rejected=bad)
               for i, (path, good, bad) in enumerate(zip(paths, ("red", "orange"), ("blue", "green"), strict=True))]
    results = {}
    for key, adapter in (("constant", constant), ("dynamic", dynamic)):
        method = DPO(DPOConfig(lora=True, precompute_reference=False))
        with caplog.at_level("WARNING", logger="mllm_align.dpo"):
            model = method.setup(adapter)
        batch = method.collate(records)
        with torch.no_grad():
            sums, counts = method.sequence_logps(model, batch)
            loss, _ = method.loss(model, batch)
        results[key] = (sums, counts, loss, "image_forward_inputs" in batch)
    assert "share_image_features off" in caplog.text
    assert results["dynamic"][3] and not results["constant"][3]
    torch.testing.assert_close(results["dynamic"][0], results["constant"][0], rtol=0, atol=1e-5)
    assert torch.equal(results["dynamic"][1], results["constant"][1])
    torch.testing.assert_close(results["dynamic"][2], results["constant"][2], rtol=0, atol=1e-6)
