"""A saved LLaVA folder carries its chat template: plain transformers renders what mllm trains on."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from mllm.records import Turn  # noqa: E402
from mllm.testing import load_tiny_llava  # noqa: E402


@pytest.mark.parametrize("template", ["llava-1.5", "plain"])
def test_saved_llava_folder_applies_its_chat_template(tmp_path, template):
    from mllm.models.templates import get_template
    from transformers import AutoProcessor, AutoTokenizer

    adapter = load_tiny_llava()
    adapter.template = get_template(template)
    adapter.save(tmp_path / "saved")
    turns = [Turn("user", "<image>\nWhat colour is it?"), Turn("assistant", "red"), Turn("user", "Sure?"),
             Turn("assistant", "yes")]
    messages = [{"role": t.role, "content": t.content} for t in turns]
    for loaded in (AutoTokenizer.from_pretrained(tmp_path / "saved"), AutoProcessor.from_pretrained(tmp_path / "saved")):
        text = loaded.apply_chat_template(messages, tokenize=False)
        assert text == "<s>" + "".join(segment.text for segment in adapter.template.segments(turns))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "saved")
    ids = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    encoded = adapter.encode_conversation(turns)["input_ids"]
    image = adapter.image_token_id
    assert [t for t in encoded if t != image] == [t for t in ids if t != image]  # the same ids, images unexpanded
