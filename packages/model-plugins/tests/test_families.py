"""Each family against transformers' own processor and forward: pixel values, placeholder
counts, token ids of ``apply_chat_template`` + processor, exact label masks, saved folders
that plain transformers reads, the engine (batched == one at a time, choice scores == own
forward) and DPO's shared vision pass (== the plain forward)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mllm import InputFileError, MissingFileError, Turn  # noqa: E402
from mllm.records import EvalItem  # noqa: E402
from mllm_models.adapter import Idefics3Adapter, LlavaNextAdapter, LlavaOnevisionAdapter, SmolVLMAdapter  # noqa: E402
from PIL import Image  # noqa: E402
from pydantic import ValidationError  # noqa: E402

FAMILIES = {"llava-next": LlavaNextAdapter, "idefics3": Idefics3Adapter, "llava-onevision": LlavaOnevisionAdapter,
            "smolvlm": SmolVLMAdapter}
QUESTION = "<image>\nWhat colour is the square?"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def adapter(request, tmp_path_factory):
    cls = FAMILIES[request.param]
    return cls.from_config(cls.config_class(**cls.example_config(tmp_path_factory.getbasetemp())), seed=0)


def _image(adapter, colour=(200, 30, 30), size=None):
    height, width = adapter.options["size"]
    image = Image.new("RGB", size or (width, height), (250, 250, 250))
    image.paste(Image.new("RGB", (width // 2, height // 2), colour), (width // 4, height // 4))
    return image


def _processor_images(adapter, images):
    return [images] if adapter.family.model_type in ("idefics3", "smolvlm") else images  # images per sample


@pytest.fixture(scope="module")
def saved(adapter, tmp_path_factory):
    folder = tmp_path_factory.mktemp(adapter.family.name) / "saved"
    adapter.save(folder)
    return folder


def _full_processor(adapter, saved):
    """The family's own transformers processor read from the saved folder (skipped where it needs torchvision)."""
    from transformers import AutoProcessor

    if adapter.family.processor_path == "composed":
        pytest.skip(f"{adapter.family.name}'s transformers processor needs torchvision (its video processor); "
                    "the adapter composes the PIL image processor and the tokenizer")
    return AutoProcessor.from_pretrained(saved)


def test_saved_folder_tokenizer_applies_its_chat_template(adapter, saved):
    from transformers import AutoTokenizer

    turns = [Turn("user", QUESTION), Turn("assistant", "red"), Turn("user", "Sure?"), Turn("assistant", "yes")]
    messages = [{"role": t.role, "content": t.content} for t in turns]
    tokenizer = AutoTokenizer.from_pretrained(saved)
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == tokenizer.bos_token + "".join(s.text for s in adapter.template.segments(turns))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    encoded = adapter.encode_conversation(turns)["input_ids"]
    image_parts = set(adapter._expansion) | {adapter.image_token_id}
    assert [t for t in encoded if t not in image_parts] == [t for t in ids if t not in image_parts]
    prompt = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=False)
    assert prompt == tokenizer.bos_token + "".join(s.text for s in adapter.template.segments(turns[:1]))


def test_input_ids_equal_apply_chat_template_and_the_processor(adapter, saved):
    turns = [Turn("user", QUESTION), Turn("assistant", "red")]
    messages = [{"role": t.role, "content": t.content} for t in turns]
    processor = _full_processor(adapter, saved)
    image = _image(adapter)
    for conversation, ours in ((messages[:1], adapter.encode_prompt(turns[:1])),
                               (messages, adapter.encode_conversation(turns)["input_ids"])):
        text = processor.apply_chat_template(conversation, add_generation_prompt=len(conversation) == 1,
                                             tokenize=False)
        out = processor(text=[text], images=_processor_images(adapter, [image]), add_special_tokens=False,
                        return_tensors="pt")
        assert out["input_ids"][0].tolist() == ours


def test_pixel_values_and_placeholders_equal_the_family_processor(adapter, saved):
    image = _image(adapter)
    ours = adapter.load_images([image])
    ids = torch.tensor([adapter.encode_prompt(QUESTION)])
    if adapter.family.processor_path == "composed":  # the family's PIL image processor, read from the folder
        image_processor = type(adapter.processor.image_processor).from_pretrained(saved)
        out = image_processor(images=[image], return_tensors="pt")
        out["input_ids"] = ids
    else:
        processor = _full_processor(adapter, saved)
        text = processor.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                             tokenize=False)
        out = processor(text=[text], images=_processor_images(adapter, [image]), add_special_tokens=False,
                        return_tensors="pt")
        assert out["input_ids"].tolist() == ids.tolist()
    theirs = out["pixel_values"]
    if theirs.dim() == 5 and ours.dim() == 4:  # Idefics3 / SmolVLM: [samples, images, ...], one image here
        theirs = theirs[:, 0]
    assert torch.equal(ours, theirs)
    if "image_sizes" in out:  # LLaVA-NeXT / OneVision: the grid the adapter assumes
        assert out["image_sizes"].tolist() == [adapter.options["size"]]
    n_placeholders = int((ids == adapter.image_token_id).sum())
    assert n_placeholders == adapter.num_image_tokens == adapter.encode_images(ours).shape[1]
    with torch.inference_mode():  # the model (which checks the count) takes the processor's inputs and ours alike
        theirs_logits = adapter.model(**{k: v for k, v in out.items() if k != "batch_num_images"}).logits
        ours_logits = adapter.model(input_ids=ids, pixel_values=ours).logits
    torch.testing.assert_close(ours_logits, theirs_logits, rtol=0, atol=1e-6)
    # another image size is resized to the model's one resolution first: the same token count
    other = adapter.load_images([_image(adapter, size=(23, 41))])
    assert other.shape == ours.shape and adapter.encode_images(other).shape == adapter.encode_images(ours).shape


