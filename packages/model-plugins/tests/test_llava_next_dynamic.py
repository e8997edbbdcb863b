"""LLaVA-NeXT / LLaVA-OneVision with ``dynamic_resolution: true``: any-resolution per image.

Two images of different sizes and aspect ratios pick different grids from the model's
``image_grid_pinpoints`` (LLaVA-NeXT: one is unpadded by rows, the other by columns): pixel values and
``image_sizes`` equal the family's PIL image processor's; each ``<image>`` gets its own count,
which equals transformers' processor count and the features the model's forward produces for
that image; LLaVA-NeXT's ids equal ``apply_chat_template`` + ``LlavaNextProcessor`` read from
the saved folder (OneVision's processor needs torchvision; its count is checked against
``LlavaOnevisionProcessor``'s arithmetic and the model, anyres_max_9 downsampling included);
batched greedy answers equal one-at-a-time and a plain greedy loop; each choice's score equals
its own forward; SFT and DPO train real steps (DPO's per-row log-probs equal each row's own
forward); an eval stage runs end to end. OneVision cases are ``slow`` / ``families``."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mllm import Conversation, ImageTokenCounts, InputFileError, Preference, Turn  # noqa: E402
from mllm.records import EvalItem  # noqa: E402
from mllm_models.adapter import LlavaNextAdapter, LlavaOnevisionAdapter  # noqa: E402
from PIL import Image  # noqa: E402

FAMILIES = {"llava-next": LlavaNextAdapter, "llava-onevision": LlavaOnevisionAdapter}
# tiny: image_size 16, patch 4 (4 x 4 patches a tile). LLaVA-NeXT, (width, height): 36 x 28 takes the
# 2 x 2 grid (feature rows unpadded 8 -> 6: 16 + 6 * 9 = 70 tokens), 12 x 56 the 3 x 1 grid (columns
# unpadded 4 -> 2: 16 + 12 * 3 = 52 tokens; 4 tiles, zero-padded to the other's 5 in a batch)
SIZES = ((36, 28), (12, 56))
DYNAMIC = {"dynamic_resolution": True, "patch_size": 4}
QUESTION = "<image>\nWhat colour is the square?"
PROMPTS = (QUESTION, "Look: <image>\nWhich colour?")
CHOICES = ("red", "blue", "red square")
SLOW = (pytest.mark.slow, pytest.mark.families)  # as test_matrix.py: OneVision with MLLM_FAMILIES=1

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread


def _config(cls, folder, **extra):
    return cls.config_class(**{**cls.example_config(folder), **DYNAMIC, **extra})


@pytest.fixture(scope="module", params=["llava-next", pytest.param("llava-onevision", marks=SLOW)])
def adapter(request, tmp_path_factory):
    cls = FAMILIES[request.param]
    return cls.from_config(_config(cls, tmp_path_factory.getbasetemp()), seed=0)


@pytest.fixture(scope="module")
def saved(adapter, tmp_path_factory):
    folder = tmp_path_factory.mktemp(adapter.family.name) / "saved"
    adapter.save(folder)
    return folder


def _image(size, colour=(200, 30, 30)):
    width, height = size
    image = Image.new("RGB", size, (250, 250, 250))
    image.paste(Image.new("RGB", (width // 2, height // 2), colour), (width // 4, height // 4))
    return image


def _images():
    return [_image(size, colour) for size, colour in zip(SIZES, ((200, 30, 30), (30, 30, 200)), strict=True)]


def _runs(ids, image_id):
    """Lengths of the runs of image tokens in ``ids``, in order."""
    counts, current = [], 0
    for token in list(ids) + [-1]:
        if token == image_id:
            current += 1
        elif current:
            counts.append(current)
            current = 0
    return counts


def _processor_counts(adapter, sizes):
    """The placeholder count transformers' processor gives each ``(height, width)`` image."""
    side = adapter._inner.config.vision_config.image_size
    if adapter.family.name == "llava-next":
        processor = adapter.processor  # the full LlavaNextProcessor (num_additional_image_tokens=1: CLS, dropped)
        return [processor._get_number_of_features(h, w, side, side) - 1 for h, w in sizes]
    # LlavaOnevisionProcessor cannot be built here (its video processor needs torchvision): its
    # count on a bare instance holding what the count reads
    from transformers import LlavaOnevisionProcessor

    processor = object.__new__(LlavaOnevisionProcessor)
    per_side = side // adapter._inner.config.vision_config.patch_size
    vars(processor).update(image_processor=adapter.processor.image_processor, num_image_tokens=per_side ** 2,
                           vision_aspect_ratio=adapter._inner.config.vision_aspect_ratio)
    return [processor._get_number_of_features(h, w, side, side) for h, w in sizes]


