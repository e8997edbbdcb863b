"""Qwen2-VL and Qwen2.5-VL against transformers' own image processor and forward: pixel values
and ``image_grid_thw`` equal ``Qwen2VLImageProcessorPil``'s, the placeholder count equals what
the model takes, logits from our inputs (no position ids, 1-D ones, left padding, shared vision
features) equal the model's with its own ``get_rope_index`` M-RoPE ids; exact label masks;
saved folders read by plain transformers; the engine without prompt caches (batched ==
one-at-a-time, choices == own forward) and DPO's shared vision pass (== the plain forward)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mllm import HasPositionCaches, Turn  # noqa: E402
from mllm.records import EvalItem  # noqa: E402
from mllm_models.adapter import Qwen2VLAdapter, Qwen25VLAdapter  # noqa: E402
from PIL import Image  # noqa: E402

FAMILIES = {"qwen2-vl": Qwen2VLAdapter, "qwen2.5-vl": Qwen25VLAdapter}
QUESTION = "<image>\nWhat colour is the square?"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def adapter(request, tmp_path_factory):
    cls = FAMILIES[request.param]
    return cls.from_config(cls.config_class(**cls.example_config(tmp_path_factory.getbasetemp())), seed=0)


@pytest.fixture(scope="module")
def saved(adapter, tmp_path_factory):
    folder = tmp_path_factory.mktemp(adapter.family.name) / "saved"
    adapter.save(folder)
    return folder


def _image(adapter, colour=(200, 30, 30), size=None):
    height, width = adapter.options["size"]
    image = Image.new("RGB", size or (width, height), (250, 250, 250))
    image.paste(Image.new("RGB", (width // 2, height // 2), colour), (width // 4, height // 4))
    return image


def _reference(adapter, ids, pixel_values, grid, attention_mask=None):
    """The model's logits with its own M-RoPE ids (``get_rope_index``) and the processor's inputs."""
    inner = adapter._inner
    types = (ids == inner.config.image_token_id).int()
    positions, _ = inner.model.get_rope_index(ids, mm_token_type_ids=types, image_grid_thw=grid,
                                              attention_mask=attention_mask)
    return adapter.model(input_ids=ids, pixel_values=pixel_values, image_grid_thw=grid, mm_token_type_ids=types,
                         position_ids=positions, attention_mask=attention_mask).logits, positions


def test_opts_out_of_the_engines_position_caches(adapter):
    from mllm.generation.engine import AnswerEngine

    assert isinstance(adapter, HasPositionCaches) and adapter.uses_position_caches is False
    engine = AnswerEngine(adapter)
    assert not engine.caches.enabled and not engine.choices.tree_masks_supported()


def test_pixel_values_grid_and_logits_equal_the_family_processor_and_model(adapter, saved):
    image = _image(adapter)
    ours = adapter.load_images([image])
    image_processor = type(adapter.processor.image_processor).from_pretrained(saved)
    assert type(image_processor).__name__ == "Qwen2VLImageProcessorPil"
    out = image_processor(images=[image], return_tensors="pt")
    assert torch.equal(ours.reshape(-1, ours.shape[-1]), out["pixel_values"])
    grid = out["image_grid_thw"]
    assert grid.tolist() == [list(adapter.family._grid(adapter._inner.config, adapter.options))]
    ids = torch.tensor([adapter.encode_prompt(QUESTION)])
    n_placeholders = int((ids == adapter.image_token_id).sum())
    merge = adapter._inner.config.vision_config.spatial_merge_size
    assert n_placeholders == adapter.num_image_tokens == int(grid.prod()) // merge ** 2 == \
        adapter.encode_images(ours).shape[1] == 4
    with torch.inference_mode():
        theirs, positions = _reference(adapter, ids, out["pixel_values"], grid)
        # M-RoPE really differs from 1-D positions here (else this test could not fail)
        flat = torch.arange(ids.shape[1])[None, None].expand(3, 1, -1)
        assert not torch.equal(positions, flat)
        one_d = adapter.model(input_ids=ids, pixel_values=ours, position_ids=flat.clone()).logits
        assert (one_d - theirs).abs().max() > 1e-4
        for kwargs in ({}, {"position_ids": torch.arange(ids.shape[1])[None]},
                       {"attention_mask": torch.ones_like(ids)}):
            logits = adapter.model(input_ids=ids, pixel_values=ours, **kwargs).logits
            torch.testing.assert_close(logits, theirs, rtol=0, atol=1e-6)
        shared = adapter.model(inputs_embeds=adapter.embed_inputs(ids, adapter.encode_images(ours))).logits
        torch.testing.assert_close(shared, theirs, rtol=0, atol=1e-5)
        # a left-padded row (1-D positions counted over real tokens, as the engine passes) computes the same
        pad = torch.full((1, 3), adapter.pad_token_id)
        padded = torch.cat([pad, ids], 1)
        mask = torch.cat([torch.zeros_like(pad), torch.ones_like(ids)], 1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = adapter.model(input_ids=padded, pixel_values=ours, attention_mask=mask, position_ids=positions).logits
        torch.testing.assert_close(logits[:, 3:], theirs, rtol=0, atol=1e-5)
    other = adapter.load_images([_image(adapter, size=(23, 41))])  # resized to the model's one resolution
    assert other.shape == ours.shape


def test_labels_are_exactly_the_answers(adapter):
    turns = [Turn("user", QUESTION), Turn("assistant", "red"), Turn("user", "And the background?"),
             Turn("assistant", "white")]
    encoded = adapter.encode_conversation(turns)
    learned = [t for t, label in zip(encoded["input_ids"], encoded["labels"]) if label != -100]
    assert [label for label in encoded["labels"] if label != -100] == learned
    assert adapter.tokenizer.decode(learned) == "red<|im_end|>white<|im_end|>"
    prompt = adapter.encode_prompt(turns[:3])
    assert encoded["input_ids"][:len(prompt)] == prompt
    text = adapter.tokenizer.decode(prompt)
    assert text.count("<|vision_start|>") == 1 and text.count("<|image_pad|>") == adapter.num_image_tokens


def test_saved_folder_tokenizer_applies_its_chat_template(adapter, saved):
    from transformers import AutoTokenizer

    turns = [Turn("user", QUESTION), Turn("assistant", "red"), Turn("user", "Sure?"), Turn("assistant", "yes")]
    messages = [{"role": t.role, "content": t.content} for t in turns]
    tokenizer = AutoTokenizer.from_pretrained(saved)
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == tokenizer.bos_token + "".join(s.text for s in adapter.template.segments(turns))
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    encoded = adapter.encode_conversation(turns)["input_ids"]
    pad = adapter.image_token_id
    assert [t for t in encoded if t != pad] == [t for t in ids if t != pad]
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nWhat colour is the square?"}]}]
    assert tokenizer.apply_chat_template(parts, add_generation_prompt=True, tokenize=False) == \
        tokenizer.bos_token + "".join(s.text for s in adapter.template.segments(turns[:1]))


def test_path_loads_a_plain_save_pretrained_folder(adapter, tmp_path):
    folder = tmp_path / "hf"
    adapter.model.save_pretrained(folder)
    adapter.processor.save_pretrained(folder)  # what a downloaded folder holds: no mllm_model.json
    cls = type(adapter)
    loaded = cls.from_config(cls.config_class(path=str(folder)))
    assert loaded.options == adapter.options and loaded.num_image_tokens == adapter.num_image_tokens
    ids = torch.tensor([adapter.encode_prompt(QUESTION)])
    pixel_values = adapter.load_images([_image(adapter)])
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(input_ids=ids, pixel_values=pixel_values).logits,
                                   adapter.model(input_ids=ids, pixel_values=pixel_values).logits)


# -- the engine and DPO's log-probs on a briefly trained model --------------------------------


@pytest.fixture(scope="module")
def trained(adapter):
    from mllm_align import pad_encoded

    records = (((200, 30, 30), "red"), ((30, 30, 200), "blue"))
    images = {name: _image(adapter, colour) for colour, name in records}
    encoded = [adapter.encode_conversation([Turn("user", QUESTION), Turn("assistant", name)]) for _, name in records]
    batch = pad_encoded(encoded, adapter.pad_token_id)
    batch["pixel_values"] = adapter.load_images([images[name] for _, name in records])
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(adapter.model.parameters(), lr=3e-3)
    adapter.model.train()
    for _ in range(120):
        adapter.model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    adapter.model.eval()
    return adapter, images


def _items(tmp_path, images):
    paths = {}
    for name, image in images.items():
        paths[name] = tmp_path / f"{name}.png"
        image.save(paths[name])
    prompts = [QUESTION, "<image>\nName the colour.", "<image>\nIs the square red?"]
    return [EvalItem(id=f"{name}-{i}", prompt=prompt, images=(str(path),), answer=name,
                     choices=("red", "blue", "red square", "blue square"))
            for name, path in paths.items() for i, prompt in enumerate(prompts)]


def test_batched_answers_equal_one_at_a_time_and_plain_generate(trained, tmp_path):
    from mllm.generation.engine import AnswerEngine

    adapter, images = trained
    items = _items(tmp_path, images)
    single = AnswerEngine(adapter, batch_size=1, max_new_tokens=4).answer(items)
    batched = AnswerEngine(adapter, batch_size=4, max_new_tokens=4).answer(items)
    assert single == batched
    assert len({answer for answer in single.values() if answer}) >= 2, single  # real, differing answers
    # plain transformers generate with the processor-style inputs (pixel values, grid, its own M-RoPE)
    item = items[0]
    ids = torch.tensor([adapter.encode_prompt(item.prompt)])
    pixel_values = adapter.load_images(item.images)
    grid = adapter.family._grid_thw(adapter._inner, 1, adapter.options, ids.device)
    with torch.inference_mode():
        out = adapter.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                                     do_sample=False, pixel_values=pixel_values.reshape(-1, pixel_values.shape[-1]),
                                     image_grid_thw=grid, mm_token_type_ids=(ids == adapter.image_token_id).int(),
                                     eos_token_id=adapter.eos_token_id, pad_token_id=adapter.pad_token_id)
    from mllm.generation.decoding import decode_new_tokens, stop_ids

    assert decode_new_tokens(adapter, out, ids.shape[1], stop_ids(adapter)) == [single[item.id]]
    assert AnswerEngine(adapter, batch_size=1).answer(items, mode="choice") == \
        AnswerEngine(adapter, batch_size=4).answer(items, mode="choice")


def _own_logprob(adapter, item, choice):
    encoded = adapter.encode_conversation((Turn("user", item.prompt), Turn("assistant", choice)))
    ids = torch.tensor([encoded["input_ids"]])
    labels = torch.tensor(encoded["labels"][1:])
    with torch.inference_mode():
        logits = adapter.model(input_ids=ids, pixel_values=adapter.load_images(item.images)).logits[0, :-1]
    logprobs = torch.log_softmax(logits.float(), -1)
    keep = labels != -100
    return float(logprobs[keep].gather(-1, labels[keep][:, None]).sum())


def test_each_choice_score_equals_its_own_forward(trained, tmp_path):
    from mllm.generation.engine import AnswerEngine

    adapter, images = trained
    items = _items(tmp_path, images)[:4]
    engine = AnswerEngine(adapter, batch_size=4)
    jobs = [engine.planner.choice_job(item.id, item) for item in items]
    with torch.inference_mode():
        rows = engine.choices.scores_rows(jobs)
    for item, row in zip(items, rows):
        assert row == pytest.approx([_own_logprob(adapter, item, c) for c in item.choices], abs=1e-4)


def test_dpo_shared_vision_logprobs_equal_the_plain_forward(trained):
    from mllm import answer_logprobs
    from mllm_align import pad_encoded

    adapter, images = trained
    prompt = Turn("user", QUESTION)
    chosen = [adapter.encode_conversation([prompt, Turn("assistant", a)]) for a in ("red", "blue square")]
    rejected = [adapter.encode_conversation([prompt, Turn("assistant", a)]) for a in ("blue", "a red one")]
    batch = pad_encoded(chosen + rejected, adapter.pad_token_id)
    batch["pixel_values"] = adapter.load_images([images["red"], images["blue"]])
    with torch.inference_mode():
        shared = answer_logprobs(adapter.model, batch, adapter=adapter, image_repeats=2)
        plain = answer_logprobs(adapter.model, batch, adapter=adapter, image_repeats=2, share_image_features=False)
    torch.testing.assert_close(shared.sums, plain.sums, rtol=0, atol=1e-5)


def test_multi_image_conversation_gets_each_images_m_rope_ids(adapter):
    turns = [Turn("user", "<image>\n<image>\nAre these the same colour?"), Turn("assistant", "no")]
    ids = torch.tensor([adapter.encode_conversation(turns)["input_ids"]])
    pixel_values = adapter.load_images([_image(adapter), _image(adapter, (30, 30, 200))])
    grid = adapter.family._grid_thw(adapter._inner, 2, adapter.options, ids.device)
    with torch.inference_mode():
        theirs, _ = _reference(adapter, ids, pixel_values.reshape(-1, pixel_values.shape[-1]), grid)
        plain = adapter.model(input_ids=ids, pixel_values=pixel_values).logits
        shared = adapter.model(inputs_embeds=adapter.embed_inputs(ids, adapter.encode_images(pixel_values))).logits
    torch.testing.assert_close(plain, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(shared, theirs, rtol=0, atol=1e-5)


def test_a_hub_id_gets_the_download_hint(adapter, tmp_path, monkeypatch):
    from mllm import MissingFileError
    from pydantic import ValidationError

    monkeypatch.chdir(tmp_path)
    cls = type(adapter)
    with pytest.raises(ValidationError, match="hf download Qwen/Qwen2-VL-2B-Instruct --local-dir"):
        cls.config_class(path="Qwen/Qwen2-VL-2B-Instruct")
    with pytest.raises(MissingFileError, match="hf download Qwen/Qwen2.5-VL-3B-Instruct"):
        cls.load("Qwen/Qwen2.5-VL-3B-Instruct")
