"""image_aspect_ratio on non-square images: pad (LLaVA-1.5's expand2square with the mean colour) vs resize."""

from __future__ import annotations

import pytest
import torch
from mllm.models.llava.adapter import LlavaAdapter, LlavaModelConfig
from PIL import Image


@pytest.fixture(scope="module")
def adapters():
    pad = LlavaAdapter.from_config(LlavaModelConfig(init="tiny", image_aspect_ratio="pad"), seed=0)
    resize = LlavaAdapter(pad.model, pad.processor, "llava-1.5", image_aspect_ratio="resize")
    return pad, resize


def test_tall_image_pad_and_resize(adapters, tmp_path):
    pad, resize = adapters
    path = tmp_path / "tall.png"
    Image.new("RGB", (16, 64), (0, 0, 255)).save(path)  # a blue strip 4x taller than wide
    padded = pad.load_images([path])
    stretched = resize.load_images([path])
    assert padded.shape == stretched.shape == (1, 3, 64, 64)
    # pad: the strip stays in the middle 16 columns, the sides are the mean colour (normalized ~0)
    assert padded[0, :, :, :20].abs().max() < 0.02 and padded[0, :, :, 44:].abs().max() < 0.02
    assert padded[0, 2, 32, 32] > 1.5  # blue in the centre
    # resize: the strip is stretched over the whole square
    assert stretched[0, 2].min() > 1.5
    # both feed the model: one row of image features per image token
    features = pad.encode_images(torch.cat([padded, stretched]))
    assert features.shape == (2, pad.num_image_tokens, pad.model.config.text_config.hidden_size)
    assert not torch.allclose(features[0], features[1])


def test_square_image_is_the_same_either_way(adapters, tmp_path):
    pad, resize = adapters
    path = tmp_path / "square.png"
    Image.new("RGB", (40, 40), (10, 200, 30)).save(path)
    torch.testing.assert_close(pad.load_images([path]), resize.load_images([path]))


def test_aspect_ratio_is_saved_with_the_model(adapters, tmp_path):
    _, resize = adapters
    resize.save(tmp_path / "m")
    assert LlavaAdapter.load(tmp_path / "m").image_aspect_ratio == "resize"