def test_labels_are_exactly_the_answers(adapter):
    turns = [Turn("user", QUESTION), Turn("assistant", "red"), Turn("user", "And the background?"),
             Turn("assistant", "white")]
    encoded = adapter.encode_conversation(turns)
    learned = [t for t, label in zip(encoded["input_ids"], encoded["labels"]) if label != -100]
    assert [label for label in encoded["labels"] if label != -100] == learned
    stop = adapter.template.stop
    answers = [s.text for s in adapter.template.segments(turns) if s.learned]
    assert [a.strip() for a in answers] == [f"red{stop}", f"white{stop}"]
    assert adapter.tokenizer.decode(learned) == "".join(answers)
    prompt = adapter.encode_prompt(turns[:3])
    assert encoded["input_ids"][:len(prompt)] == prompt
    assert prompt.count(adapter.image_token_id) == adapter.num_image_tokens


def test_multi_image_conversation(adapter):
    turns = [Turn("user", "<image>\n<image>\nAre these the same colour?"), Turn("assistant", "no")]
    encoded = adapter.encode_conversation(turns)
    pixel_values = adapter.load_images([_image(adapter), _image(adapter, (30, 30, 200))])
    ids = torch.tensor([encoded["input_ids"]])
    with torch.inference_mode():
        plain = adapter.model(input_ids=ids, pixel_values=pixel_values).logits
        shared = adapter.model(inputs_embeds=adapter.embed_inputs(ids, adapter.encode_images(pixel_values))).logits
    torch.testing.assert_close(plain, shared, rtol=0, atol=1e-5)


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
    other = next(c for c in FAMILIES.values() if c is not cls)
    with pytest.raises(InputFileError, match=f"model name {adapter.family.name}"):
        other.load(folder)


def test_a_hub_id_gets_the_download_hint(adapter, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cls = type(adapter)
    with pytest.raises(ValidationError) as error:
        cls.config_class(path="llava-hf/llava-v1.6-vicuna-7b-hf")
    message = str(error.value)
    assert "hf download llava-hf/llava-v1.6-vicuna-7b-hf --local-dir" in message
    with pytest.raises(MissingFileError, match="hf download HuggingFaceTB/SmolVLM-256M-Instruct"):
        cls.load("HuggingFaceTB/SmolVLM-256M-Instruct")


# -- the engine and DPO's log-probs on a briefly trained model --------------------------------


@pytest.fixture(scope="module")
def trained(adapter):
    """The tiny model after a few plain-torch steps on two coloured squares (answers then differ)."""
    records = [(colour, name) for colour, name in (((200, 30, 30), "red"), ((30, 30, 200), "blue"))]
    images = {name: _image(adapter, colour) for colour, name in records}
    encoded = [adapter.encode_conversation([Turn("user", QUESTION), Turn("assistant", name)]) for _, name in records]
    from mllm_align import pad_encoded

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


def test_batched_answers_equal_one_at_a_time(trained, tmp_path):
    from mllm.generation.engine import AnswerEngine

    adapter, images = trained
    items = _items(tmp_path, images)
    single = AnswerEngine(adapter, batch_size=1, max_new_tokens=4).answer(items)
    batched = AnswerEngine(adapter, batch_size=4, max_new_tokens=4).answer(items)
    uncached = AnswerEngine(adapter, batch_size=3, max_new_tokens=4, kv_cache_bytes=0).answer(items)
    assert single == batched == uncached
    assert len({answer for answer in single.values() if answer}) >= 2, single  # real, differing answers
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
        scores = engine.choices.scores_tree(jobs)
        rows = engine.choices.scores_rows(jobs)
    for item, tree_row, plain_row in zip(items, scores, rows):
        own = [_own_logprob(adapter, item, choice) for choice in item.choices]
        assert tree_row == pytest.approx(own, abs=1e-4)
        assert plain_row == pytest.approx(own, abs=1e-4)


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