def test_off_by_default_and_the_config_dump_unchanged():
    for cls in FAMILIES.values():
        dumped = cls.config_class(init="tiny").model_dump(mode="json")
        assert "dynamic_resolution" not in dumped
        assert cls.config_class(init="tiny", dynamic_resolution=True).model_dump(mode="json")["dynamic_resolution"]
        with pytest.raises(ValueError, match="only applies with dynamic_resolution off"):
            cls.config_class(init="tiny", dynamic_resolution=True, grid=[1, 2])


def test_pixel_values_and_image_sizes_equal_the_family_image_processor(adapter, saved):
    images = _images()
    ours = adapter.image_inputs(images)
    image_processor = type(adapter.processor.image_processor).from_pretrained(saved)
    assert type(image_processor).__name__ in ("LlavaNextImageProcessorPil", "LlavaOnevisionImageProcessorPil")
    theirs = image_processor(images=images, return_tensors="pt")
    assert set(ours) == {"pixel_values", "image_sizes"}
    assert torch.equal(ours["image_sizes"], theirs["image_sizes"])
    assert ours["image_sizes"].tolist() == [[h, w] for w, h in SIZES]
    assert torch.equal(ours["pixel_values"], theirs["pixel_values"])
    assert torch.equal(adapter.load_images(images), theirs["pixel_values"])
    if adapter.family.name == "llava-next":  # different grids: 2 x 2 tiles (+ the base image), 3 x 1 padded to 5
        assert ours["pixel_values"].shape[:2] == (2, 5)
        assert int(ours["pixel_values"][1, 4].abs().sum()) == 0
    assert isinstance(adapter, ImageTokenCounts) and adapter.dynamic_resolution


def test_placeholders_equal_the_processor_count_and_the_models_features(adapter):
    images = _images()
    counts = adapter.image_token_counts(images)
    assert counts == _processor_counts(adapter, [(h, w) for w, h in SIZES])
    if adapter.family.name == "llava-next":
        assert counts == [70, 52]
    assert len(set(counts)) == 2
    inputs = adapter.image_inputs(images)
    with torch.inference_mode():
        features = adapter.encode_images(inputs["pixel_values"], inputs["image_sizes"])
        assert [f.shape[0] for f in features] == counts
        assert [f.shape[0] for f in adapter.encode_images(adapter.load_images(images))] == counts  # sizes tagged
        out = adapter._inner.model.get_image_features(**inputs, return_dict=True)  # the model's own, per image
        assert [f.shape[0] for f in out.pooler_output] == counts
    turns = [Turn("user", "<image>\n<image>\nWhich is wider?"), Turn("assistant", "the first")]
    encoded = adapter.encode_conversation(turns, images=images)
    assert _runs(encoded["input_ids"], adapter.image_token_id) == counts
    prompt = adapter.encode_prompt(turns[:1], images=images)
    assert encoded["input_ids"][:len(prompt)] == prompt
    assert all(label == -100 for token, label in zip(encoded["input_ids"], encoded["labels"])
               if token == adapter.image_token_id)


def test_large_image_downsampled_by_anyres_max_9(adapter):
    """OneVision: a 64 x 64 image takes the 4 x 4 grid (16 tiles), whose unpadded features the
    model downsamples to about 9 tiles' area; LLaVA-NeXT keeps its largest grid's features."""
    image = _image((64, 64))
    [count] = adapter.image_token_counts([image])
    assert [count] == _processor_counts(adapter, [(64, 64)])
    inputs = adapter.image_inputs([image])
    with torch.inference_mode():
        [feature] = adapter.encode_images(inputs["pixel_values"], inputs["image_sizes"])
    assert feature.shape[0] == count
    if adapter.family.name == "llava-onevision":
        assert inputs["pixel_values"].shape[1] == 17 and count == 16 + 12 * 13  # 16 x 16 -> 12 x 12, newlines


def test_input_ids_and_logits_equal_apply_chat_template_and_the_processor(adapter, saved):
    images = _images()
    turns = [Turn("user", "<image>\n<image>\nWhich is wider?"), Turn("assistant", "the first")]
    ours = adapter.encode_conversation(turns, images=images)["input_ids"]
    inputs = adapter.image_inputs(images)
    ids = torch.tensor([ours])
    if adapter.family.processor_path == "full":
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(saved)
        messages = [{"role": t.role, "content": t.content} for t in turns]
        for conversation, expected in ((messages[:1], adapter.encode_prompt(turns[:1], images=images)),
                                       (messages, ours)):
            text = processor.apply_chat_template(conversation, add_generation_prompt=len(conversation) == 1,
                                                 tokenize=False)
            out = processor(text=[text], images=images, add_special_tokens=False, return_tensors="pt")
            assert out["input_ids"][0].tolist() == expected
        theirs = {k: v for k, v in out.items() if k in ("input_ids", "pixel_values", "image_sizes")}
        assert torch.equal(theirs["pixel_values"], inputs["pixel_values"])
    else:  # composed: the image processor read from the folder, our ids
        image_processor = type(adapter.processor.image_processor).from_pretrained(saved)
        out = image_processor(images=images, return_tensors="pt")
        theirs = {"input_ids": ids, "pixel_values": out["pixel_values"], "image_sizes": out["image_sizes"]}
    with torch.inference_mode():
        reference = adapter.model(**theirs).logits  # the model checks placeholders == features itself
        torch.testing.assert_close(adapter.model(input_ids=ids, **inputs).logits, reference, rtol=0, atol=1e-5)
        tagged = adapter.model(input_ids=ids, pixel_values=adapter.load_images(images)).logits  # sizes from the tag
        torch.testing.assert_close(tagged, reference, rtol=0, atol=1e-5)
        features = adapter.encode_images(inputs["pixel_values"], inputs["image_sizes"])
        shared = adapter.model(inputs_embeds=adapter.embed_inputs(ids, features)).logits
        torch.testing.assert_close(shared, reference, rtol=0, atol=1e-5)
    with pytest.raises(InputFileError, match="image_sizes"):
        adapter.model(input_ids=ids, pixel_values=inputs["pixel_values"].clone())  # untagged, no sizes


def test_callers_without_images_fail_loudly(adapter):
    with pytest.raises(InputFileError, match="images="):
        adapter.encode_prompt("<image>\nWhat is it?")
    assert adapter.encode_prompt("no image here") == adapter.encode_prompt("no image here", images=[])
    assert not adapter.supports_packed_sequences and "image_sizes" in adapter.packed_sequences_problem


# -- the answer engine, training and a stage --------------------------------------------------------


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dynamic_images")
    out = {}
    for size in SIZES:
        for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            out[(size, name)] = str(folder / f"{name}_{size[0]}x{size[1]}.png")
            _image(size, colour).save(out[(size, name)])
    return out


def _items(paths, choices=CHOICES):
    return [EvalItem(id=f"{name}-{size[0]}x{size[1]}-{i}", prompt=prompt, images=(path,), answer=name,
                     choices=choices)
            for (size, name), path in paths.items() for i, prompt in enumerate(PROMPTS)]


def _greedy_loop(adapter, item, max_new_tokens):
    """Greedy decoding by hand: a full forward per token with the image's own inputs."""
    from mllm.generation.decoding import stop_ids

    ids = adapter.encode_prompt((Turn("user", item.prompt),), images=list(item.images))
    inputs = adapter.image_inputs(list(item.images))
    stops = stop_ids(adapter)
    new: list[int] = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            token = int(adapter.model(input_ids=torch.tensor([ids + new]), **inputs).logits[0, -1].argmax())
            if token in stops:
                break
            new.append(token)
    return adapter.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_batched_answers_equal_one_at_a_time_and_a_plain_greedy_loop(adapter, paths, caplog):
    from mllm.generation.engine import AnswerEngine

    items = _items(paths)
    with caplog.at_level("INFO", logger="mllm.generation.prefix_cache"):
        single_engine = AnswerEngine(adapter, batch_size=1, max_new_tokens=3)
    assert "per-image inputs" in caplog.text
    assert len({single_engine.planner.prompt_ids(item).count(adapter.image_token_id) for item in items}) == 2
    single = single_engine.answer(items)
    assert single == AnswerEngine(adapter, batch_size=4, max_new_tokens=3).answer(items)  # mixed sizes per batch
    for item in items[::3]:
        assert single[item.id] == _greedy_loop(adapter, item, 3), item.id


def _own_logprobs(adapter, turns, images):
    """Answer-token log-probs of one conversation's own forward."""
    encoded = adapter.encode_conversation(turns, images=list(images))
    labels = torch.tensor(encoded["labels"][1:])
    with torch.inference_mode():
        logits = adapter.model(input_ids=torch.tensor([encoded["input_ids"]]),
                               **adapter.image_inputs(list(images))).logits[0, :-1]
    keep = labels != -100
    return torch.log_softmax(logits.float(), -1)[keep].gather(-1, labels[keep][:, None])[:, 0].tolist()


def test_each_choice_score_equals_its_own_forward(adapter, paths):
    from mllm.generation.engine import AnswerEngine

    items = _items(paths)[::2]
    engine = AnswerEngine(adapter, batch_size=3)
    assert not engine.choices.tree_masks_supported()
    jobs = [engine.planner.choice_job(item.id, item) for item in items]
    with torch.inference_mode():
        full = engine.choices.scores_rows(jobs)
        first = engine.choices.scores_first_token(jobs)
    for item, row, first_row in zip(items, full, first, strict=True):
        own = [_own_logprobs(adapter, (Turn("user", item.prompt), Turn("assistant", c)), item.images)
               for c in item.choices]
        assert row == pytest.approx([sum(tokens) for tokens in own], abs=1e-4)
        assert first_row == pytest.approx([tokens[0] for tokens in own], abs=1e-4)
    assert AnswerEngine(adapter, batch_size=1).answer(items, mode="choice") == \
        AnswerEngine(adapter, batch_size=3).answer(items, mode="choice")


def test_sft_trains_on_two_differently_sized_images_in_one_batch(adapter, paths, train_steps):
    from mllm_align.sft import SFT

    records = [Conversation(id=name, images=(path,), turns=(Turn("user", QUESTION), Turn("assistant", name)))
               for (size, name), path in paths.items() if name == {SIZES[0]: "red", SIZES[1]: "blue"}[size]]
    model = adapter.model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    method = SFT()
    trained = method.setup(adapter)
    batch = method.collate(records)
    assert batch["image_sizes"].tolist() == [[h, w] for w, h in SIZES]
    counts = adapter.image_token_counts([r.images[0] for r in records])
    assert (batch["input_ids"] == adapter.image_token_id).sum(1).tolist() == counts
    losses = train_steps(method, trained, batch, steps=4, lr=5e-3)
    trained.eval()
    model.load_state_dict(state)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_dpo_log_probs_equal_each_rows_own_forward_and_it_trains(adapter, paths, caplog, train_steps):
    """Shared vision pass off (logged); the model's forward gets pixel_values and image_sizes
    repeated for chosen and rejected rows (the batch's image_forward_inputs)."""
    from mllm_align.dpo import DPO, DPOConfig

    chosen = {SIZES[0]: ("red", "blue"), SIZES[1]: ("blue", "red")}
    records = [Preference(id=str(i), images=(path,), prompt=(Turn("user", QUESTION),),
                          chosen=chosen[size][0], rejected=chosen[size][1])
               for i, ((size, name), path) in enumerate(paths.items()) if name == chosen[size][0]]
    method = DPO(DPOConfig(lora=True, precompute_reference=False))
    with caplog.at_level("WARNING", logger="mllm_align.dpo"):
        model = method.setup(adapter)
    assert "share_image_features off" in caplog.text
    try:
        batch = method.collate(records)
        assert batch["image_forward_inputs"]["image_sizes"].tolist() == [[h, w] for w, h in SIZES]
        with torch.no_grad():
            sums, _ = method.sequence_logps(model, batch)
            for row, record in enumerate(records):
                for column, answer in enumerate((record.chosen, record.rejected)):
                    own = _own_logprobs(adapter, (*record.prompt, Turn("assistant", answer)), record.images)
                    # rows: every chosen answer, then every rejected one
                    assert float(sums[column * len(records) + row]) == pytest.approx(sum(own), abs=1e-4)
        losses = train_steps(method, model, batch, steps=3, lr=1e-2)
        assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    finally:
        model.eval()
        adapter.model = model.unload() if hasattr(model, "unload") else model


def test_eval_and_generate_stages_run_end_to_end(adapter, paths, tmp_path, answer_stages):
    """``kind: eval`` (generation and choice benchmarks) and ``kind: generate`` (greedy and sampled,
    images of both sizes) through the pipeline runner."""
    records = [Conversation(id=f"q{i}", turns=(Turn("user", QUESTION), Turn("assistant", name)), images=(path,))
               for i, ((_, name), path) in enumerate(paths.items())]
    model = {"name": adapter.family.name, **type(adapter).example_config(tmp_path), **DYNAMIC}
    answer_stages(tmp_path, model, records, limit=4)
